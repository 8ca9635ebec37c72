package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// nominationsView is the answer of the nomination endpoints.
type nominationsView struct {
	NHSNumber   string                                    `json:"nhsNumber"`
	Nominations map[nomination.Type]nomination.Nomination `json:"nominations"`
	History     []nomination.Change                       `json:"history,omitempty"`
}

// The audit trail's actions of nomination reads. Every answer that shows a
// patient's nominations, or NHS numbers from them, is audited before it is
// sent, like a tracker look-up: an answer that cannot be audited is not
// sent (503).
const (
	auditNominations      = "nominations"       // GET of a patient's nominations (and, for admins, their history)
	auditNominationChange = "nomination-change" // the nominations answered to a PUT or DELETE
	auditNominationReport = "nomination-report" // a dispenser report: once per request, once per patient shown
	auditNominationSumm   = "nomination-summary"
)

// auditWorkers is how many audit entries of one report are written at once.
const auditWorkers = 16

// auditRead writes one audit entry of a nomination read answered 200.
// query, when not empty, is the report read (path and query string).
func (a *api) auditRead(ctx context.Context, p auth.Principal, action, nhs, query string, results int) error {
	if err := a.Audit.Audit(ctx, p, service.AuditEntry{Time: a.Now().UTC(), Action: action, NHSNumber: nhs,
		Query: query, Results: results, Outcome: http.StatusOK}); err != nil {
		return auditFailed(err)
	}
	return nil
}

// auditPatients writes one audit entry per patient shown (results: the rows
// about that patient), so that "who looked at this patient" finds the
// read; all of them before the answer is sent.
func (a *api) auditPatients(ctx context.Context, p auth.Principal, action, query string, rows map[string]int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i := 0; i < min(auditWorkers, len(rows)); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for nhs := range work {
				if err := a.auditRead(ctx, p, action, nhs, query, rows[nhs]); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
send:
	for nhs := range rows {
		select {
		case work <- nhs:
		case <-ctx.Done():
			break send
		}
	}
	close(work)
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = auditFailed(ctx.Err())
	}
	return first
}

func auditFailed(err error) error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: "audit", Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the read could not be recorded in the audit trail, so it is not answered; retry", Err: err}
}

// changedUnaudited is the 503 of a change made whose answer (the patient's
// nominations) could not be audited: a retry changes nothing more and
// answers once it is audited.
func changedUnaudited(err error) error {
	if e, ok := err.(*fhir.Error); ok {
		c := *e
		c.Diagnostics = "the change was made, but its answer (the patient's nominations) could not be recorded in the audit trail, so it is not sent; retry to read it"
		return &c
	}
	return err
}

// getNominations answers GET /api/v1/nominations/{nhsNumber}: the patient's
// nominations and every change to them, audited.
func (a *api) getNominations(w http.ResponseWriter, r *http.Request) {
	nhs := r.PathValue("nhsNumber")
	if err := nomination.Check(nhs, nomination.Pharmacy, "", false); err != nil {
		a.writeError(w, r, err)
		return
	}
	cur, _, err := a.Nominations.Nominations(r.Context(), nhs)
	if err != nil {
		a.writeError(w, r, unavailable("read nominations", err))
		return
	}
	hist, err := a.Nominations.NominationHistory(r.Context(), nhs)
	if err != nil {
		a.writeError(w, r, unavailable("read nominations", err))
		return
	}
	v := nominationsView{NHSNumber: nhs, Nominations: map[nomination.Type]nomination.Nomination{}}
	if principalFrom(r.Context()).Role == auth.RoleAdmin {
		v.History = hist // who changed what: for investigators (admin) only
	}
	if cur != nil {
		v.Nominations = cur.Nominations
	}
	if err := a.auditRead(r.Context(), principalFrom(r.Context()), auditNominations, nhs, "", len(v.Nominations)+len(v.History)); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// putNomination answers PUT /api/v1/nominations/{nhsNumber}/{type} with
// {"ods": "FA565"}: sets or changes the patient's nomination of that type.
func (a *api) putNomination(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ODS string `json:"ods"`
	}
	if err := json.Unmarshal(bodyFrom(r.Context()), &req); err != nil {
		a.writeError(w, r, fhir.Invalid(fhir.CodeInvalidValue, "structure", "ods", `send {"ods": "<ODS code>"}: %v`, err))
		return
	}
	p := principalFrom(r.Context())
	out, err := a.Registry.Set(r.Context(), p, r.PathValue("nhsNumber"), nomination.Type(strings.ToUpper(r.PathValue("type"))), strings.TrimSpace(req.ODS))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	// The answer shows all the patient's nominations: a read, audited (the
	// change itself is in the registry's history).
	if err := a.auditRead(r.Context(), p, auditNominationChange, r.PathValue("nhsNumber"), "", len(out.Nominations)); err != nil {
		a.writeError(w, r, changedUnaudited(err))
		return
	}
	writeJSON(w, http.StatusOK, nominationsView{NHSNumber: out.NHSNumber, Nominations: out.Nominations})
}

// deleteNomination answers DELETE /api/v1/nominations/{nhsNumber}/{type}.
func (a *api) deleteNomination(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	out, err := a.Registry.Remove(r.Context(), p, r.PathValue("nhsNumber"), nomination.Type(strings.ToUpper(r.PathValue("type"))))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if err := a.auditRead(r.Context(), p, auditNominationChange, r.PathValue("nhsNumber"), "", len(out.Nominations)); err != nil {
		a.writeError(w, r, changedUnaudited(err))
		return
	}
	writeJSON(w, http.StatusOK, nominationsView{NHSNumber: out.NHSNumber, Nominations: out.Nominations})
}
