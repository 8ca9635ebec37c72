package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
)

// nominatedReleaseMax is how many prescriptions one nominated release hands
// over at most, as on the live service.
const nominatedReleaseMax = 25

// messageID names a lifecycle message in the event log: its X-Request-ID
// when sent, otherwise a new UUID.
func messageID(r *http.Request) string {
	if id := r.Header.Get("X-Request-ID"); id != "" {
		return id
	}
	return uuid.NewString()
}

// release answers POST /FHIR/R4/Task/$release: by prescription ID
// (group-identifier) or, without one, the oldest (up to 25) prescriptions in
// the owner's ready queue.
func (a *api) release(w http.ResponseWriter, r *http.Request) {
	body := bodyFrom(r.Context())
	req, err := fhir.DecodeReleaseRequest(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	p := principalFrom(r.Context())
	var released []service.Released
	if since := takenOver(r.Context()); !since.IsZero() {
		// A retry of a release that never answered: what it released, if
		// anything, is handed over again instead of other prescriptions.
		released, err = a.Releases.ReleasedUnder(r.Context(), p, req.Owner, messageID(r), since)
		if err != nil {
			noteUnresolved(r.Context()) // still not known: the next retry looks again
			a.writeError(w, r, err)
			return
		}
	}
	switch {
	case len(released) > 0:
	case req.PrescriptionID != "":
		one, err := a.Releases.ReleaseByID(r.Context(), p, req.Owner, req.PrescriptionID, messageID(r), body)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		released = []service.Released{*one}
	default:
		released, err = a.Releases.ReleaseNominated(r.Context(), p, req.Owner, messageID(r), body, nominatedReleaseMax)
		if err != nil {
			if errors.Is(err, service.ErrReleaseUnresolved) {
				noteUnresolved(r.Context())
			}
			a.writeError(w, r, err)
			return
		}
	}
	refs := make([]service.ReleasedRef, len(released))
	orders := make([]fhir.ReleasedOrder, len(released))
	for i, rel := range released {
		refs[i] = service.ReleasedRef{ID: rel.Record.ID, BundleID: rel.Record.BundleID}
		if rel.Record.RepeatDispensing() {
			refs[i].Issue, refs[i].Issues = rel.Record.IssueNumber(), rel.Record.IssueCount()
		}
		orders[i] = releasedOrder(refs[i], rel.Order)
	}
	// A replay of this X-Request-ID rebuilds the answer from refs.
	noteRelease(r.Context(), refs)
	writeFHIR(w, http.StatusOK, fhir.ReleaseResponse(orders))
}

// noteUnresolved tells the idempotency middleware (if the request has an
// X-Request-ID) that the release answered 503 without knowing what it
// released: its reservation is kept, marked, in the shared bucket, so that
// its retry on any instance takes it over at once and hands over what the
// request released (ReleasedUnder) rather than releasing others.
func noteUnresolved(ctx context.Context) {
	if n, ok := ctx.Value(replayNoteKey{}).(*replayNote); ok {
		n.unresolved = true
	}
}

// releasedOrder is one entry of a release answer.
func releasedOrder(ref service.ReleasedRef, order []byte) fhir.ReleasedOrder {
	return fhir.ReleasedOrder{BundleID: ref.BundleID, Raw: order, Issue: ref.Issue, Issues: ref.Issues}
}

// releaseAnswer writes again the answer of a release that handed over refs,
// each order's bytes read from the event log: the same answer, with nothing
// changed.
func (a *api) releaseAnswer(ctx context.Context, refs []service.ReleasedRef) ([]byte, error) {
	orders := make([]fhir.ReleasedOrder, len(refs))
	for i, ref := range refs {
		order, err := a.Releases.OrderOf(ctx, ref.ID)
		if err != nil {
			return nil, err
		}
		orders[i] = releasedOrder(ref, order)
	}
	return fhir.ReleaseResponse(orders), nil
}

// task answers POST /FHIR/R4/Task: a return (status rejected) or a withdraw
// (status in-progress, code abort).
func (a *api) task(w http.ResponseWriter, r *http.Request) {
	body := bodyFrom(r.Context())
	t, err := fhir.DecodeTaskRequest(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if t.ID == "" {
		t.ID = messageID(r)
	}
	if err := a.Dispensing.Task(r.Context(), principalFrom(r.Context()), t, body); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeFHIR(w, http.StatusOK, fhir.InformationalOutcome(a.Now()))
}

// claim answers POST /FHIR/R4/Claim.
func (a *api) claim(w http.ResponseWriter, r *http.Request) {
	body := bodyFrom(r.Context())
	c, err := fhir.DecodeClaim(body)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if c.ID == "" {
		c.ID = messageID(r)
	}
	if err := a.Dispensing.Claim(r.Context(), principalFrom(r.Context()), c, body); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeFHIR(w, http.StatusOK, fhir.InformationalOutcome(a.Now()))
}
