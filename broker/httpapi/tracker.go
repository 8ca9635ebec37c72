package httpapi

import (
	"encoding/json"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
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
	q := searchQuery{nhsNumber: nhs}
	if hasID {
		q = searchQuery{prescriptionID: strings.ToUpper(id)}
	}
	body, err := a.reads.search(r.Context(), p, q)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeFHIR(w, http.StatusOK, body)
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
	body, err := a.reads.detail(r.Context(), p, id, issue)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeFHIR(w, http.StatusOK, body)
}

// auditList answers GET /api/v1/audit?user=&nhsNumber=&limit= for admins:
// who looked at what, newest first.
func (a *api) auditList(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if err := mayListAudit(p); err != nil {
		a.writeError(w, r, err)
		return
	}
	user, _, errU := rawQueryParam(r.URL.RawQuery, "user")
	nhs, _, errN := rawQueryParam(r.URL.RawQuery, "nhsNumber")
	if err := errors.Join(errU, errN); err != nil {
		a.writeError(w, r, badParam("user", "the query string is not well formed: %v", err))
		return
	}
	q := service.AuditQuery{User: user, NHSNumber: nhs, Limit: 100}
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
	entries, err := a.reads.auditEntries(r.Context(), p, q)
	if err != nil {
		a.writeError(w, r, err)
		return
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
		_ = a.Sessions.EndSession(r.Context(), old.Value) // a new sign-in ends the old session
	}
	cookie, err := a.Sessions.NewSession(r.Context(), p, a.Now())
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
		if err := a.Sessions.EndSession(r.Context(), c.Value); err != nil {
			a.writeError(w, r, unavailable("session", err))
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}
