package service

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Scheduler applies the time-driven transitions (post-dated prescriptions
// becoming ready, expiry, completion of part-dispensed prescriptions,
// no-claim) when they fall due by its clock. Every broker instance may run
// one: each transition is a compare-and-set write decided from the current
// state, so it happens once whichever instance gets there first, and
// prescriptions that fell due while no broker ran are caught up on the next
// pass.
type Scheduler struct {
	life  *Lifecycle
	noms  Nominations
	index DueIndex
	log   *zap.Logger
	now   func() time.Time
	stop  chan struct{}
	done  sync.WaitGroup
}

// NewScheduler returns a scheduler over the tracker index (which says what
// may be due), writing through the lifecycle and reading the nomination
// registry (later repeat dispensing issues follow the patient's
// nomination); now is its clock.
func NewScheduler(life *Lifecycle, noms Nominations, index DueIndex, log *zap.Logger, now func() time.Time) *Scheduler {
	return &Scheduler{life: life, noms: noms, index: index, log: log, now: now, stop: make(chan struct{})}
}

// RunOnce applies every transition due now and returns how many it applied.
func (s *Scheduler) RunOnce(ctx context.Context) (int, error) {
	now := s.now()
	applied := 0
	var errs []error
	for _, id := range s.index.Due(now) {
		var event string
		_, err := s.life.update(ctx, id, "", "", scheduledBody(now), func(cur *rx.Prescription) (*rx.Prescription, error) {
			event = rx.Scheduled(cur, now)
			follow, err := s.nominationChange(ctx, cur)
			if err != nil {
				return nil, err
			}
			next := rx.ApplyScheduled(cur, now, follow)
			if next == nil {
				return nil, errSkip // applied already (elsewhere), or no longer due
			}
			return next, nil
		})
		switch {
		case errors.Is(err, errSkip), rx.IsNotFound(err):
		case err != nil:
			errs = append(errs, err)
		default:
			applied++
			s.log.Debug("scheduled transition applied", zap.String("event", event))
		}
	}
	return applied, errors.Join(errs...)
}

// nominationChange is the patient's latest change of the nomination of a
// repeat dispensing prescription's dispensing site type (nil for any other
// prescription, and for a non-nominated order): later issues follow the
// patient's nomination when it changes.
func (s *Scheduler) nominationChange(ctx context.Context, cur *rx.Prescription) (*rx.NominationChange, error) {
	if !cur.RepeatDispensing() {
		return nil, nil
	}
	t := nomination.Type(cur.SiteType)
	if !t.Valid() {
		return nil, nil // non-nominated (0004): never in a queue
	}
	changes, err := s.noms.NominationHistory(ctx, cur.NHSNumber)
	if err != nil {
		return nil, StoreUnavailable("read nominations", err)
	}
	for i := len(changes) - 1; i >= 0; i-- {
		if changes[i].Type == t {
			return &rx.NominationChange{ODS: changes[i].To, Time: changes[i].Time}, nil
		}
	}
	return nil, nil
}

// Start runs a pass every interval until Stop.
func (s *Scheduler) Start(interval time.Duration) {
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), interval)
				n, err := s.RunOnce(ctx)
				cancel()
				if err != nil {
					s.log.Warn("scheduler pass incomplete; the rest is retried next pass", zap.Int("applied", n), zap.Error(err))
				} else if n > 0 {
					s.log.Info("scheduler pass", zap.Int("applied", n))
				}
			case <-s.stop:
				return
			}
		}
	}()
}

// Stop ends the passes.
func (s *Scheduler) Stop() {
	close(s.stop)
	s.done.Wait()
}

// scheduledBody is the event log body of a scheduled transition: there is no
// message, so the log records that the scheduler applied it, and when by its
// clock (the event's type is in its Eps-Event header).
func scheduledBody(at time.Time) []byte {
	b, _ := json.Marshal(map[string]string{"appliedBy": "scheduler", "at": at.UTC().Format(time.RFC3339)})
	return b
}
