package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// trackerReads is the tracker's read path, the one place where the HTTP
// layer reads prescriptions and the audit trail for the tracker. Each
// look-up goes the same way: find (the index), check the caller's access,
// read (the event log), audit, answer. A look-up that gets as far as the
// store (its parameters are valid) is audited before it is answered,
// answered or refused for lack of access; one that cannot be audited is
// not answered (503, without the data). The handlers (tracker.go) read and
// check the request's parameters and write what this answers.
type trackerReads struct {
	index TrackerIndex
	// mustReach is the event sequence the index must have applied before a
	// search is answered from it.
	mustReach func() uint64
	records   Records
	audit     AuditTrail
	now       func() time.Time
}

// searchQuery is a tracker search: by prescription ID (upper case) or by
// NHS number, exactly one.
type searchQuery struct {
	prescriptionID, nhsNumber string
}

// search answers a tracker search: a searchset Bundle of the prescriptions
// the caller may see. Those it may not see are dropped before anything is
// read for them; the look-up is audited with the prescription ID or NHS
// number asked for and the number of prescriptions answered.
func (t *trackerReads) search(ctx context.Context, p auth.Principal, q searchQuery) ([]byte, error) {
	if err := t.waitForIndex(ctx); err != nil {
		return nil, err
	}
	var entries []tracker.Entry
	audit := service.AuditEntry{Time: t.now().UTC(), Action: "search"}
	if q.prescriptionID != "" {
		audit.PrescriptionID = q.prescriptionID
		if e, ok := t.index.Get(q.prescriptionID); ok {
			entries = []tracker.Entry{e}
			audit.NHSNumber = e.NHSNumber // recorded even when the caller may not see it
		}
	} else {
		audit.NHSNumber = q.nhsNumber
		entries = t.index.ByNHSNumber(q.nhsNumber)
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
		cur, err := t.records.Current(ctx, e.ID)
		if errors.Is(err, service.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, unavailable("read prescription", err)
		}
		if !mayRead(p, cur.Record) {
			continue
		}
		pd, ok := patients[cur.Record.NHSNumber]
		if !ok {
			d, err := t.orderDetails(ctx, cur)
			if err != nil {
				return nil, unavailable("read prescription", err)
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
	audit.Results = len(results)
	if err := t.answered(ctx, p, audit, http.StatusOK); err != nil {
		return nil, err
	}
	return tracker.SearchBundle(results), nil
}

// detail answers the detail of prescription id (issue n of a repeat
// dispensing prescription when n > 0, else its current issue). A caller
// who may not see it is refused 403 whether or not it exists; one who sees
// every prescription is told 404 when it does not; an issue it does not
// have is 404. Each of these is audited before it is answered.
func (t *trackerReads) detail(ctx context.Context, p auth.Principal, id string, n int) ([]byte, error) {
	audit := service.AuditEntry{Time: t.now().UTC(), Action: "detail", PrescriptionID: id, Issue: min(n, 100)}
	forbidden := fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "your organisation has no access to prescription %s (or it does not exist)", id)
	cur, err := t.records.Current(ctx, id)
	switch {
	case errors.Is(err, service.ErrNotFound):
		if !seesAll(p) {
			return nil, t.refused(ctx, p, audit, forbidden)
		}
		return nil, t.refused(ctx, p, audit,
			fhir.Errorf(fhir.KindNotFound, fhir.CodeResourceNotFound, "prescription %s not found", id))
	case err != nil:
		return nil, unavailable("read prescription", err)
	}
	audit.NHSNumber = cur.Record.NHSNumber
	if !mayRead(p, cur.Record) {
		return nil, t.refused(ctx, p, audit, forbidden)
	}
	rec, ok := cur.Record.AtIssue(n)
	if !ok {
		return nil, t.refused(ctx, p, audit, noSuchIssue(cur.Record, n))
	}
	d, err := t.orderDetails(ctx, cur)
	if err != nil {
		return nil, unavailable("read prescription", err)
	}
	audit.Results = 1
	if err := t.answered(ctx, p, audit, http.StatusOK); err != nil {
		return nil, err
	}
	return tracker.DetailBundle(rec, d), nil
}

// auditEntries lists the audit trail's entries matching q, newest first,
// for an admin.
func (t *trackerReads) auditEntries(ctx context.Context, p auth.Principal, q service.AuditQuery) ([]service.AuditEntry, error) {
	if err := mayListAudit(p); err != nil {
		return nil, err
	}
	entries, err := t.audit.AuditEntries(ctx, q)
	if err != nil {
		return nil, unavailable("read audit", err)
	}
	if entries == nil {
		entries = []service.AuditEntry{}
	}
	return entries, nil
}

// answered audits a look-up answered with status; an error (503) when the
// entry cannot be written, and then the look-up must not be answered.
func (t *trackerReads) answered(ctx context.Context, p auth.Principal, e service.AuditEntry, status int) error {
	e.Outcome = status
	if err := t.audit.Audit(ctx, p, e); err != nil {
		return unavailable("audit", err)
	}
	return nil
}

// refused audits a look-up refused with refusal, with the status it is
// answered with (statusFor its kind), and returns refusal, the error to
// answer; or the audit's failure (503) in its stead.
func (t *trackerReads) refused(ctx context.Context, p auth.Principal, e service.AuditEntry, refusal error) error {
	if err := t.answered(ctx, p, e, statusFor(fhir.ErrorKind(refusal))); err != nil {
		return err
	}
	return refusal
}

// orderDetails decodes what the tracker shows from the original order of
// the prescription whose current state is cur; a kept cancellation whose
// order has not arrived has none (nil). A prescription whose current state
// is its order's own message (nothing has happened to it since) has its
// order in hand: it is not read again.
func (t *trackerReads) orderDetails(ctx context.Context, cur *service.Event) (*fhir.OrderDetails, error) {
	rec := cur.Record
	if rec.IsEarlyCancellation() {
		return nil, nil
	}
	body := cur.Body
	if rec.OrderSeq != cur.Seq {
		ev, err := t.records.Event(ctx, rec.OrderSeq)
		if err != nil {
			return nil, err
		}
		body = ev.Body
	}
	return fhir.DecodeOrderDetails(body)
}

// waitForIndex waits (up to 2 s) until the index has applied everything in
// the log when the broker started and everything this broker has written
// since, so that a search sees what was just accepted. An index still
// rebuilding at start answers 503 rather than an incomplete result.
func (t *trackerReads) waitForIndex(ctx context.Context) error {
	target := t.mustReach()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := t.index.WaitApplied(wctx, target); err != nil {
		return &fhir.Error{Kind: fhir.KindUnavailable, Op: "tracker search", Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("the tracker index is catching up with the event log (%d of %d events applied); retry shortly", t.index.Applied(), target),
			Err:         err}
	}
	return nil
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

func unavailable(op string, err error) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: op, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the tracker could not read the store; retry", Err: err}
}

// The tracker's access rules.

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

// mayListAudit refuses (403) anyone but an admin the audit trail.
func mayListAudit(p auth.Principal) error {
	if p.Role != auth.RoleAdmin {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only the admin role may read the audit trail")
	}
	return nil
}
