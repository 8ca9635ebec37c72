package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
	"github.com/nhs-eps/epsbroker/tracker/web"
)

// sessionCookie is the tracker page's session cookie.
const sessionCookie = "eps_session"

// trackerHeader must accompany every request the tracker page makes with its
// cookie: a cross-site form, link or image cannot send it.
const trackerHeader = "X-EPS-Tracker"

// sameOrigin refuses cross-site requests to the session endpoints (login
// CSRF): they must be JSON, carry the page's header, and say (where the
// browser tells) that they come from the same origin.
func sameOrigin(r *http.Request) error {
	if r.Header.Get(trackerHeader) == "" {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "sign-in and sign-out are accepted only from the tracker page (header %s)", trackerHeader)
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "cross-site request refused")
	}
	return nil
}

// mayReadEntry is mayRead on what the index holds, so that prescriptions a
// caller may not see are dropped before anything is read for them (no
// timing difference between "hidden" and "absent").
func mayReadEntry(p auth.Principal, e tracker.Entry) bool {
	// The entry's record has no BundleID: it is an early cancellation's
	// exactly when its status is 9005, as mayRead decides from the record.
	return mayRead(p, &rx.Prescription{Prescriber: e.Prescriber,
		Issue: rx.Issue{Status: e.Status, Nominated: e.Nominated, Dispenser: e.Dispenser}})
}

// mayRead reports whether p may see a prescription: the tracker and admin
// roles may see any; a prescriber those its organisation sent (Prescriber:
// the organisation of the token that sent the order, never the
// organisation the message names as the requester's, which any sender can
// write); a dispenser those nominated to or held by its organisation.
//
// A record of early cancellations only (no order yet) is no prescriber's:
// were it shown to the organisation that cancelled first, that
// organisation would see it turn into a 403 the moment another
// organisation's order with the ID arrived (an oracle of another
// organisation's future prescriptions).
func mayRead(p auth.Principal, rec *rx.Prescription) bool {
	switch p.Role {
	case auth.RoleTracker, auth.RoleAdmin:
		return true
	case auth.RolePrescriber:
		return rec.Prescriber == p.ODS && !rec.IsEarlyCancellation()
	case auth.RoleDispenser:
		return rec.Nominated == p.ODS || rec.Dispenser == p.ODS
	}
	return false
}

// seesAll reports whether p may see every prescription (so a missing one
// may be answered 404 rather than 403).
func seesAll(p auth.Principal) bool { return p.Role == auth.RoleTracker || p.Role == auth.RoleAdmin }

// rawQueryParam reads a query parameter without turning '+' into a space:
// prescription IDs may end in '+', and clients do not always encode it.
func rawQueryParam(rawQuery, name string) (string, bool, error) {
	found, value := false, ""
	for _, part := range strings.Split(rawQuery, "&") {
		k, v, _ := strings.Cut(part, "=")
		if k != name {
			continue
		}
		if found {
			return "", true, errors.New("given twice")
		}
		var err error
		if value, err = url.PathUnescape(v); err != nil {
			return "", true, err
		}
		found = true
	}
	return strings.TrimSpace(value), found, nil
}

// The Clinical Prescription Tracker API's words for a request it cannot
// serve (packages/prescriptionSearch/src/validateRequest.ts and
// packages/clinicalView/src/validateRequest.ts of
// NHSDigital/electronic-prescription-service-clinical-prescription-tracker)
// and the details coding it answers them with (generateFhirErrorResponse:
// issue code value, system http-error-codes, BAD_REQUEST; the example
// errors/400_BadRequest.json).
const (
	searchBothParams      = "Invalid query string parameters; only prescriptionId or nhsNumber must be provided, not both."
	searchNoParam         = "Missing required query string parameter; either prescriptionId or nhsNumber must be included."
	detailNoID            = "Missing required path parameter: prescriptionId."
	systemHTTPErrorCodes  = "https://fhir.nhs.uk/CodeSystem/http-error-codes"
	displayHTTPBadRequest = "400: The Server was unable to process the request."
)

// trackerBadRequest is a 400 as the Clinical Prescription Tracker API
// answers it, with the parameters it is about as its expression.
func trackerBadRequest(diagnostics string, params ...string) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindInvalid, IssueType: "value", Code: "BAD_REQUEST", CodeSystem: systemHTTPErrorCodes,
		Display: displayHTTPBadRequest, Diagnostics: diagnostics, Expression: params}
}

// requestGroupWithoutID answers GET /FHIR/R4/RequestGroup/ (no prescription
// ID): 400, as the tracker API's clinical view answers a missing path
// parameter.
func (a *api) requestGroupWithoutID(w http.ResponseWriter, r *http.Request) {
	a.writeError(w, r, trackerBadRequest(detailNoID, "prescriptionId"))
}

func badParam(param, format string, args ...any) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindInvalid, IssueType: "value", Code: fhir.CodeInvalidValue,
		Expression: []string{param}, Diagnostics: sprintf(format, args...)}
}

// searchRequestGroups answers GET /FHIR/R4/RequestGroup?prescriptionId= or
// ?nhsNumber= (exactly one).
func (a *api) searchRequestGroups(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	id, hasID, errID := rawQueryParam(r.URL.RawQuery, "prescriptionId")
	nhs, hasNHS, errNHS := rawQueryParam(r.URL.RawQuery, "nhsNumber")
	switch {
	case hasID && hasNHS:
		a.writeError(w, r, trackerBadRequest(searchBothParams, "prescriptionId", "nhsNumber"))
		return
	case !hasID && !hasNHS:
		a.writeError(w, r, trackerBadRequest(searchNoParam, "prescriptionId", "nhsNumber"))
		return
	case errID != nil || errNHS != nil:
		a.writeError(w, r, badParam("prescriptionId", "the query string is not well formed: %v", errors.Join(errID, errNHS)))
		return
	case hasID && !fhir.ValidShortID(strings.ToUpper(id)):
		a.writeError(w, r, badParam("prescriptionId", "prescriptionId %q is not a valid prescription ID (format XXXXXX-XXXXXX-XXXXXC with a MOD 37-2 check character)", id))
		return
	case hasNHS && !fhir.ValidNHSNumber(nhs):
		a.writeError(w, r, badParam("nhsNumber", "nhsNumber %q is not a valid NHS number (10 digits, modulus 11 check)", nhs))
		return
	}
	if err := a.waitForIndex(r.Context()); err != nil {
		a.writeError(w, r, err)
		return
	}
	var entries []tracker.Entry
	audit := broker.AuditEntry{Time: a.Now().UTC(), Action: "search"}
	if hasID {
		id = strings.ToUpper(id)
		audit.PrescriptionID = id
		if e, ok := a.Tracker.Get(id); ok {
			entries = []tracker.Entry{e}
			audit.NHSNumber = e.NHSNumber // recorded even when the caller may not see it
		}
	} else {
		audit.NHSNumber = nhs
		entries = a.Tracker.ByNHSNumber(nhs)
	}
	visible := entries[:0]
	for _, e := range entries {
		if mayReadEntry(p, e) {
			visible = append(visible, e)
		}
	}
	var results []tracker.SearchResult
	patients := map[string]fhir.PatientDetails{}
	for _, e := range visible {
		cur, err := a.Store.Current(r.Context(), e.ID)
		if errors.Is(err, broker.ErrNotFound) {
			continue
		}
		if err != nil {
			a.writeError(w, r, unavailable("read prescription", err))
			return
		}
		if !mayRead(p, cur.Record) {
			continue
		}
		pd, ok := patients[cur.Record.NHSNumber]
		if !ok {
			d, err := a.orderDetails(r.Context(), cur.Record)
			if err != nil {
				a.writeError(w, r, unavailable("read prescription", err))
				return
			}
			if d != nil {
				pd = d.Patient
			} else {
				pd = fhir.PatientDetails{NHSNumber: cur.Record.NHSNumber}
			}
			patients[cur.Record.NHSNumber] = pd
		}
		results = append(results, tracker.SearchResult{Record: cur.Record, Patient: pd})
	}
	audit.Results, audit.Outcome = len(results), http.StatusOK
	if err := a.Store.Audit(r.Context(), p, audit); err != nil {
		a.writeError(w, r, unavailable("audit", err))
		return
	}
	writeFHIR(w, http.StatusOK, tracker.SearchBundle(results))
}

// issueNumberParam reads the optional query parameter issueNumber of GET
// RequestGroup/{id}: 0 when it is absent, otherwise a positive integer (an
// error in words when it is not one).
func issueNumberParam(rawQuery string) (int, error) {
	v, found, err := rawQueryParam(rawQuery, "issueNumber")
	switch {
	case !found:
		return 0, nil
	case err != nil:
		return 0, badParam("issueNumber", "issueNumber: the query string is not well formed: %v", err)
	}
	digits := v != "" && strings.Trim(v, "0123456789") == ""
	n, convErr := strconv.Atoi(v)
	switch {
	case digits && convErr != nil:
		// More digits than an int holds: a positive integer, of an issue
		// that no prescription has (at most 99).
		return maxIssueNumber, nil
	case !digits || n < 1:
		return 0, badParam("issueNumber", "issueNumber %q is not a positive whole number: give the issue of a repeat dispensing prescription to show, from 1", v)
	}
	return min(n, maxIssueNumber), nil
}

// maxIssueNumber stands for an issue number beyond any prescription's
// issues (an eRD prescription has at most 99).
const maxIssueNumber = 1 << 30

// getRequestGroup answers GET /FHIR/R4/RequestGroup/{id}[?issueNumber=n]:
// the prescription's detail, of issue n of a repeat dispensing prescription
// when given (a prescription that is not repeat dispensing has issue 1
// only), else of its current issue. A caller who may not see it is answered
// 403 whether or not it exists, so the answer tells nothing; an issue the
// prescription does not have is 404, saying how many it has. Other query
// parameters are ignored.
func (a *api) getRequestGroup(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	id := strings.ToUpper(strings.TrimSpace(r.PathValue("id")))
	if !fhir.ValidShortID(id) {
		a.writeError(w, r, badParam("id", "%q is not a valid prescription ID (format XXXXXX-XXXXXX-XXXXXC with a MOD 37-2 check character)", id))
		return
	}
	issue, err := issueNumberParam(r.URL.RawQuery)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	audit := broker.AuditEntry{Time: a.Now().UTC(), Action: "detail", PrescriptionID: id, Issue: min(issue, 100)}
	forbidden := fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "your organisation has no access to prescription %s (or it does not exist)", id)
	cur, err := a.Store.Current(r.Context(), id)
	switch {
	case errors.Is(err, broker.ErrNotFound):
		audit.Outcome = http.StatusNotFound
		if !seesAll(p) {
			audit.Outcome = http.StatusForbidden
		}
		if err := a.Store.Audit(r.Context(), p, audit); err != nil {
			a.writeError(w, r, unavailable("audit", err))
			return
		}
		if !seesAll(p) {
			a.writeError(w, r, forbidden)
			return
		}
		a.writeError(w, r, fhir.Errorf(fhir.KindNotFound, fhir.CodeResourceNotFound, "prescription %s not found", id))
		return
	case err != nil:
		a.writeError(w, r, unavailable("read prescription", err))
		return
	}
	audit.NHSNumber = cur.Record.NHSNumber
	if !mayRead(p, cur.Record) {
		audit.Outcome = http.StatusForbidden
		if err := a.Store.Audit(r.Context(), p, audit); err != nil {
			a.writeError(w, r, unavailable("audit", err))
			return
		}
		a.writeError(w, r, forbidden)
		return
	}
	rec, ok := cur.Record.AtIssue(issue)
	if !ok {
		audit.Outcome = http.StatusNotFound
		if err := a.Store.Audit(r.Context(), p, audit); err != nil {
			a.writeError(w, r, unavailable("audit", err))
			return
		}
		a.writeError(w, r, noSuchIssue(cur.Record, issue))
		return
	}
	d, err := a.orderDetails(r.Context(), cur.Record)
	if err != nil {
		a.writeError(w, r, unavailable("read prescription", err))
		return
	}
	audit.Results, audit.Outcome = 1, http.StatusOK
	if err := a.Store.Audit(r.Context(), p, audit); err != nil {
		a.writeError(w, r, unavailable("audit", err))
		return
	}
	writeFHIR(w, http.StatusOK, tracker.DetailBundle(rec, d))
}

// noSuchIssue is the 404 of an issue number the prescription does not have.
func noSuchIssue(rec *rx.Prescription, n int) *fhir.Error {
	issues := "1 issue (it is not repeat dispensing)"
	if rec.RepeatDispensing() {
		issues = fmt.Sprintf("%d issues", rec.IssueCount())
		if rec.IssueCount() == 1 {
			issues = "1 issue"
		}
	}
	asked := strconv.Itoa(n)
	if n >= maxIssueNumber {
		asked = "beyond 99"
	}
	return &fhir.Error{Kind: fhir.KindNotFound, IssueType: "not-found", Code: fhir.CodeResourceNotFound,
		Display: "Resource not found", Expression: []string{"issueNumber"},
		Diagnostics: fmt.Sprintf("prescription %s has %s; there is no issue %s (issueNumber)", rec.ID, issues, asked)}
}

// orderDetails decodes what the tracker shows from the original order; a
// kept cancellation whose order has not arrived has none (nil).
func (a *api) orderDetails(ctx context.Context, rec *rx.Prescription) (*fhir.OrderDetails, error) {
	if rec.IsEarlyCancellation() {
		return nil, nil
	}
	ev, err := a.Store.Event(ctx, rec.OrderSeq)
	if err != nil {
		return nil, err
	}
	return fhir.DecodeOrderDetails(ev.Body)
}

// waitForIndex waits (up to 2 s) until the index has applied everything in
// the log when the broker started and everything this broker has written
// since, so that a search sees what was just accepted. An index still
// rebuilding at start answers 503 rather than an incomplete result.
func (a *api) waitForIndex(ctx context.Context) error {
	target := a.TrackerMustReach()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := a.Tracker.WaitApplied(wctx, target); err != nil {
		return &fhir.Error{Kind: fhir.KindUnavailable, Op: "tracker search", Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("the tracker index is catching up with the event log (%d of %d events applied); retry shortly", a.Tracker.Applied(), target),
			Err:         err}
	}
	return nil
}

func unavailable(op string, err error) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: op, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the tracker could not read the store; retry", Err: err}
}

// auditList answers GET /api/v1/audit?user=&nhsNumber=&limit= for admins:
// who looked at what, newest first.
func (a *api) auditList(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Role != auth.RoleAdmin {
		a.writeError(w, r, fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only the admin role may read the audit trail"))
		return
	}
	user, _, errU := rawQueryParam(r.URL.RawQuery, "user")
	nhs, _, errN := rawQueryParam(r.URL.RawQuery, "nhsNumber")
	if err := errors.Join(errU, errN); err != nil {
		a.writeError(w, r, badParam("user", "the query string is not well formed: %v", err))
		return
	}
	q := broker.AuditQuery{User: user, NHSNumber: nhs, Limit: 100}
	if q.NHSNumber != "" && !fhir.ValidNHSNumber(q.NHSNumber) {
		a.writeError(w, r, badParam("nhsNumber", "nhsNumber %q is not a valid NHS number", q.NHSNumber))
		return
	}
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			a.writeError(w, r, badParam("limit", "limit %q: want 1 to 10000", l))
			return
		}
		q.Limit = n
	}
	entries, err := a.Store.AuditEntries(r.Context(), q)
	if err != nil {
		a.writeError(w, r, unavailable("read audit", err))
		return
	}
	if entries == nil {
		entries = []broker.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries, "count": len(entries)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// trackerPage serves the tracker web page and its assets from the embedded
// files, with headers that keep it to itself. The assets are a few small
// files answered whole without a token: Range and If-Range are ignored, so
// no request, however many ranges it names, gets more than one copy of a
// file (a FileServer answered 58 KB of one-byte ranges with 916 KB of
// multipart parts, GO-2026-6609), and a directory is not listed.
func (a *api) trackerPage() http.Handler {
	files := web.FS()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if r.URL.Path == "/tracker" || r.URL.Path == "/tracker/" {
			b, err := fs.ReadFile(files, "index.html")
			if err != nil {
				a.writeError(w, r, err)
				return
			}
			h.Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write(b)
			return
		}
		name, ok := strings.CutPrefix(r.URL.Path, "/tracker/assets/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		b, err := fs.ReadFile(files, name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ct := mime.TypeByExtension(path.Ext(name))
		if ct == "" {
			ct = "application/octet-stream"
		}
		h.Set("Content-Type", ct)
		h.Set("Content-Length", strconv.Itoa(len(b)))
		h.Set("Accept-Ranges", "none")
		_, _ = w.Write(b)
	})
}

// signIn answers POST /tracker/session {"token": "..."}: the token is
// verified and exchanged for an HttpOnly, SameSite=Strict session cookie.
func (a *api) signIn(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		a.writeError(w, r, fhir.Errorf(fhir.KindUnsupportedMedia, fhir.CodeUnsupportedMedia, "send the token as application/json"))
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(bodyFrom(r.Context()), &req); err != nil || strings.TrimSpace(req.Token) == "" {
		a.writeError(w, r, &fhir.Error{Kind: fhir.KindInvalid, IssueType: "required", Code: fhir.CodeMissingValue,
			Diagnostics: `send {"token": "<bearer token>"}`})
		return
	}
	p, err := a.Verifier.Verify(strings.TrimSpace(req.Token))
	if err != nil {
		a.writeError(w, r, fhir.Errorf(fhir.KindUnauthorized, fhir.CodeUnauthorised, "invalid token: %s", strings.TrimPrefix(err.Error(), auth.ErrUnauthorized.Error()+": ")))
		return
	}
	if old, err := r.Cookie(sessionCookie); err == nil && old.Value != "" {
		_ = a.Store.EndSession(r.Context(), old.Value) // a new sign-in ends the old session
	}
	cookie, err := a.Store.NewSession(r.Context(), p, a.Now())
	if err != nil {
		a.writeError(w, r, unavailable("session", err))
		return
	}
	if o, ok := w.(*observedWriter); ok {
		o.principal = p
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: cookie, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: overTLS(r)})
	w.WriteHeader(http.StatusNoContent)
}

// sessionInfo answers GET /tracker/session: who is signed in.
func (a *api) sessionInfo(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	info := map[string]any{"user": p.Subject, "ods": p.ODS, "role": p.Role}
	if !p.Expires.IsZero() {
		info["expires"] = p.Expires.UTC().Format(time.RFC3339)
	}
	writeJSON(w, http.StatusOK, info)
}

// overTLS reports whether the browser reached the broker over HTTPS: directly,
// or through a TLS-terminating proxy that says so.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

// signOut answers DELETE /tracker/session.
func (a *api) signOut(w http.ResponseWriter, r *http.Request) {
	if err := sameOrigin(r); err != nil {
		a.writeError(w, r, err)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := a.Store.EndSession(r.Context(), c.Value); err != nil {
			a.writeError(w, r, unavailable("session", err))
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
