package test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// waitScheduler waits until b's scheduler state satisfies cond (bounded).
func waitScheduler(t *testing.T, b *testBroker, what string, cond func(service.SchedulerState) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		st, changed := b.App.Scheduler.State()
		if cond(st) {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("%s: scheduler still %+v", what, st)
		}
	}
}

// Two broker instances on one NATS server, one clock: the scheduler is
// single-active. The first instance takes the scheduler lease; the
// second tries it and stays idle (no pass, eps_scheduler_leader 0). A
// post-dated prescription's start date comes: the holder applies it, once
// (one event after the order in the log). The holder stops (a rolling
// restart): it releases the lease, the other instance takes it over at
// its next try, and applies the next prescription that falls due.
func TestSchedulerLeaseAcrossInstances(t *testing.T) {
	srv := startNATS(t)
	var mu sync.Mutex
	n := time.Now().UTC()
	now := time.Date(n.Year(), n.Month(), n.Day(), 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	today := now.Format(time.DateOnly) // fhirgen dates the order today
	cfg := func(c *config.Config) {
		c.NATSURL = srv.ClientURL()
		c.SchedulerEvery = 100 * time.Millisecond
		c.SchedulerLease = 6 * time.Second
	}
	leading := func(st service.SchedulerState) bool { return st.Leading }

	a := startBrokerClock(t, "", clock, cfg)
	waitScheduler(t, a, "the first instance takes the free lease", leading)
	b := startBrokerClock(t, "", clock, cfg, sharedKey(a))
	waitScheduler(t, b, "the second instance tries the lease", func(st service.SchedulerState) bool { return st.Checks >= 1 })

	// Two post-dated orders, starting in 10 and 20 days.
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	tok := a.token(auth.RolePrescriber, "A83008")
	var ids []string
	for _, days := range []int{10, 20} {
		g, err := tmpl.Order(fhirgen.Options{})
		if err != nil {
			t.Fatal(err)
		}
		start := now.AddDate(0, 0, days).Format(time.DateOnly)
		body := bytes.ReplaceAll(g.Body, []byte(`"start": "`+today+`"`), []byte(`"start": "`+start+`"`))
		if res := a.post(tok, body); res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
		if st, _ := a.status(g.ShortID); st != "9001" {
			t.Fatalf("post-dated order is %s", st)
		}
		ids = append(ids, g.ShortID)
	}
	// Each instance's tracker index (what its scheduler reads) holds them
	// (the notifier is one durable consumer shared by both: not settled
	// per instance).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, x := range []*testBroker{a, b} {
		if err := x.App.Tracker.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
	}

	advance(10*24*time.Hour + time.Hour) // the first one's start date
	waitScheduler(t, a, "the holder applies the first", func(st service.SchedulerState) bool { return st.Applied >= 1 })
	if st, _ := a.status(ids[0]); st != "0001" {
		t.Errorf("first after its start date: %s, want 0001", st)
	}
	if n := a.events(ids[0]); n != 2 {
		t.Errorf("first: %d events in the log, want 2 (the order, one scheduled transition)", n)
	}
	if st, _ := a.status(ids[1]); st != "9001" {
		t.Errorf("second before its start date: %s", st)
	}
	if st, _ := b.App.Scheduler.State(); st.Leading || st.Passes != 0 {
		t.Errorf("the second instance ran the scheduler while the first held the lease: %+v", st)
	}
	for _, c := range []struct {
		b      *testBroker
		metric string
		want   float64
	}{
		{a, "eps_scheduler_leader", 1}, {a, "eps_scheduler_transitions_total", 1},
		{b, "eps_scheduler_leader", 0}, {b, "eps_scheduler_passes_total", 0}, {b, "eps_scheduler_transitions_total", 0},
	} {
		if v := metricValue(t, c.b, c.metric); v != c.want {
			t.Errorf("%s on the %s instance: %v, want %v", c.metric, map[bool]string{true: "first", false: "second"}[c.b == a], v, c.want)
		}
	}

	// The holder stops: the other takes over without waiting for the
	// lease to lapse (it is released), and applies the next one due.
	a.stop()
	stopped := time.Now()
	waitScheduler(t, b, "the second instance takes over the released lease", leading)
	t.Logf("the second instance took over %v after the first stopped (lease %v: tries every %v)",
		time.Since(stopped).Round(time.Millisecond), 6*time.Second, 2*time.Second)
	if v := metricValue(t, b, "eps_scheduler_lease_total", "event", "acquired"); v != 1 {
		t.Errorf("eps_scheduler_lease_total{event=acquired} on the second instance: %v", v)
	}
	advance(10 * 24 * time.Hour) // the second one's start date
	waitScheduler(t, b, "the new holder applies the second", func(st service.SchedulerState) bool { return st.Applied >= 1 })
	if st, _ := b.status(ids[1]); st != "0001" {
		t.Errorf("second after its start date: %s, want 0001", st)
	}
	for _, id := range ids {
		if n := b.events(id); n != 2 {
			t.Errorf("%s: %d events in the log, want 2", id, n)
		}
	}
	if v := metricValue(t, b, "eps_scheduler_leader"); v != 1 {
		t.Errorf("eps_scheduler_leader on the new holder: %v", v)
	}
}

// The holder dies as far as NATS can tell (its connection is gone: no
// renewal reaches the server): the server removes its lease once the TTL
// has run out, the other instance takes it at its next try, and the old
// holder, its renewals failing, stops running passes by its own clock
// (its metrics cannot be gathered without NATS: the unit tests count them).
func TestSchedulerLeaseTakeoverAfterHolderDies(t *testing.T) {
	srv := startNATS(t)
	cfg := func(c *config.Config) {
		c.NATSURL = srv.ClientURL()
		c.SchedulerLease = 3 * time.Second
	}
	a := startBroker(t, "", cfg)
	waitScheduler(t, a, "the first instance takes the free lease", func(st service.SchedulerState) bool { return st.Leading })
	b := startBroker(t, "", cfg, sharedKey(a))
	waitScheduler(t, b, "the second instance tries the lease", func(st service.SchedulerState) bool { return st.Checks >= 1 })

	a.App.NATS.Conn.Close()
	died := time.Now()
	waitScheduler(t, b, "the second instance takes over the lapsed lease", func(st service.SchedulerState) bool { return st.Leading })
	t.Logf("the second instance took over %v after the first lost NATS (lease %v: tries every %v)",
		time.Since(died).Round(time.Millisecond), 3*time.Second, time.Second)
	waitScheduler(t, a, "the old holder lets go", func(st service.SchedulerState) bool { return !st.Leading })
	if st, _ := b.App.Scheduler.State(); !st.Leading {
		t.Errorf("the new holder lost the lease: %+v", st)
	}
}
