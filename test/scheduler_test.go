package test

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The scheduler, by an injected clock: a post-dated prescription becomes
// ready (and enters its dispenser's queue) on its start date (Spine's
// next_activity_generator.py future_dated: ready on the prescription date,
// not a day before); an
// unreleased one expires when its validity ends; two schedulers running at
// once apply each transition once; a second pass applies nothing.
func TestSchedulerByClock(t *testing.T) {
	var mu sync.Mutex
	// Noon today (UTC), so that the steps below fall on the days they name
	// whatever the time the test runs (near midnight, a day and an hour on
	// reached the start date).
	n := time.Now().UTC()
	now := time.Date(n.Year(), n.Month(), n.Day(), 12, 0, 0, 0, time.UTC)
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

	advance(9*24*time.Hour + time.Hour) // within a day of the start: not yet
	b.settle()
	if n, err := b.App.Scheduler.RunOnce(ctx); err != nil || n != 0 {
		t.Fatalf("the day before its start date: %d applied (%v)", n, err)
	}
	advance(24 * time.Hour) // its start date has come
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
	if q, _ := b.readyQueue(ctx, later.Performer, 25); len(q) != 2 {
		t.Errorf("the now-ready prescription is not in the queue: %+v", q)
	}

	advance(6*31*24*time.Hour - 10*24*time.Hour) // past the first one's validity
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
	if q, _ := b.readyQueue(ctx, plain.Performer, 25); len(q) != 1 || q[0].PrescriptionID != later.ShortID {
		t.Errorf("queue after expiry: %+v", q)
	}
}

// current is the stored record of prescription id.
func current(t *testing.T, b *testBroker, id string) *rx.Prescription {
	t.Helper()
	cur, err := b.App.Store.Current(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return cur.Record
}

// cdOrder marks every line item of an order as a controlled drug of
// schedule cd (Extension-DM-ControlledDrug).
func cdOrder(body []byte, cd string) []byte {
	return fhirgen.Mutate(body, func(m map[string]any) {
		for _, mr := range medicationRequests(m) {
			exts, _ := mr["extension"].([]any)
			mr["extension"] = append(exts, map[string]any{"url": fhir.ExtControlledDrug, "extension": []any{
				map[string]any{"url": "quantityWords", "valueString": "twenty"},
				map[string]any{"url": "schedule", "valueCoding": map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "code": cd}},
			}})
		}
	})
}

// An order that arrives past its expiry (counted from its prescription
// date, never from its arrival) is accepted, as Spine accepts it, and
// expires at once (record.py handle_overdue_expiry): never dispensable,
// whether released by ID or from the queue. A Schedule 2 controlled drug
// is valid 28 days (the README's deliberate difference); dated today it
// is dispensable until then.
func TestExpiredOnArrival(t *testing.T) {
	b, clock := erdBroker(t)
	now := clock.Now()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		dated time.Time
		cd    string
		want  string
	}{
		{"dated 2020", time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC), "", "0004"},
		{"dated 6 months and a day ago", now.AddDate(0, -6, -1), "", "0004"},
		{"CD2 dated 40 days ago", now.AddDate(0, 0, -40), "CD2", "0004"},
		{"CD2 dated 27 days ago", now.AddDate(0, 0, -27), "CD2", "0001"},
		{"dated 5 months ago", now.AddDate(0, -5, 0), "", "0001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pharmacy := newODS("FX")
			g, err := tmpl.Order(fhirgen.Options{Now: tc.dated, Performer: pharmacy})
			if err != nil {
				t.Fatal(err)
			}
			body := g.Body
			if tc.cd != "" {
				body = cdOrder(body, tc.cd)
			}
			if res := b.post(b.token(auth.RolePrescriber, g.Sender), body); res.Status != 200 {
				t.Fatalf("order: %d %s (Spine refuses no order for its date)", res.Status, res.Body)
			}
			b.settle()
			if st, _ := b.status(g.ShortID); st != tc.want {
				t.Fatalf("status on arrival %s, want %s", st, tc.want)
			}
			ids, _ := released(t, b.release(pharmacy, ""))
			if tc.want == "0001" {
				if len(ids) != 1 {
					t.Errorf("a valid order is not in its pharmacy's queue: %v", ids)
				}
				return
			}
			if len(ids) != 0 {
				t.Errorf("nominated release handed over an expired order: %v", ids)
			}
			if res := b.release(newODS("FY"), g.ShortID); res.Status != 400 || !res.outcome(t).hasCode(codeInvalidState) {
				t.Errorf("release by ID of an expired order: %d %s", res.Status, res.Body)
			}
			rec := current(t, b, g.ShortID)
			if rec.Status != "0004" || rec.Items[0].Status != "0006" {
				t.Errorf("record: %s, item %s; want 0004 and 0006", rec.Status, rec.Items[0].Status)
			}
			if h := rec.History; len(h) < 2 || h[0].Status != "0001" || h[len(h)-1].Type != rx.EventExpire {
				t.Errorf("history %+v: want the upload (0001), then the expiry", h)
			}
		})
	}
}

// A part-dispensed item (0003) is still with the dispenser: cancelling it
// answers R-0003 and marks it for cancellation (record.py
// ITEM_WITH_DISPENSER_STATES); the dispenser marking it not dispensed makes
// the cancellation take effect. Left alone, the prescription is No-Claimed
// 180 days after its last dispense (next_activity_generator.py
// part_dispensed: createNoClaim), not a day before.
func TestPartDispensedByClock(t *testing.T) {
	b, clock := erdBroker(t)
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	partDispensed := func(t *testing.T) (*fhirgen.Generated, string) {
		pharmacy := newODS("FP")
		g, _ := tmpl.Order(fhirgen.Options{Performer: pharmacy})
		if res := b.post(b.token(auth.RolePrescriber, g.Sender), g.Body); res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
		if res := b.release(pharmacy, g.ShortID); res.Status != 200 {
			t.Fatalf("release: %d %s", res.Status, res.Body)
		}
		items := map[string]string{}
		for i, id := range g.ItemIDs {
			items[id] = map[bool]string{true: "0003", false: "0001"}[i == 0]
		}
		body, _ := fhirgen.DispenseNotification(g, pharmacy, items, "0003", "")
		if res := b.post(b.token(auth.RoleDispenser, pharmacy), body); res.Status != 200 {
			t.Fatalf("part dispensed: %d %s", res.Status, res.Body)
		}
		return g, pharmacy
	}
	t.Run("cancel a part-dispensed item", func(t *testing.T) {
		g, pharmacy := partDispensed(t)
		body, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
		if !cancelAnswer(t, "cancel the part-dispensed item", b.post(b.token(auth.RolePrescriber, g.Sender), body), "R-0003") {
			t.FailNow()
		}
		if rec := current(t, b, g.ShortID); rec.Status != "0003" || rec.Pending == nil || !slices.Contains(rec.Pending.Items, g.ItemIDs[0]) || rec.Items[0].Status != "0003" {
			t.Fatalf("record: %s pending %+v item %s; want 0003, the item marked for cancellation", rec.Status, rec.Pending, rec.Items[0].Status)
		}
		items := map[string]string{}
		for i, id := range g.ItemIDs {
			items[id] = map[bool]string{true: "0002", false: "0001"}[i == 0]
		}
		nd, _ := fhirgen.DispenseNotification(g, pharmacy, items, "0006", "")
		if res := b.post(b.token(auth.RoleDispenser, pharmacy), nd); res.Status != 200 {
			t.Fatalf("not dispensed: %d %s", res.Status, res.Body)
		}
		if rec := current(t, b, g.ShortID); rec.Status != "0006" || rec.Pending != nil || rec.Items[0].Status != "0005" {
			t.Errorf("record: %s pending %+v item %s; want 0006 with the item cancelled", rec.Status, rec.Pending, rec.Items[0].Status)
		}
	})
	t.Run("0003 to 0009 by the clock", func(t *testing.T) {
		g, _ := partDispensed(t)
		due := clock.Now().Truncate(24*time.Hour).AddDate(0, 0, 180)
		ctx := context.Background()
		clock.Set(due.Add(-time.Second))
		b.settle()
		if n, err := b.App.Scheduler.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("a day before: %d applied (%v)", n, err)
		}
		if st, _ := b.status(g.ShortID); st != "0003" {
			t.Fatalf("before its date: %s", st)
		}
		clock.Set(due)
		b.settle()
		if n, err := b.App.Scheduler.RunOnce(ctx); err != nil || n < 1 {
			t.Fatalf("on its date: %d applied (%v)", n, err)
		}
		if rec := current(t, b, g.ShortID); rec.Status != "0009" || rec.Items[0].Status != "0003" {
			t.Errorf("180 days after the last dispense: %s, item %s; want 0009 with the items as they were", rec.Status, rec.Items[0].Status)
		}
	})
}

// A repeat dispensing issue part dispensed whose notification is withdrawn
// is 0003 without a notification: it becomes Dispensed (0006) 180 days
// after its release, or at the prescription's expiry when that is earlier
// (next_activity_generator.py part_dispensed; statuses.py EXPIRY_LOOKUP),
// and the issues after it expire with it (record.py
// perform_instance_specific_updates).
func TestPartDispensedERDExpiresToDispensed(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	// Released a month before issue 1's expiry: the expiry comes first.
	release := c.start.AddDate(0, 5, 0)
	clock.Set(release.Add(9 * time.Hour))
	if ids, _ := c.releaseNominated(pharmacy); len(ids) != 1 {
		t.Fatalf("release: %v", ids)
	}
	res, dn := c.dispense(pharmacy, 1, "0003", "0003")
	if res.Status != 200 {
		t.Fatalf("dispense: %d %s", res.Status, res.Body)
	}
	wd := fhirgen.ForIssue(fhirgen.WithdrawTask(c.g, pharmacy, dn, "QU"), 1, 3)
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), wd); res.Status != 200 {
		t.Fatalf("withdraw: %d %s", res.Status, res.Body)
	}
	c.expect("withdrawn", 1, "0003", "9000", "9000")
	expiry := c.start.AddDate(0, 6, 0)
	if n := c.tick(expiry.Add(-time.Second)); n != 0 {
		t.Fatalf("before the expiry: %d applied", n)
	}
	c.tick(expiry)
	c.expect("at issue 1's expiry", 3, "0006", "0004", "0004")
}
