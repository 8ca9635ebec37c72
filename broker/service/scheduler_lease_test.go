package service_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/memstore"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// leaseClock is the clock the leases age by in these tests (apart from
// the scheduler's clock of due dates, which moves by days).
type leaseClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *leaseClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *leaseClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// schedMetrics records what a scheduler counts.
type schedMetrics struct {
	mu              sync.Mutex
	leading         bool
	lease           map[string]int
	passes, applied int
}

func (m *schedMetrics) SchedulerLeading(on bool) { m.mu.Lock(); m.leading = on; m.mu.Unlock() }
func (m *schedMetrics) CountLease(e string)      { m.mu.Lock(); m.lease[e]++; m.mu.Unlock() }
func (m *schedMetrics) CountPass(n int)          { m.mu.Lock(); m.passes++; m.applied += n; m.mu.Unlock() }
func (m *schedMetrics) get() (bool, map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.lease {
		out[k] = v
	}
	return m.leading, out
}

// leased is a scheduler of one instance on the shared lease table.
type leased struct {
	*service.Scheduler
	m *schedMetrics
}

const leaseTTL = time.Minute

// leasedScheduler starts a scheduler named holder over e's store, single-
// active on the lease "scheduler" of leases (TTL a minute by clock),
// checking the lease and running passes every few milliseconds.
func leasedScheduler(t *testing.T, e *env, leases *memstore.Leases, clock *leaseClock, holder string) *leased {
	t.Helper()
	s := service.NewScheduler(e.life, e.st, e.st, zap.NewNop(), e.clock)
	m := &schedMetrics{lease: map[string]int{}}
	s.CountWith(m)
	s.UseLease(leases.Lease("scheduler", holder, leaseTTL), service.LeaseOptions{Check: 5 * time.Millisecond, Clock: clock.Now})
	s.Start(5 * time.Millisecond)
	var once sync.Once
	t.Cleanup(func() { once.Do(s.Stop) })
	return &leased{s, m}
}

// waitState waits until s's state satisfies cond (bounded).
func waitState(t *testing.T, s *service.Scheduler, what string, cond func(service.SchedulerState) bool) service.SchedulerState {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		st, changed := s.State()
		if cond(st) {
			return st
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("%s: still %+v", what, st)
		}
	}
}

func leading(st service.SchedulerState) bool { return st.Leading }

// twoLeased starts two instances' schedulers on one lease on a clock of
// their own: a, which holds the lease once this returns, then b.
func twoLeased(t *testing.T, e *env) (*leaseClock, *memstore.Leases, *leased, *leased) {
	t.Helper()
	clock := &leaseClock{now: time.Now()}
	leases := memstore.NewLeases(clock.Now)
	a := leasedScheduler(t, e, leases, clock, "a")
	waitState(t, a.Scheduler, "a acquires the free lease", leading)
	return clock, leases, a, leasedScheduler(t, e, leases, clock, "b")
}

// Two instances' schedulers on one lease: only the holder runs passes and
// applies what falls due; the other tries the lease and stays idle.
func TestSchedulerLeaseOnlyHolderRuns(t *testing.T) {
	e := newEnv(t)
	_, leases, a, b := twoLeased(t, e)
	waitState(t, b.Scheduler, "b tries the lease", func(st service.SchedulerState) bool { return st.Checks >= 3 })

	g := e.accepted()
	e.advance(6 * 31 * 24 * time.Hour) // past its validity: expiry due
	waitState(t, a.Scheduler, "a applies the expiry", func(st service.SchedulerState) bool { return st.Applied == 1 })
	if st := e.status(g.ShortID); st != rx.StatusExpired {
		t.Errorf("%s is %s, want expired", g.ShortID, st)
	}
	if st, _ := b.State(); st.Leading || st.Passes != 0 || st.Applied != 0 {
		t.Errorf("b ran the scheduler while a held the lease: %+v", st)
	}
	if on, events := a.m.get(); !on || events["acquired"] != 1 || events["lost"] != 0 {
		t.Errorf("a's metrics: leader %v, lease %v", on, events)
	}
	if on, events := b.m.get(); on || len(events) != 0 {
		t.Errorf("b's metrics: leader %v, lease %v", on, events)
	}
	if h := leases.Holder("scheduler"); h != "a" {
		t.Errorf("lease held by %q", h)
	}
}

// The holder cut off from the store keeps running passes until its last
// renewal would lapse (its renewals fail meanwhile, and no one else can
// take the lease); then it stops, and the other instance takes the lapsed
// lease and applies what falls due.
func TestSchedulerLeaseTakeover(t *testing.T) {
	e := newEnv(t)
	clock, leases, a, b := twoLeased(t, e)

	leases.Fail("a", errDown)
	before, _ := a.State()
	waitState(t, a.Scheduler, "a's renewals fail", func(st service.SchedulerState) bool { return st.Checks >= before.Checks+3 })
	if st, _ := a.State(); !st.Leading {
		t.Fatal("a stopped before its lease could lapse")
	}
	if st, _ := b.State(); st.Leading {
		t.Fatal("b took a lease that had not lapsed")
	}

	clock.advance(leaseTTL) // a's last renewal lapses
	waitState(t, a.Scheduler, "a lets go", func(st service.SchedulerState) bool { return !st.Leading })
	waitState(t, b.Scheduler, "b takes over", leading)
	if _, events := a.m.get(); events["lost"] != 1 {
		t.Errorf("a's lease events %v, want one loss", events)
	}
	if on, events := b.m.get(); !on || events["acquired"] != 1 {
		t.Errorf("b's metrics: leader %v, lease %v", on, events)
	}
	aState, _ := a.State()

	g := e.accepted()
	e.advance(6 * 31 * 24 * time.Hour)
	waitState(t, b.Scheduler, "b applies the expiry", func(st service.SchedulerState) bool { return st.Applied == 1 })
	if st := e.status(g.ShortID); st != rx.StatusExpired {
		t.Errorf("%s is %s, want expired", g.ShortID, st)
	}
	if st, _ := a.State(); st.Passes != aState.Passes || st.Applied != 0 {
		t.Errorf("a ran passes after it let go: %+v, then %+v", aState, st)
	}
}

// A holder that stops releases the lease at once: the other instance takes
// it at its next try, without waiting for it to lapse.
func TestSchedulerLeaseReleasedOnStop(t *testing.T) {
	e := newEnv(t)
	_, leases, a, b := twoLeased(t, e)
	waitState(t, b.Scheduler, "b tries the lease", func(st service.SchedulerState) bool { return st.Checks >= 2 })

	a.Stop()
	if h := leases.Holder("scheduler"); h == "a" {
		t.Fatal("a stopped without releasing its lease")
	}
	if on, events := a.m.get(); on || events["released"] != 1 {
		t.Errorf("a's metrics after its stop: leader %v, lease %v", on, events)
	}
	waitState(t, b.Scheduler, "b takes the released lease (the clock has not moved)", leading)
	if h := leases.Holder("scheduler"); h != "b" {
		t.Errorf("lease held by %q", h)
	}
}

// Without a lease every instance runs the passes (leader 1).
func TestSchedulerWithoutLease(t *testing.T) {
	e := newEnv(t)
	s := service.NewScheduler(e.life, e.st, e.st, zap.NewNop(), e.clock)
	m := &schedMetrics{lease: map[string]int{}}
	s.CountWith(m)
	s.Start(5 * time.Millisecond)
	defer s.Stop()
	e.accepted()
	e.advance(6 * 31 * 24 * time.Hour)
	waitState(t, s, "the pass applies the expiry", func(st service.SchedulerState) bool { return st.Leading && st.Applied == 1 })
	if on, events := m.get(); !on || len(events) != 0 {
		t.Errorf("metrics: leader %v, lease %v", on, events)
	}
}
