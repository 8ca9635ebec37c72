package test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The scheduler, by an injected clock: a post-dated prescription becomes
// ready (and enters its dispenser's queue) a day before its start; an
// unreleased one expires when its validity ends; two schedulers running at
// once apply each transition once; a second pass applies nothing.
func TestSchedulerByClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	b := startBrokerClock(t, "", clock)
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := b.token(auth.RolePrescriber, "A83008")

	plain, _ := tmpl.Order(fhirgen.Options{})
	later, _ := tmpl.Order(fhirgen.Options{})
	start := now.AddDate(0, 0, 10).Format("2006-01-02")
	today := now.UTC().Format(time.DateOnly) // fhirgen dates the order today
	laterBody := bytes.ReplaceAll(later.Body, []byte(`"start": "`+today+`"`), []byte(`"start": "`+start+`"`))
	for _, body := range [][]byte{plain.Body, laterBody} {
		if res := b.post(tok, body); res.Status != 200 {
			t.Fatalf("%d %s", res.Status, res.Body)
		}
	}
	if st, _ := b.status(later.ShortID); st != "9001" {
		t.Fatalf("post-dated: %s", st)
	}
	ctx := context.Background()
	if n, err := b.App.Scheduler.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("nothing is due yet, but %d applied (%v)", n, err)
	}

	advance(9*24*time.Hour + time.Hour) // within a day of the start
	b.settle()
	runTwice := func() int {
		var wg sync.WaitGroup
		counts := make([]int, 2)
		for i := range counts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n, err := b.App.Scheduler.RunOnce(ctx)
				if err != nil {
					t.Error(err)
				}
				counts[i] = n
			}()
		}
		wg.Wait()
		return counts[0] + counts[1]
	}
	if n := runTwice(); n != 1 {
		t.Errorf("two schedulers applied %d transitions, want exactly 1 (9001 -> 0001)", n)
	}
	if st, _ := b.status(later.ShortID); st != "0001" {
		t.Errorf("post-dated after its day came: %s", st)
	}
	b.settle()
	if q, _ := b.App.Store.ReadyQueue(ctx, later.Performer, 25); len(q) != 2 {
		t.Errorf("the now-ready prescription is not in the queue: %+v", q)
	}

	advance(6*31*24*time.Hour - 9*24*time.Hour) // past the first one's validity
	b.settle()
	if n := runTwice(); n != 1 {
		t.Errorf("expiry applied %d times, want once", n)
	}
	if st, _ := b.status(plain.ShortID); st != "0004" {
		t.Errorf("after its validity: %s, want 0004", st)
	}
	if n, _ := b.App.Scheduler.RunOnce(ctx); n != 0 {
		t.Errorf("a further pass applied %d", n)
	}
	// The tracker shows the expiry in the history, and it left the queue.
	ids, st, _ := groups(t, b.do("GET", "/FHIR/R4/RequestGroup/"+plain.ShortID, b.token(auth.RoleTracker, "X26"), nil))
	if len(ids) != 1 || st[0] != "0004" {
		t.Errorf("tracker: %v %v", ids, st)
	}
	b.settle()
	if q, _ := b.App.Store.ReadyQueue(ctx, plain.Performer, 25); len(q) != 1 || q[0].PrescriptionID != later.ShortID {
		t.Errorf("queue after expiry: %+v", q)
	}
}
