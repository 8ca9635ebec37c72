package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// BucketNominations is the nomination registry: a key-value bucket keyed by
// the pseudonym of the patient's NHS number (Pseudonyms.Of; the number
// itself is in the value) whose every revision is kept (its stream keeps all messages per
// key), so each change, with who made it, stays in the history.
const BucketNominations = "EPS_NOMINATIONS"

// openNominations creates the registry bucket and lifts its history limit:
// a nomination change is never overwritten.
func openNominations(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	// An existing bucket is only opened: creating or updating it would put
	// the 64-revision limit back, and the server would trim histories.
	if _, err := js.Stream(ctx, "KV_"+BucketNominations); err == nil {
		return keepEveryRevision(ctx, js)
	}
	_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketNominations,
		Description: "Nominated dispensers per NHS number (P1, P2, P3); every revision kept as the change history",
		History:     64,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
		return nil, fmt.Errorf("bucket %s: %w", BucketNominations, err)
	}
	return keepEveryRevision(ctx, js)
}

// keepEveryRevision lifts the registry stream's per-key limit (once) and
// opens the bucket.
func keepEveryRevision(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+BucketNominations)
	if err != nil {
		return nil, err
	}
	// Effectively unlimited (the key-value client refuses -1).
	if cfg := st.CachedInfo().Config; cfg.MaxMsgsPerSubject != math.MaxInt32 {
		cfg.MaxMsgsPerSubject = math.MaxInt32
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("bucket %s: keep every revision: %w", BucketNominations, err)
		}
	}
	return js.KeyValue(ctx, BucketNominations)
}

// Nominations returns a patient's nominations and the registry revision they
// are at (nil and 0 when the patient has none on record).
func (s *Store) Nominations(ctx context.Context, nhs string) (*nomination.Patient, uint64, error) {
	e, err := s.nominations.Get(ctx, s.pseudo.Of(nhs))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read nominations: %w", err)
	}
	var p nomination.Patient
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, 0, fmt.Errorf("nominations of revision %d: %w", e.Revision(), err)
	}
	return &p, e.Revision(), nil
}

// NominationHistory returns every change to a patient's nominations, oldest
// first.
func (s *Store) NominationHistory(ctx context.Context, nhs string) ([]nomination.Change, error) {
	entries, err := s.nominations.History(ctx, s.pseudo.Of(nhs))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return []nomination.Change{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read nomination history: %w", err)
	}
	out := make([]nomination.Change, 0, len(entries))
	for _, e := range entries {
		var p nomination.Patient
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return nil, fmt.Errorf("nominations of revision %d: %w", e.Revision(), err)
		}
		if p.Change != nil {
			out = append(out, *p.Change)
		}
	}
	return out, nil
}

// putNominations writes a patient's nominations if the registry is still at
// rev (0: the patient has none on record); service.ErrConflict otherwise.
func (s *Store) putNominations(ctx context.Context, p *nomination.Patient, rev uint64) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = s.nominations.Create(ctx, s.pseudo.Of(p.NHSNumber), b)
	} else {
		_, err = s.nominations.Update(ctx, s.pseudo.Of(p.NHSNumber), b, rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), isWrongLastSequence(err):
		return service.ErrConflict
	case err != nil:
		return fmt.Errorf("write nominations: %w", err)
	}
	return nil
}

// Registry changes patients' nominations: admins, and prescribers and
// dispensers on the patient's behalf (recorded as such).
type Registry struct {
	store *Store
	now   func() time.Time
}

// NewRegistry returns the nomination registry service.
func NewRegistry(store *Store, now func() time.Time) *Registry {
	return &Registry{store: store, now: now}
}

func changer(p auth.Principal) (nomination.By, error) {
	switch p.Role {
	case auth.RoleAdmin:
		return nomination.By{User: p.Subject, Org: p.ODS, Role: string(p.Role)}, nil
	case auth.RolePrescriber, auth.RoleDispenser:
		return nomination.By{User: p.Subject, Org: p.ODS, Role: string(p.Role), OnBehalfOf: true}, nil
	}
	return nomination.By{}, fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "role %q may not change nominations", p.Role)
}

// Set nominates ods as the patient's dispenser of type t (or changes it).
func (r *Registry) Set(ctx context.Context, p auth.Principal, nhs string, t nomination.Type, ods string) (*nomination.Patient, error) {
	if err := nomination.Check(nhs, t, ods, true); err != nil {
		return nil, err
	}
	return r.change(ctx, p, nhs, func(cur *nomination.Patient, by nomination.By) *nomination.Patient {
		return nomination.Set(cur, nhs, t, ods, by, r.now())
	})
}

// Remove ends the patient's nomination of type t.
func (r *Registry) Remove(ctx context.Context, p auth.Principal, nhs string, t nomination.Type) (*nomination.Patient, error) {
	if err := nomination.Check(nhs, t, "", false); err != nil {
		return nil, err
	}
	return r.change(ctx, p, nhs, func(cur *nomination.Patient, by nomination.By) *nomination.Patient {
		return nomination.Remove(cur, nhs, t, by, r.now())
	})
}

// change applies f with compare-and-set on the patient's registry revision
// (service.CompareAndSet: a decided change is stored even when the client
// goes meanwhile).
func (r *Registry) change(ctx context.Context, p auth.Principal, nhs string, f func(*nomination.Patient, nomination.By) *nomination.Patient) (*nomination.Patient, error) {
	by, err := changer(p)
	if err != nil {
		return nil, err
	}
	var cur *nomination.Patient
	next, err := service.CompareAndSet(ctx, "nominations",
		func(ctx context.Context) (*nomination.Patient, uint64, error) {
			c, rev, err := r.store.Nominations(ctx, nhs)
			if err != nil {
				return nil, 0, service.StoreUnavailable("read nominations", err)
			}
			cur = c
			return c, rev, nil
		},
		func(cur *nomination.Patient) (*nomination.Patient, bool, error) {
			next := f(cur, by)
			return next, next != nil, nil
		},
		r.store.writeNominations)
	switch {
	case errors.Is(err, service.ErrBusy):
		return nil, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable, Diagnostics: "the patient's nominations are changing too often; retry"}
	case err != nil:
		return nil, err
	case next == nil: // nothing to change
		if cur == nil {
			cur = &nomination.Patient{NHSNumber: nhs, Nominations: map[nomination.Type]nomination.Nomination{}}
		}
		return cur, nil
	}
	if next.Change != nil && next.Change.IsSelfNomination() {
		r.store.metrics.SelfNominations.WithLabelValues(string(next.Change.Type)).Inc()
	}
	return next, nil
}

// writeNominations is the write of a nomination compare-and-set:
// putNominations, its errors other than service.ErrConflict answered as
// the store's (503).
func (s *Store) writeNominations(ctx context.Context, p *nomination.Patient, rev uint64) (*nomination.Patient, error) {
	switch err := s.putNominations(ctx, p, rev); {
	case errors.Is(err, service.ErrConflict):
		return nil, err
	case err != nil:
		return nil, service.StoreUnavailable("write nominations", err)
	}
	return p, nil
}
