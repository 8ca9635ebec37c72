package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker"
)

// Lifecycle moves prescriptions through the state machine of
// tracker/transitions.go. Every change is one compare-and-set write to the
// prescription's subject in the event log: two requests that decide from the
// same state can never both succeed; the loser re-reads and decides again.
type Lifecycle struct {
	store   *Store
	metrics *Metrics
	log     *zap.Logger
	now     func() time.Time
}

// NewLifecycle returns the lifecycle service.
func NewLifecycle(store *Store, m *Metrics, log *zap.Logger, now func() time.Time) *Lifecycle {
	return &Lifecycle{store: store, metrics: m, log: log, now: now}
}

// maxAttempts bounds the compare-and-set retries of one update.
const maxAttempts = 8

// errSkip tells update to leave a prescription as it is, without error.
var errSkip = errors.New("skip")

// notFound is RESOURCE_NOT_FOUND for a prescription ID.
func notFound(id string) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindNotFound, IssueType: "not-found", Code: fhir.CodeResourceNotFound,
		Display: "Resource not found", Diagnostics: fmt.Sprintf("prescription %s not found", id)}
}

func storeUnavailable(op string, err error) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: op, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the prescription store could not be reached; nothing was changed; retry", Err: err}
}

// update applies decide to the current state of prescription id and writes
// the result, with the message body, as one event: compare-and-set on the
// sequence it decided from, re-reading and deciding again when another
// writer got there first.
func (l *Lifecycle) update(ctx context.Context, id, event, messageID string, body []byte,
	decide func(cur *tracker.Prescription) (*tracker.Prescription, error)) (*tracker.Prescription, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		cur, err := l.store.Current(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil, notFound(id)
		}
		if err != nil {
			return nil, storeUnavailable("read prescription", err)
		}
		next, err := decide(cur.Record)
		if err != nil {
			return nil, err
		}
		_, err = l.store.Append(ctx, event, messageID, next, body, cur.Seq)
		switch {
		case errors.Is(err, ErrConflict):
			l.metrics.Projected.WithLabelValues("lifecycle", "cas_retry").Inc()
			continue
		case errors.Is(err, ErrTooLarge):
			return nil, fhir.Errorf(fhir.KindTooLarge, fhir.CodeTooLarge, "the message is too large to store")
		case err != nil:
			return nil, storeUnavailable("store "+event, err)
		}
		return next, nil
	}
	return nil, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
		Diagnostics: fmt.Sprintf("prescription %s is changing too often to update now; retry", id)}
}

// Released is a prescription handed to a dispenser, with its original order
// message, byte for byte.
type Released struct {
	Record *tracker.Prescription
	Order  []byte
}

func (l *Lifecycle) withOrder(ctx context.Context, rec *tracker.Prescription) (Released, error) {
	ev, err := l.store.Event(ctx, rec.OrderSeq)
	if err != nil {
		return Released{}, storeUnavailable("read order", err)
	}
	return Released{Record: rec, Order: ev.Body}, nil
}

// dispenserOnly refuses any role but dispenser, and a dispenser acting for
// another organisation than its own.
func dispenserOnly(p auth.Principal, owner string) error {
	if p.Role != auth.RoleDispenser {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "role %q may not do this; only a dispenser", p.Role)
	}
	if owner != "" && owner != p.ODS {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "a dispenser may act only for its own organisation (%s), not for %s", p.ODS, owner)
	}
	return nil
}

// ReleaseByID releases one prescription, found by its ID, to p's
// organisation: any dispenser may (the patient brought the token).
func (l *Lifecycle) ReleaseByID(ctx context.Context, p auth.Principal, owner, id, messageID string, body []byte) (*Released, error) {
	if err := dispenserOnly(p, owner); err != nil {
		return nil, err
	}
	actor := tracker.Actor{User: p.Subject, Org: p.ODS}
	rec, err := l.update(ctx, id, tracker.EventRelease, messageID, body, func(cur *tracker.Prescription) (*tracker.Prescription, error) {
		return tracker.Release(cur, p.ODS, actor, messageID, false, l.now())
	})
	if err != nil {
		return nil, err
	}
	r, err := l.withOrder(ctx, rec)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// ReleaseNominated releases up to max of the oldest prescriptions waiting in
// p's organisation's ready queue. Entries another release took first, or
// that are no longer ready, are passed over. None left: an empty list.
func (l *Lifecycle) ReleaseNominated(ctx context.Context, p auth.Principal, owner, messageID string, body []byte, max int) ([]Released, error) {
	if err := dispenserOnly(p, owner); err != nil {
		return nil, err
	}
	actor := tracker.Actor{User: p.Subject, Org: p.ODS}
	var out []Released
	for from := uint64(1); len(out) < max; {
		entries, err := l.store.ReadyQueueFrom(ctx, p.ODS, from, max)
		if err != nil {
			return nil, storeUnavailable("read ready queue", err)
		}
		if len(entries) == 0 {
			break
		}
		for _, e := range entries {
			from = e.QueueSeq + 1
			if len(out) == max {
				break
			}
			rec, err := l.update(ctx, e.PrescriptionID, tracker.EventNominatedRelease, messageID, body, func(cur *tracker.Prescription) (*tracker.Prescription, error) {
				if !cur.Ready() || cur.Nominated != p.ODS {
					return nil, errSkip // taken, returned or changed since it was queued
				}
				return tracker.Release(cur, p.ODS, actor, messageID, true, l.now())
			})
			if errors.Is(err, errSkip) || fhir.ErrorKind(err) == fhir.KindNotFound {
				continue
			}
			if err == nil {
				var r Released
				if r, err = l.withOrder(ctx, rec); err == nil {
					out = append(out, r)
					continue
				}
			}
			if len(out) > 0 {
				// Hand over what is already released: those prescriptions are
				// this dispenser's now, and a retry would not return them.
				l.log.Warn("nominated release stopped early", zap.Int("released", len(out)), zap.Error(err))
				return out, nil
			}
			return nil, err
		}
	}
	return out, nil
}
