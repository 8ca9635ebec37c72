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
// no-claim) when they fall due by its clock. Each transition is a
// compare-and-set write decided from the current state, so it happens once
// whichever instance gets there first, and prescriptions that fell due
// while no broker ran are caught up on the next pass.
//
// With a lease (UseLease) the scheduler is single-active: of the broker
// instances sharing the event log, only the one holding the lease runs the
// passes; the others try to take it every third of its TTL, and one does
// within about the TTL after its holder died, or at once after the holder
// released it on a graceful stop. A lease only saves the work of every
// instance scanning the same due prescriptions: two instances may both run
// passes for a moment (a holder paused past its TTL), and each transition
// still applies once. Without a lease every instance runs the passes.
type Scheduler struct {
	life  *Lifecycle
	noms  Nominations
	index DueIndex
	log   *zap.Logger
	now   func() time.Time
	stop  chan struct{}
	once  sync.Once // closes stop
	done  sync.WaitGroup

	metrics    SchedulerMetrics // nil: none
	lease      Lease
	leaseOpts  LeaseOptions
	leaseClock func() time.Time

	mu        sync.Mutex
	state     SchedulerState
	changed   chan struct{} // closed when state changes
	heldUntil time.Time     // by leaseClock: when the lease lapses unless renewed
}

// SchedulerState is what a scheduler's loop has done (for metrics and
// tests).
type SchedulerState struct {
	// Leading: this instance runs the passes (it holds the lease, or
	// runs without one).
	Leading bool
	// Checks are the lease's acquisitions and renewals tried.
	Checks uint64
	// Passes are the passes the loop ran; Applied, the transitions they
	// applied.
	Passes, Applied uint64
}

// LeaseOptions tune a scheduler's lease.
type LeaseOptions struct {
	// Check is how often the lease is acquired or renewed (0: a third of
	// its TTL).
	Check time.Duration
	// Clock measures the lease's time on this instance (nil: time.Now;
	// not the scheduler's clock of due dates).
	Clock func() time.Time
}

// NewScheduler returns a scheduler over the tracker index (which says what
// may be due), writing through the lifecycle and reading the nomination
// registry (later repeat dispensing issues follow the patient's
// nomination); now is its clock.
func NewScheduler(life *Lifecycle, noms Nominations, index DueIndex, log *zap.Logger, now func() time.Time) *Scheduler {
	return &Scheduler{life: life, noms: noms, index: index, log: log, now: now, stop: make(chan struct{}),
		changed: make(chan struct{}), state: SchedulerState{Leading: true}}
}

// UseLease makes the scheduler single-active on lease (before Start).
func (s *Scheduler) UseLease(lease Lease, o LeaseOptions) {
	s.lease, s.leaseOpts = lease, o
	s.leaseClock = o.Clock
	if s.leaseClock == nil {
		s.leaseClock = time.Now
	}
	if s.leaseOpts.Check <= 0 {
		s.leaseOpts.Check = max(lease.TTL()/3, time.Millisecond)
	}
	s.state.Leading = false
	if s.metrics != nil {
		s.metrics.SchedulerLeading(false)
	}
}

// CountWith has the scheduler count its passes and lease changes on m
// (before UseLease and Start).
func (s *Scheduler) CountWith(m SchedulerMetrics) {
	s.metrics = m
	m.SchedulerLeading(s.state.Leading)
}

// State is what the scheduler's loop has done, and a channel closed at its
// next change.
func (s *Scheduler) State() (SchedulerState, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.changed
}

// update changes the state under the lock and signals the change.
func (s *Scheduler) update(f func(*SchedulerState)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.state)
	close(s.changed)
	s.changed = make(chan struct{})
}

// leading reports whether this instance runs the passes now: without a
// lease always; with one, while it holds it by its own clock (a renewal
// that got no answer leaves it holding until the last one stored would
// lapse).
func (s *Scheduler) leading() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lease == nil {
		return true
	}
	return s.state.Leading && s.leaseClock().Before(s.heldUntil)
}

// RunOnce applies every transition due now and returns how many it applied
// (whether or not this instance holds the lease: a pass run by hand).
func (s *Scheduler) RunOnce(ctx context.Context) (int, error) {
	return s.pass(ctx, func() bool { return true })
}

// pass applies every transition due now while keepGoing.
func (s *Scheduler) pass(ctx context.Context, keepGoing func() bool) (int, error) {
	now := s.now()
	applied := 0
	var errs []error
	for _, id := range s.index.Due(now) {
		if !keepGoing() {
			break // the lease was lost: its new holder goes on
		}
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

// Start runs a pass every interval until Stop (with a lease: while this
// instance holds it; the first pass after an acquisition catches up what
// fell due while no one held it).
func (s *Scheduler) Start(interval time.Duration) {
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
			if !s.leading() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), interval)
			n, err := s.pass(ctx, s.leading)
			cancel()
			s.update(func(st *SchedulerState) { st.Passes++; st.Applied += uint64(n) })
			if m := s.metrics; m != nil {
				m.CountPass(n)
			}
			if err != nil {
				s.log.Warn("scheduler pass incomplete; the rest is retried next pass", zap.Int("applied", n), zap.Error(err))
			} else if n > 0 {
				s.log.Info("scheduler pass", zap.Int("applied", n))
			}
		}
	}()
	if s.lease != nil {
		s.done.Add(1)
		go s.keepLease()
	}
}

// keepLease acquires the lease, or renews it while held, every check
// until Stop.
func (s *Scheduler) keepLease() {
	defer s.done.Done()
	t := time.NewTicker(s.leaseOpts.Check)
	defer t.Stop()
	for {
		s.tendLease()
		select {
		case <-t.C:
		case <-s.stop:
			return
		}
	}
}

// tendLease makes one attempt to acquire or renew the lease and records
// the outcome.
func (s *Scheduler) tendLease() {
	s.mu.Lock()
	held := s.state.Leading
	s.mu.Unlock()
	ttl := s.lease.TTL()
	sent := s.leaseClock()
	ctx, cancel := context.WithTimeout(context.Background(), s.leaseOpts.Check)
	var ok bool
	var err error
	if held {
		ok, err = s.lease.Renew(ctx)
	} else {
		ok, err = s.lease.Acquire(ctx)
	}
	cancel()
	var change string
	s.update(func(st *SchedulerState) {
		st.Checks++
		switch {
		case err != nil:
			// Unknown: a holder holds on until its last stored renewal
			// would lapse (the store measures from when it stored it,
			// after this instance sent it).
			if st.Leading && !s.leaseClock().Before(s.heldUntil) {
				st.Leading, change = false, "lost"
			}
		case ok:
			s.heldUntil = sent.Add(ttl)
			if !st.Leading {
				st.Leading, change = true, "acquired"
			}
		case st.Leading:
			st.Leading, change = false, "lost"
		}
		s.leaseChanged(change) // before the change is seen
	})
	if err != nil && (held || change != "") {
		s.log.Warn("scheduler lease: renewal got no answer", zap.Error(err))
	} else if err != nil {
		s.log.Debug("scheduler lease: acquisition got no answer", zap.Error(err))
	}
}

// leaseChanged logs and counts a change of this instance's hold on the
// lease ("" for none), with s.mu held.
func (s *Scheduler) leaseChanged(change string) {
	if change == "" {
		return
	}
	switch change {
	case "acquired":
		s.log.Info("scheduler lease acquired: this instance runs the scheduler's passes", zap.Duration("ttl", s.lease.TTL()))
	case "lost":
		s.log.Warn("scheduler lease lost: another instance runs the scheduler's passes once it takes it", zap.Duration("ttl", s.lease.TTL()))
	case "released":
		s.log.Info("scheduler lease released")
	}
	if m := s.metrics; m != nil {
		m.CountLease(change)
		m.SchedulerLeading(change == "acquired")
	}
}

// Stop ends the passes; with a lease, it then releases it if held, so that
// another instance takes over at once. Stopping again does nothing.
func (s *Scheduler) Stop() {
	s.once.Do(func() { close(s.stop) })
	s.done.Wait()
	if s.lease == nil {
		return
	}
	s.mu.Lock()
	held := s.state.Leading
	s.mu.Unlock()
	if !held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(s.leaseOpts.Check, 2*time.Second))
	defer cancel()
	err := s.lease.Release(ctx)
	s.update(func(st *SchedulerState) {
		st.Leading = false
		if err == nil {
			s.leaseChanged("released")
			return
		}
		s.log.Warn("scheduler lease not released: another instance takes over when it lapses", zap.Duration("ttl", s.lease.TTL()), zap.Error(err))
		if m := s.metrics; m != nil {
			m.SchedulerLeading(false)
		}
	})
}

// scheduledBody is the event log body of a scheduled transition: there is no
// message, so the log records that the scheduler applied it, and when by its
// clock (the event's type is in its Eps-Event header).
func scheduledBody(at time.Time) []byte {
	b, _ := json.Marshal(map[string]string{"appliedBy": "scheduler", "at": at.UTC().Format(time.RFC3339)})
	return b
}
