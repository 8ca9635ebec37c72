package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Electronic repeat dispensing end to end: one signed order, N issues, each
// released, dispensed and claimed in turn as the injected clock reaches its
// date; cancellation and a nomination change part-way through; the issue
// each lifecycle message names.

// erdFixture is the NHS repeat dispensing order (nominated pharmacy) the
// generated courses are made from.
const erdFixture = "primary-care/repeat-dispensing/nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/medication-list/din/1-Process-Request-Send-200_OK.json"

// course is one repeat dispensing prescription of a test, with the test's
// clock.
type course struct {
	t      *testing.T
	b      *testBroker
	g      *fhirgen.Generated
	issues int
	supply int
	start  time.Time
	clock  *testClock
}

// testClock is the broker's injected clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

// erdBroker starts a broker whose clock starts at 09:00 UTC on a fixed day
// (so that availability dates are whole days from the prescription date).
func erdBroker(t *testing.T) (*testBroker, *testClock) {
	t.Helper()
	clock := &testClock{now: time.Now().UTC().Truncate(24 * time.Hour).Add(9 * time.Hour)}
	return startBrokerClock(t, "", clock.Now), clock
}

// newCourse makes (without posting) an eRD order of issues issues of supply
// days, dated today, nominated to performer.
func newCourse(t *testing.T, b *testBroker, clock *testClock, issues, supply int, performer string) *course {
	t.Helper()
	tmpl, err := fhirgen.NewTemplate(readFile(t, filepath.Join(fixtures, erdFixture)))
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{Performer: performer})
	if err != nil {
		t.Fatal(err)
	}
	start := clock.Now().Truncate(24 * time.Hour)
	g.Body = fhirgen.RepeatDispensing(g.Body, issues-1, supply, start)
	return &course{t: t, b: b, g: g, issues: issues, supply: supply, start: start, clock: clock}
}

func (c *course) post() {
	c.t.Helper()
	if res := c.b.post(c.b.token(auth.RolePrescriber, c.g.Sender), c.g.Body); res.Status != 200 {
		c.t.Fatalf("eRD order: %d %s", res.Status, res.Body)
	}
}

// record is the prescription's record now.
func (c *course) record() *rx.Prescription {
	c.t.Helper()
	cur, err := c.b.App.Store.Current(context.Background(), c.g.ShortID)
	if err != nil {
		c.t.Fatal(err)
	}
	return cur.Record
}

// statuses are the issues' statuses, in issue order.
func (c *course) statuses() []string {
	c.t.Helper()
	var out []string
	for _, is := range c.record().Issues() {
		out = append(out, string(is.Status))
	}
	return out
}

// expect checks every issue's status and which issue is current.
func (c *course) expect(what string, current int, want ...string) {
	c.t.Helper()
	rec := c.record()
	if got := c.statuses(); !slices.Equal(got, want) || rec.IssueNumber() != current {
		c.t.Fatalf("%s: issues %v (current %d), want %v (current %d)", what, got, rec.IssueNumber(), want, current)
	}
}

// availableAt is the rule: prescription date + days supply x (n - 1) - 7 days.
func (c *course) availableAt(n int) time.Time {
	return c.start.AddDate(0, 0, c.supply*(n-1)-7)
}

// tick moves the clock to at (never back) and runs two scheduler passes at
// once, as two broker instances would: the transitions they applied
// together (each must be applied once).
func (c *course) tick(at time.Time) int {
	c.t.Helper()
	c.clock.Set(at)
	c.b.settle()
	var wg sync.WaitGroup
	counts := make([]int, 2)
	errs := make([]error, 2)
	for i := range counts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			counts[i], errs[i] = c.b.App.Scheduler.RunOnce(context.Background())
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			c.t.Fatal(err)
		}
	}
	c.b.settle()
	return counts[0] + counts[1]
}

// releaseNominated releases dispenser's queue and returns the IDs and the
// issue each entry of the answer names.
func (c *course) releaseNominated(dispenser string) (ids []string, issues []int) {
	c.t.Helper()
	c.b.settle()
	res := c.b.release(dispenser, "")
	ids, _ = released(c.t, res)
	var p struct {
		Parameter []struct {
			Name     string
			Resource struct {
				Entry []struct {
					Extension []struct {
						URL       string `json:"url"`
						Extension []struct {
							URL          string `json:"url"`
							ValueInteger int    `json:"valueInteger"`
						} `json:"extension"`
					} `json:"extension"`
				} `json:"entry"`
			} `json:"resource"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(res.Body, &p); err != nil {
		c.t.Fatal(err)
	}
	for _, e := range p.Parameter[0].Resource.Entry {
		n := 0
		for _, x := range e.Extension {
			for _, part := range x.Extension {
				if x.URL == fhir.ExtRepeatInformation && part.URL == "numberOfRepeatsIssued" {
					n = part.ValueInteger + 1 // EPS's release answer counts from 0
				}
			}
		}
		issues = append(issues, n)
	}
	return ids, issues
}

func (c *course) allItems(status string) map[string]string {
	m := map[string]string{}
	for _, id := range c.g.ItemIDs {
		m[id] = status
	}
	return m
}

// dispense sends a dispense notification for issue n (0: naming none).
func (c *course) dispense(dispenser string, n int, itemStatus string, status string) (*response, string) {
	c.t.Helper()
	body, id := fhirgen.DispenseNotification(c.g, dispenser, c.allItems(itemStatus), status, "")
	if n > 0 {
		body = fhirgen.ForIssue(body, n, c.issues)
	}
	return c.b.post(c.b.token(auth.RoleDispenser, dispenser), body), id
}

// claim sends a claim for issue n.
func (c *course) claim(dispenser string, n int) *response {
	c.t.Helper()
	body, _ := fhirgen.Claim(c.g, dispenser, "")
	if n > 0 {
		body = fhirgen.ForIssue(body, n, c.issues)
	}
	return c.b.do("POST", "/FHIR/R4/Claim", c.b.token(auth.RoleDispenser, dispenser), body)
}

func (c *course) cancelAll() []string {
	c.t.Helper()
	var codes []string
	for _, item := range c.g.ItemIDs {
		body, _ := fhirgen.Cancellation(c.g, item, "0002")
		res := c.b.post(c.b.token(auth.RolePrescriber, c.g.Sender), body)
		_, code := rCode(res)
		codes = append(codes, code)
	}
	return codes
}

// dispenseFirst posts the order, releases issue 1 to pharmacy (its
// nominated dispenser) and dispenses it fully.
func (c *course) dispenseFirst(pharmacy string) {
	c.t.Helper()
	c.post()
	if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 1 {
		c.t.Fatalf("issue 1 release: %v %v", ids, issues)
	}
	if res, _ := c.dispense(pharmacy, 1, "0001", "0006"); res.Status != 200 {
		c.t.Fatalf("issue 1 dispense: %d %s", res.Status, res.Body)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// A 6-issue course of 28 days, released, dispensed and claimed issue by
// issue as the clock reaches each issue's date: issue n is downloadable
// exactly at prescription date + 28 x (n - 1) - 7 days and not a second
// before; it waits at 0000 (awaiting release ready) once issue n-1 is
// complete; the release names the issue; each claim names its issue and is
// accepted after the next issue has become current.
func TestERDCourseIssueByIssue(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 6, 28, pharmacy)
	c.post()

	rec := c.record()
	if !rec.RepeatDispensing() || rec.IssueCount() != 6 {
		t.Fatalf("record: repeat dispensing %v, %d issues", rec.RepeatDispensing(), rec.IssueCount())
	}
	c.expect("created", 1, "0001", "9000", "9000", "9000", "9000", "9000")
	for _, is := range rec.Issues()[1:] {
		if want := c.availableAt(is.Number); !is.AvailableAt.Equal(want) {
			t.Errorf("issue %d available from %s, want %s", is.Number, is.AvailableAt, want)
		}
		if want := c.start.AddDate(1, 0, 0); !is.ExpiresAt.Equal(want) {
			t.Errorf("issue %d expires %s, want 12 months after the prescription date (%s)", is.Number, is.ExpiresAt, want)
		}
		if is.Nominated != pharmacy {
			t.Errorf("issue %d nominated to %q, want %s", is.Number, is.Nominated, pharmacy)
		}
	}
	if n := c.tick(clock.Now()); n != 0 {
		t.Fatalf("scheduler applied %d transitions to a fresh course", n)
	}

	want := repeat("9000", 6)
	for n := 1; n <= 6; n++ {
		if n > 1 {
			// Issue n-1 is complete: issue n waits for its date.
			if applied := c.tick(c.availableAt(n).Add(-time.Second)); applied != 1 {
				t.Fatalf("issue %d: %d transitions applied before its date, want 1 (9000 -> 0000)", n, applied)
			}
			want[n-1] = "0000"
			c.expect(fmt.Sprintf("issue %d a second before its date", n), n, want...)
			if ids, _ := c.releaseNominated(pharmacy); len(ids) != 0 {
				t.Fatalf("issue %d released before its date: %v", n, ids)
			}
			if c.tick(c.availableAt(n)) != 1 {
				t.Fatalf("issue %d did not become available at its date", n)
			}
		}
		want[n-1] = "0001"
		c.expect(fmt.Sprintf("issue %d available", n), n, want...)

		ids, issues := c.releaseNominated(pharmacy)
		if !slices.Equal(ids, []string{c.g.ShortID}) || !slices.Equal(issues, []int{n}) {
			t.Fatalf("issue %d: nominated release gave %v (issues %v)", n, ids, issues)
		}
		want[n-1] = "0002"
		c.expect(fmt.Sprintf("issue %d released", n), n, want...)

		if res, _ := c.dispense(pharmacy, n, "0001", "0006"); res.Status != 200 {
			t.Fatalf("issue %d dispense: %d %s", n, res.Status, res.Body)
		}
		want[n-1] = "0006"
		c.expect(fmt.Sprintf("issue %d dispensed", n), n, want...)

		if n > 1 {
			// The previous issue's claim arrives after this issue became
			// current: it names its issue.
			if res := c.claim(pharmacy, n-1); res.Status != 200 {
				t.Fatalf("issue %d claim: %d %s", n-1, res.Status, res.Body)
			}
			want[n-2] = "0008"
			c.expect(fmt.Sprintf("issue %d claimed", n-1), n, want...)
		}
	}
	if res := c.claim(pharmacy, 6); res.Status != 200 {
		t.Fatalf("issue 6 claim: %d %s", res.Status, res.Body)
	}
	c.expect("course complete", 6, repeat("0008", 6)...)
	if c.tick(clock.Now().AddDate(0, 1, 0)) != 0 {
		t.Errorf("the scheduler changed a completed course")
	}

	// Every issue's history is its own.
	perIssue := map[int][]string{}
	for _, ev := range c.record().History {
		perIssue[ev.Issue] = append(perIssue[ev.Issue], ev.Type)
	}
	wantFirst := []string{rx.EventNominatedRelease, rx.EventDispense, rx.EventClaim}
	wantLater := append([]string{rx.EventAwaiting, rx.EventReady}, wantFirst...)
	if !slices.Equal(perIssue[0], []string{rx.EventOrder}) || !slices.Equal(perIssue[1], wantFirst) {
		t.Errorf("history: order %v, issue 1 %v", perIssue[0], perIssue[1])
	}
	for n := 2; n <= 6; n++ {
		if !slices.Equal(perIssue[n], wantLater) {
			t.Errorf("issue %d history %v, want %v", n, perIssue[n], wantLater)
		}
	}
}

// An issue becomes available at its date only once the issue before it is
// complete; when that happens after its date, it becomes available at once
// (the scheduler catches up); a message naming an issue the prescription
// does not have is refused and changes nothing; one naming no issue acts
// on the current one; a withdraw of the dispense that completed an issue
// sends the next issue back to the future.
func TestERDAvailabilityWaitsForPreviousIssue(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 10, pharmacy)
	c.post()
	if c.tick(c.availableAt(2).Add(time.Hour)) != 0 {
		t.Fatal("issue 2 moved while issue 1 is not complete")
	}
	c.expect("issue 1 not yet dispensed, issue 2's date passed", 1, "0001", "9000", "9000")
	if ids, _ := c.releaseNominated(pharmacy); len(ids) != 1 {
		t.Fatalf("release: %v", ids)
	}
	events := b.events(c.g.ShortID)
	if res, _ := c.dispense(pharmacy, 4, "0001", "0006"); res.Status != 400 || !res.outcome(t).hasCode("INVALID_VALUE") {
		t.Fatalf("dispense of issue 4 of 3: %d %s", res.Status, res.Body)
	}
	if res, _ := c.dispense(pharmacy, 2, "0001", "0006"); res.Status != 400 {
		t.Fatalf("dispense of issue 2 (not released): %d %s", res.Status, res.Body)
	}
	if got := b.events(c.g.ShortID); got != events {
		t.Fatalf("refused dispenses stored %d events", got-events)
	}
	res, notification := c.dispense(pharmacy, 0, "0001", "0006") // names no issue: the current one
	if res.Status != 200 {
		t.Fatalf("dispense naming no issue: %d %s", res.Status, res.Body)
	}
	// Issue 2's date has passed: it goes 9000 -> 0000 -> 0001 in one pass.
	if c.tick(clock.Now()) != 1 {
		t.Fatal("issue 2 did not follow at once")
	}
	c.expect("issue 2 caught up", 2, "0006", "0001", "9000")
	rec := c.record()
	if h := rec.History[len(rec.History)-2:]; h[0].Type != rx.EventAwaiting || h[1].Type != rx.EventReady || h[1].Issue != 2 {
		t.Errorf("history of the catch-up: %+v", h)
	}

	// Withdrawing issue 1's dispense: issue 2 (not yet released) goes back.
	withdraw := fhirgen.ForIssue(fhirgen.WithdrawTask(c.g, pharmacy, notification, "QU"), 1, 3)
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), withdraw); res.Status != 200 {
		t.Fatalf("withdraw: %d %s", res.Status, res.Body)
	}
	c.expect("after withdraw", 1, "0003", "9000", "9000")
	b.settle()
	if ids, _ := c.releaseNominated(pharmacy); len(ids) != 0 {
		t.Fatalf("issue 2 still in the queue after the withdraw: %v", ids)
	}
	// Dispensed again, issue 2 follows again; once it is released, issue 1's
	// dispensing can no longer be withdrawn.
	res, notification = c.dispense(pharmacy, 1, "0001", "0006")
	if res.Status != 200 {
		t.Fatalf("dispense again: %d %s", res.Status, res.Body)
	}
	c.tick(clock.Now())
	if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 2 {
		t.Fatalf("issue 2 release: %v %v", ids, issues)
	}
	withdraw = fhirgen.ForIssue(fhirgen.WithdrawTask(c.g, pharmacy, notification, "QU"), 1, 3)
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), withdraw); res.Status != 400 || !res.outcome(t).hasCode(codeInvalidState) {
		t.Fatalf("withdraw after issue 2 was released: %d %s", res.Status, res.Body)
	}
	c.expect("withdraw refused", 2, "0006", "0002", "9000")
}

// Cancelling a repeat dispensing prescription part-way: every issue still
// to come becomes a Cancelled future instance (9005) and never becomes
// available; cancelling while the current issue is with the dispenser marks
// it for cancellation (R-0002) and cancels the later issues at once.
func TestERDCancellationMidCourse(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")

	t.Run("between issues", func(t *testing.T) {
		c := newCourse(t, b, clock, 4, 28, pharmacy)
		c.t = t
		c.dispenseFirst(pharmacy)
		// Issue 1 dispensed, issue 2 not yet moved: the cancellation is of
		// the rest of the course.
		for _, code := range c.cancelAll() {
			if code != string(rx.RCancelled) {
				t.Fatalf("cancel answered %s, want R-0001", code)
			}
		}
		c.expect("cancelled after issue 1", 1, "0006", "0005", "0005", "0005")
		c.tick(c.availableAt(4).Add(time.Hour))
		c.expect("dates passed", 1, "0006", "0005", "0005", "0005")
		if ids, _ := c.releaseNominated(pharmacy); len(ids) != 0 {
			t.Fatalf("a cancelled issue was released: %v", ids)
		}
	})

	t.Run("issue with the dispenser", func(t *testing.T) {
		c := newCourse(t, b, clock, 4, 28, pharmacy)
		c.t = t
		c.dispenseFirst(pharmacy)
		c.tick(c.availableAt(2))
		if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 2 {
			t.Fatalf("issue 2 release: %v %v", ids, issues)
		}
		for _, code := range c.cancelAll() {
			if code != string(rx.RPendingWith) {
				t.Fatalf("cancel answered %s, want R-0002", code)
			}
		}
		c.expect("cancelled with issue 2 at the dispenser", 2, "0006", "0002", "0005", "0005")
		if c.record().Pending == nil {
			t.Fatal("issue 2 is not marked for cancellation")
		}
		// The dispenser returns it: the cancellation takes effect.
		ret := fhirgen.ForIssue(fhirgen.ReturnTask(c.g, pharmacy, "0003"), 2, 4)
		if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), ret); res.Status != 200 {
			t.Fatalf("return: %d %s", res.Status, res.Body)
		}
		c.expect("returned", 2, "0006", "0005", "0005", "0005")
	})
}

// A nomination change part-way through a course: the issues that become
// available afterwards go to the patient's new pharmacy; the issue already
// released stays with the old one.
func TestERDNominationChangeMidCourse(t *testing.T) {
	b, clock := erdBroker(t)
	oldPharmacy, newPharmacy := newODS("FE"), newODS("FN")
	c := newCourse(t, b, clock, 4, 28, oldPharmacy)
	c.post()
	if ids, _ := c.releaseNominated(oldPharmacy); len(ids) != 1 {
		t.Fatalf("issue 1 release: %v", ids)
	}
	clock.Set(clock.Now().Add(time.Hour))
	res := b.do("PUT", "/api/v1/nominations/"+c.g.NHSNumber+"/P1", b.token(auth.RoleAdmin, "X26"),
		[]byte(`{"ods":"`+newPharmacy+`"}`), "Content-Type", "application/json")
	if res.Status != 200 {
		t.Fatalf("nomination change: %d %s", res.Status, res.Body)
	}
	if res, _ := c.dispense(oldPharmacy, 1, "0001", "0006"); res.Status != 200 {
		t.Fatalf("dispense: %d %s", res.Status, res.Body)
	}
	for n := 2; n <= 4; n++ {
		c.tick(c.availableAt(n))
		if ids, _ := c.releaseNominated(oldPharmacy); len(ids) != 0 {
			t.Fatalf("issue %d went to the old pharmacy", n)
		}
		ids, issues := c.releaseNominated(newPharmacy)
		if len(ids) != 1 || issues[0] != n {
			t.Fatalf("issue %d: the new pharmacy released %v %v", n, ids, issues)
		}
		rec := c.record()
		if rec.Nominated != newPharmacy || rec.NominationSource != rx.NominationFromRegistry {
			t.Errorf("issue %d nominated %s (%s)", n, rec.Nominated, rec.NominationSource)
		}
		if res, _ := c.dispense(newPharmacy, n, "0001", "0006"); res.Status != 200 {
			t.Fatalf("issue %d dispense: %d %s", n, res.Status, res.Body)
		}
	}
	is1, _ := c.record().AtIssue(1)
	if is1.Dispenser != oldPharmacy {
		t.Errorf("issue 1 is now held by %s", is1.Dispenser)
	}
}

// Schedule 2 and 3 controlled drugs cannot be repeat dispensed: such an
// order is refused and nothing is stored; Schedule 4 can.
func TestERDControlledDrugRefused(t *testing.T) {
	b, clock := erdBroker(t)
	for _, tc := range []struct {
		schedule string
		status   int
	}{{"CD2", 400}, {"CD3", 400}, {"CD4-1", 200}} {
		t.Run(tc.schedule, func(t *testing.T) {
			c := newCourse(t, b, clock, 3, 28, newODS("FE"))
			c.g.Body = fhirgen.Mutate(c.g.Body, func(m map[string]any) {
				for _, mr := range medicationRequests(m) {
					exts, _ := mr["extension"].([]any)
					mr["extension"] = append(exts, map[string]any{"url": fhir.ExtControlledDrug, "extension": []any{
						map[string]any{"url": "quantityWords", "valueString": "twenty"},
						map[string]any{"url": "schedule", "valueCoding": map[string]any{
							"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "code": tc.schedule}},
					}})
				}
			})
			res := b.post(b.token(auth.RolePrescriber, c.g.Sender), c.g.Body)
			if res.Status != tc.status {
				t.Fatalf("%s eRD: %d %s", tc.schedule, res.Status, res.Body)
			}
			if tc.status == 400 {
				if !res.outcome(t).hasCode("INVALID_VALUE") {
					t.Errorf("%s eRD: %s", tc.schedule, res.Body)
				}
				if n := b.events(c.g.ShortID); n != 0 {
					t.Errorf("refused order stored %d events", n)
				}
			}
		})
	}
}

// The NHS repeat dispensing orders, as published: each makes its issues
// (numberOfRepeatsAllowed + 1, dated from its validity start by its days
// supply), nominated to its pharmacy; a course generated from each (dated
// today) runs from issue 1 to issue 2 once issue 1 is dispensed and issue
// 2's date has come.
func TestERDNHSFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "primary-care/repeat-dispensing/*/*/*/*/*/*/*/1-Process-Request-Send-200_OK.json"))
	if len(files) < 2 {
		t.Fatalf("repeat dispensing fixtures: %v", files)
	}
	b, clock := erdBroker(t)
	for _, f := range files {
		t.Run(filepath.Base(filepath.Dir(f)), func(t *testing.T) {
			// Dated today: EPS refuses an eRD order whose validity has ended.
			raw := fhirgen.Redate(readFile(t, f), clock.Now())
			msg, err := fhir.DecodeMessage(raw)
			if err != nil {
				t.Fatal(err)
			}
			order, err := msg.Order(clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			if order.TherapyType != fhir.TherapyRepeatDispensing {
				t.Fatalf("%s is not repeat dispensing", f)
			}
			if res := b.post(b.token(auth.RolePrescriber, order.Sender), raw); res.Status != 200 {
				t.Fatalf("order: %d %s", res.Status, res.Body)
			}
			cur, err := b.App.Store.Current(context.Background(), order.PrescriptionID)
			if err != nil {
				t.Fatal(err)
			}
			rec := cur.Record
			if rec.IssueCount() != order.RepeatsAllowed+1 || rec.Nominated != order.Performer {
				t.Fatalf("%d issues nominated to %s, want %d to %s", rec.IssueCount(), rec.Nominated, order.RepeatsAllowed+1, order.Performer)
			}
			want := append([]string{"0001"}, repeat("9000", order.RepeatsAllowed)...)
			var got []string
			for _, is := range rec.Issues() {
				got = append(got, string(is.Status))
				if is.Number > 1 {
					if at := order.ValidityStart.AddDate(0, 0, order.SupplyDays*(is.Number-1)-7); !is.AvailableAt.Equal(at) {
						t.Errorf("issue %d available %s, want %s", is.Number, is.AvailableAt, at)
					}
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("issues %v, want %v", got, want)
			}

			tmpl, err := fhirgen.NewTemplate(raw)
			if err != nil {
				t.Fatal(err)
			}
			pharmacy := newODS("FX")
			g, err := tmpl.Order(fhirgen.Options{Performer: pharmacy, Now: clock.Now()})
			if err != nil {
				t.Fatal(err)
			}
			c := &course{t: t, b: b, g: g, issues: order.RepeatsAllowed + 1, supply: order.SupplyDays, clock: clock}
			c.post()
			if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 1 {
				t.Fatalf("issue 1: %v %v", ids, issues)
			}
			if res, _ := c.dispense(pharmacy, 1, "0001", "0006"); res.Status != 200 {
				t.Fatalf("dispense: %d %s", res.Status, res.Body)
			}
			// The generated course is dated today (fhirgen dates generated
			// orders today): issue 2 follows at its date.
			c.tick(clock.Now().AddDate(0, 0, order.SupplyDays))
			if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 2 {
				t.Fatalf("issue 2: %v %v %v", ids, issues, c.statuses())
			}
			c.expect("issue 2 released", 2, append([]string{"0006", "0002"}, repeat("9000", order.RepeatsAllowed-1)...)...)
		})
	}
}

// Downtime: no broker runs while issue 2's date passes; the next broker to
// start (same data dir, its tracker index from the snapshot and the log)
// makes issue 2 available on its first pass.
func TestERDCatchUpAfterDowntime(t *testing.T) {
	dir := t.TempDir()
	clock := &testClock{now: time.Now().UTC().Truncate(24 * time.Hour).Add(9 * time.Hour)}
	b := startBrokerClock(t, dir, clock.Now)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	if ids, _ := c.releaseNominated(pharmacy); len(ids) != 1 {
		t.Fatalf("issue 1: %v", ids)
	}
	if res, _ := c.dispense(pharmacy, 1, "0001", "0006"); res.Status != 200 {
		t.Fatalf("dispense: %d %s", res.Status, res.Body)
	}
	b.settle()
	b.stop()

	clock.Set(c.availableAt(2).AddDate(0, 0, 3))
	b2 := startBrokerClock(t, dir, clock.Now)
	c.b = b2
	if n := c.tick(clock.Now()); n != 1 {
		t.Fatalf("first pass after the restart applied %d transitions, want 1", n)
	}
	c.expect("after the downtime", 2, "0006", "0001", "9000")
	if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 2 {
		t.Fatalf("issue 2 after the downtime: %v %v", ids, issues)
	}
}

// Messages that name no issue still find theirs after the next issue has
// become current: a claim for the dispensed issue, a withdraw of its
// notification, the same notification resent.
func TestERDMessagesNamingNoIssue(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	c.releaseNominated(pharmacy)
	res, notification := c.dispense(pharmacy, 0, "0001", "0006")
	if res.Status != 200 {
		t.Fatalf("dispense: %d %s", res.Status, res.Body)
	}
	c.tick(clock.Now()) // issue 2 follows: 0000, current
	c.expect("issue 2 awaiting", 2, "0006", "0000", "9000")
	events := b.events(c.g.ShortID)
	resent, _ := fhirgen.DispenseNotification(c.g, pharmacy, c.allItems("0001"), "0006", "")
	resent = fhirgen.Mutate(resent, func(m map[string]any) { m["identifier"].(map[string]any)["value"] = notification })
	if res := b.post(b.token(auth.RoleDispenser, pharmacy), resent); res.Status != 200 || b.events(c.g.ShortID) != events {
		t.Fatalf("resent notification: %d %s (events %d -> %d)", res.Status, res.Body, events, b.events(c.g.ShortID))
	}
	withdraw := fhirgen.WithdrawTask(c.g, pharmacy, notification, "QU")
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), withdraw); res.Status != 200 {
		t.Fatalf("withdraw naming no issue: %d %s", res.Status, res.Body)
	}
	c.expect("withdrawn", 1, "0003", "9000", "9000")
	if res, _ := c.dispense(pharmacy, 0, "0001", "0006"); res.Status != 200 {
		t.Fatalf("dispense again: %d %s", res.Status, res.Body)
	}
	c.tick(clock.Now())
	if res := c.claim(pharmacy, 0); res.Status != 200 {
		t.Fatalf("claim naming no issue: %d %s", res.Status, res.Body)
	}
	c.expect("claimed", 2, "0008", "0000", "9000")
}

// An issue that expired in its pharmacy's queue leaves no entry behind.
// Issue 1 expiring expires every later issue with it (Spine: record.py
// perform_instance_specific_updates, NEXTACTIVITY_EXPIRE), so the course is
// over: the queue is emptied, nothing is handed over, and the pharmacy is
// not told of a next issue. An issue 2 that expires in its queue (12 months
// after the prescription date) leaves no entry either.
func TestERDQueueAfterExpiredIssue(t *testing.T) {
	t.Run("issue 1", func(t *testing.T) {
		b, clock := erdBroker(t)
		pharmacy := newODS("FE")
		c := newCourse(t, b, clock, 3, 28, pharmacy)
		c.post()
		b.settle()
		c.tick(c.record().ExpiresAt) // issue 1 expires unreleased: the later issues with it
		c.expect("issue 1 expired", 3, "0004", "0004", "0004")
		if q, _ := b.readyQueue(context.Background(), pharmacy, 25); len(q) != 0 {
			t.Errorf("the pharmacy's queue still holds %+v", q)
		}
		if ids, _ := c.releaseNominated(pharmacy); len(ids) != 0 {
			t.Errorf("an expired course was handed over: %v", ids)
		}
	})
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("issue 2, nomination changed %v", moved), func(t *testing.T) {
			b, clock := erdBroker(t)
			pharmacy, other := newODS("FE"), newODS("FN")
			c := newCourse(t, b, clock, 3, 28, pharmacy)
			c.dispenseFirst(pharmacy)
			want := pharmacy
			if moved {
				want = other
				clock.Set(clock.Now().Add(time.Hour))
				res := b.do("PUT", "/api/v1/nominations/"+c.g.NHSNumber+"/P1", b.token(auth.RoleAdmin, "X26"),
					[]byte(`{"ods":"`+other+`"}`), "Content-Type", "application/json")
				if res.Status != 200 {
					t.Fatalf("nomination: %d %s", res.Status, res.Body)
				}
			}
			notes := make(chan *nats.Msg, 16)
			sub, err := b.App.NATS.Conn.ChanSubscribe(broker.SubjectNotifyDispenser+want+"."+broker.NotifyReady, notes)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			c.tick(c.availableAt(2))
			c.expect("issue 2 ready", 2, "0006", "0001", "9000")
			select {
			case m := <-notes:
				var n broker.Notification
				if json.Unmarshal(m.Data, &n) != nil || n.PrescriptionID != c.g.ShortID || n.Issue != 2 {
					t.Errorf("notification: %s", m.Data)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s was not told that issue 2 is ready", want)
			}
			ctx := context.Background()
			if q, _ := b.readyQueue(ctx, pharmacy, 25); moved && len(q) != 0 {
				t.Errorf("the old pharmacy's queue still holds %+v", q)
			}
			c.tick(c.start.AddDate(1, 0, 0)) // 12 months after the prescription date
			c.expect("issue 2 expired in the queue", 3, "0009", "0004", "0004")
			if q, _ := b.readyQueue(ctx, want, 25); len(q) != 0 {
				t.Errorf("%s's queue still holds %+v", want, q)
			}
			if ids, _ := c.releaseNominated(want); len(ids) != 0 {
				t.Errorf("an expired issue was handed over: %v", ids)
			}
		})
	}
}

// The dispenser holding an eRD issue is told when the prescriber marks it
// for cancellation (the later issues are cancelled in the same write).
func TestERDCancellationNotifiesHolder(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	c.releaseNominated(pharmacy)
	b.settle() // the release's own notification is out before listening
	notes := make(chan *nats.Msg, 16)
	sub, err := b.App.NATS.Conn.ChanSubscribe(broker.SubjectNotifyDispenser+pharmacy+"."+rx.EventCancel, notes)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	body, _ := fhirgen.Cancellation(c.g, c.g.ItemIDs[0], "0001")
	if _, code := rCode(b.post(b.token(auth.RolePrescriber, c.g.Sender), body)); code != string(rx.RPendingWith) {
		t.Fatalf("cancel: %s", code)
	}
	select {
	case m := <-notes:
		var n broker.Notification
		if json.Unmarshal(m.Data, &n) != nil || n.Event != rx.EventCancel || n.Issue != 1 || n.Status != rx.StatusWithDispenser {
			t.Errorf("notification %s: %s", m.Subject, m.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the holder was not told of the cancellation")
	}
}

// An eRD course with the issue numbers as dispensing systems send them to
// EPS (issue 10): the release answer names issue 1 as numberOfRepeatsIssued
// 0; the dispense notification of issue 1 carries basedOn
// numberOfRepeatsIssued 0 and UK Core numberOfPrescriptionsIssued 1 (and,
// as the regression suite sends it, its MedicationDispenses'
// numberOfRepeatsIssued 1, which EPS does not read), with no sender and the
// contained MedicationRequests' numberOfRepeatsAllowed a JSON string; its
// claim numberOfRepeatsIssued 0; issue 2 is released as 1 and returned as
// 1.
func TestERDIssueNumbersFromZero(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FZ")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	b.settle()
	releasedAs := func(want int) {
		t.Helper()
		res := b.release(pharmacy, "")
		if ids, _ := released(t, res); len(ids) != 1 ||
			!bytes.Contains(res.Body, []byte(fmt.Sprintf(`{"url":"numberOfRepeatsIssued","valueInteger":%d}`, want))) {
			t.Fatalf("release: %v, want numberOfRepeatsIssued %d: %s", ids, want, res.Body)
		}
	}
	releasedAs(0)

	body, _ := fhirgen.DispenseNotification(c.g, pharmacy, c.allItems("0001"), "0006", "")
	body = regressionShaped(fhirgen.ForIssue(body, 1, c.issues))
	body = fhirgen.Mutate(body, func(m map[string]any) {
		for _, e := range m["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			cs, _ := r["contained"].([]any)
			for _, x := range cs {
				if mr := x.(map[string]any); r["resourceType"] == "MedicationDispense" && mr["resourceType"] == "MedicationRequest" {
					mr["dispenseRequest"].(map[string]any)["numberOfRepeatsAllowed"] = "2"
				}
			}
		}
	})
	for _, want := range []string{
		`{"url":"numberOfRepeatsIssued","valueInteger":0}`, `{"url":"numberOfPrescriptionsIssued","valueUnsignedInt":1}`,
		`{"url":"numberOfRepeatsIssued","valueInteger":1}`, `"numberOfRepeatsAllowed":"2"`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("the notification has no %s", want)
		}
	}
	if res := b.post(b.token(auth.RoleDispenser, pharmacy), body); res.Status != 200 {
		t.Fatalf("dispense of issue 1: %d %s", res.Status, res.Body)
	}
	if st := c.statuses(); st[0] != "0006" {
		t.Fatalf("issue 1 dispensed: issues %v", st)
	}
	claim, _ := fhirgen.Claim(c.g, pharmacy, "")
	claim = fhirgen.ForIssue(claim, 1, c.issues)
	if !bytes.Contains(claim, []byte(`{"url":"numberOfRepeatsIssued","valueInteger":0}`)) {
		t.Fatal("the claim does not count from 0")
	}
	if res := b.do("POST", "/FHIR/R4/Claim", b.token(auth.RoleDispenser, pharmacy), claim); res.Status != 200 {
		t.Fatalf("claim of issue 1: %d %s", res.Status, res.Body)
	}
	if st := c.statuses(); st[0] != "0008" {
		t.Fatalf("issue 1 claimed: issues %v", st)
	}

	c.tick(c.availableAt(2))
	c.expect("issue 2 ready", 2, "0008", "0001", "9000")
	releasedAs(1)
	ret := fhirgen.ForIssue(regressionShaped(fhirgen.ReturnTask(c.g, pharmacy, "0003")), 2, c.issues)
	if !bytes.Contains(ret, []byte(`{"url":"numberOfRepeatsIssued","valueInteger":1}`)) {
		t.Fatal("the return does not count from 0")
	}
	if res := b.do("POST", "/FHIR/R4/Task", b.token(auth.RoleDispenser, pharmacy), ret); res.Status != 200 {
		t.Fatalf("return of issue 2: %d %s", res.Status, res.Body)
	}
	c.expect("issue 2 returned", 2, "0008", "0001", "9000")
}
