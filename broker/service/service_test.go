package service_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/memstore"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The services' unit tests run on the in-memory ports (memstore): no NATS.
// They drive Intake, Lifecycle and Scheduler with NHS example messages made
// fresh by fhirgen, and check what a user would notice: the answer (its
// FHIR error kind and EPS code), and the prescription's state and events
// after it.

const (
	prescriber = "A83008" // the example order's prescribing organisation
	pharmacy   = "FA565"  // its nominated dispenser
	otherPharm = "FCG71"
)

var (
	prescriberP = auth.Principal{Subject: "dr-1", ODS: prescriber, Role: auth.RolePrescriber}
	pharmacyP   = auth.Principal{Subject: "rx-1", ODS: pharmacy, Role: auth.RoleDispenser}
	otherP      = auth.Principal{Subject: "rx-2", ODS: otherPharm, Role: auth.RoleDispenser}
)

// env is the services over one memstore, with a clock tests move.
type env struct {
	t     *testing.T
	ctx   context.Context
	st    *memstore.Store
	in    *service.Intake
	life  *service.Lifecycle
	sched *service.Scheduler
	tmpl  *fhirgen.Template

	mu  sync.Mutex
	now time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, ctx: context.Background(), now: time.Now().UTC()}
	e.st = memstore.New(e.clock)
	e.life = service.NewLifecycle(e.st, e.st, zap.NewNop(), e.clock)
	e.in = service.NewIntake(e.st, e.st, nil, zap.NewNop(), e.clock)
	e.in.Lifecycle = e.life
	e.sched = service.NewScheduler(e.life, e.st, e.st, zap.NewNop(), e.clock)
	var err error
	if e.tmpl, err = fhirgen.NewTemplate(fhirgen.Order4Items); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// order makes a fresh order, nominated to pharmacy.
func (e *env) order() *fhirgen.Generated {
	e.t.Helper()
	g, err := e.tmpl.Order(fhirgen.Options{Now: e.clock()})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// accepted posts a fresh order and fails unless it is accepted.
func (e *env) accepted() *fhirgen.Generated {
	e.t.Helper()
	g := e.order()
	if _, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body); err != nil {
		e.t.Fatalf("order: %v", err)
	}
	return g
}

// released posts a fresh order and releases it to pharmacy.
func (e *env) released() *fhirgen.Generated {
	e.t.Helper()
	g := e.accepted()
	if _, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, g.ShortID, "release-"+g.ShortID, fhirgen.Release(pharmacy, g.ShortID)); err != nil {
		e.t.Fatalf("release: %v", err)
	}
	return g
}

// dispensed releases a fresh order and dispenses every item (0006).
func (e *env) dispensed() (*fhirgen.Generated, string) {
	e.t.Helper()
	g := e.released()
	body, id := fhirgen.DispenseNotification(g, pharmacy, allItems(g, "0001"), "0006", "")
	if _, err := e.in.ProcessMessage(e.ctx, pharmacyP, body); err != nil {
		e.t.Fatalf("dispense: %v", err)
	}
	return g, id
}

func allItems(g *fhirgen.Generated, status string) map[string]string {
	m := map[string]string{}
	for _, id := range g.ItemIDs {
		m[id] = status
	}
	return m
}

// current is the stored record of a prescription (nil when none).
func (e *env) current(id string) *rx.Prescription {
	e.t.Helper()
	cur, err := e.st.Current(e.ctx, id)
	if errors.Is(err, service.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return cur.Record
}

func (e *env) status(id string) rx.Status {
	if rec := e.current(id); rec != nil {
		return rec.Status
	}
	return ""
}

// wantError checks err's FHIR kind (its HTTP status) and the EPS code its
// OperationOutcome issue carries ("" for any code).
func wantError(t *testing.T, err error, kind fhir.Kind, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want kind %v %s", kind, code)
	}
	is := fhir.IssueFor(err)
	got := ""
	if is.Details != nil && len(is.Details.Coding) > 0 {
		got = is.Details.Coding[0].Code
	}
	if fhir.ErrorKind(err) != kind || (code != "" && got != code) {
		t.Fatalf("error kind %v code %s (%v), want kind %v code %s", fhir.ErrorKind(err), got, err, kind, code)
	}
}

var errDown = errors.New("store down")

// errLost is a write's answer lost after the store stored it.
var errLost = errors.Join(errors.New("no answer: timed out"), service.ErrUnresolved)

// ids are the short IDs of gs, in order.
func ids(gs []*fhirgen.Generated) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.ShortID)
	}
	return out
}

// releasedIDs are the IDs of a release's answer, in order.
func releasedIDs(rs []service.Released) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Record.ID)
	}
	return out
}

func TestIntakeOrders(t *testing.T) {
	t.Run("accepted: stored once and queued to its nominated dispenser", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		out, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		if err != nil || out.Resent || out.PrescriptionID != g.ShortID || out.Status != 0 {
			t.Fatalf("%+v, %v", out, err)
		}
		evs := e.st.Events(g.ShortID)
		if len(evs) != 1 || evs[0].Event != rx.EventOrder || !bytes.Equal(evs[0].Body, g.Body) || evs[0].MessageID != g.BundleID {
			t.Fatalf("events %+v, want the order as posted", evs)
		}
		if st := e.status(g.ShortID); st != rx.StatusToBeDispensed {
			t.Errorf("status %s, want 0001", st)
		}
		if q := e.st.Queue(pharmacy); len(q) != 1 || q[0] != g.ShortID {
			t.Errorf("queue %v", q)
		}
	})

	t.Run("the same order again: resent, nothing stored", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		out, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		if err != nil || !out.Resent {
			t.Fatalf("%+v, %v; want resent", out, err)
		}
		if n := e.st.Len(); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
	})

	t.Run("stored, but the store could not say so: 503 that says it may be stored; the resend is recognised", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		e.st.AfterWrite(func(string) error { return errLost })
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		e.st.AfterWrite(nil)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if d := fhir.IssueFor(err).Diagnostics; !strings.Contains(d, "may have been stored") {
			t.Errorf("diagnostics %q, want that it may have been stored", d)
		}
		out, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		if err != nil || !out.Resent {
			t.Fatalf("resend: %+v, %v; want resent", out, err)
		}
		if n := e.st.Len(); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
	})

	t.Run("another order with the same prescription ID: DUPLICATE_PRESCRIPTION_ID", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		dup, _ := e.tmpl.Order(fhirgen.Options{Now: e.clock(), ShortID: g.ShortID})
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, dup.Body)
		wantError(t, err, fhir.KindInvalid, fhir.CodeDuplicatePrescriptionID)
		if n := e.st.Len(); n != 1 {
			t.Errorf("%d events, want 1", n)
		}
	})

	t.Run("a dispenser may not order", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.in.ProcessMessage(e.ctx, pharmacyP, e.order().Body)
		wantError(t, err, fhir.KindForbidden, fhir.CodeAccessDenied)
		if n := e.st.Len(); n != 0 {
			t.Errorf("%d events stored", n)
		}
	})

	t.Run("the order's write conflicts: decided again from what is stored", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		dup, _ := e.tmpl.Order(fhirgen.Options{Now: e.clock(), ShortID: g.ShortID})
		once := true
		e.st.BeforeWrite(func(string) {
			if once { // another broker stores another order with the ID first
				once = false
				if _, err := e.in.ProcessMessage(e.ctx, prescriberP, dup.Body); err != nil {
					t.Errorf("the other order: %v", err)
				}
			}
		})
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		wantError(t, err, fhir.KindInvalid, fhir.CodeDuplicatePrescriptionID)
		if e.st.Conflicts() != 1 || e.current(g.ShortID).BundleID != dup.BundleID {
			t.Errorf("conflicts %d, stored %s; want 1 and the other order", e.st.Conflicts(), e.current(g.ShortID).BundleID)
		}
	})

	t.Run("an order after its cancellation is stored with the cancellation applied", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		cancel, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, cancel)
		wantError(t, err, fhir.KindInvalid, string(rx.RNotFound)) // kept for the order
		out, err := e.in.ProcessMessage(e.ctx, prescriberP, g.Body)
		if err != nil || out.Resent {
			t.Fatalf("%+v, %v", out, err)
		}
		rec := e.current(g.ShortID)
		if rec.IsEarlyCancellation() || rec.Items[0].Status != rx.ItemCancelled {
			t.Errorf("item 1 %s, want cancelled (0005)", rec.Items[0].Status)
		}
	})

	t.Run("nominated by the registry when the order names no performer", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		body := fhirgen.Mutate(g.Body, func(m map[string]any) { dropPerformers(m) })
		p := nomination.Set(nil, g.NHSNumber, nomination.Type("P1"), otherPharm, nomination.By{User: "admin", Org: "X26", Role: "admin"}, e.clock())
		if err := e.st.SetNominations(p); err != nil {
			t.Fatal(err)
		}
		if _, err := e.in.ProcessMessage(e.ctx, prescriberP, body); err != nil {
			t.Fatal(err)
		}
		if rec := e.current(g.ShortID); rec.Nominated != otherPharm || rec.NominationSource != rx.NominationFromRegistry {
			t.Errorf("nominated %q (%s), want %s from the registry", rec.Nominated, rec.NominationSource, otherPharm)
		}
	})

	t.Run("store unavailable: 503, nothing stored", func(t *testing.T) {
		e := newEnv(t)
		e.st.FailWrites(errDown)
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, e.order().Body)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if !errors.Is(err, errDown) {
			t.Errorf("the store's error is not kept in the chain: %v", err)
		}
		if n := e.st.Len(); n != 0 {
			t.Errorf("%d events stored", n)
		}
	})

	t.Run("too large to store with its record: 413", func(t *testing.T) {
		e := newEnv(t)
		e.st.SetMaxMessage(1000)
		_, err := e.in.ProcessMessage(e.ctx, prescriberP, e.order().Body)
		wantError(t, err, fhir.KindTooLarge, fhir.CodeTooLarge)
	})
}

// dropPerformers removes dispenseRequest.performer from every
// MedicationRequest of an order.
func dropPerformers(m map[string]any) {
	for _, en := range m["entry"].([]any) {
		r := en.(map[string]any)["resource"].(map[string]any)
		if r["resourceType"] == "MedicationRequest" {
			delete(r["dispenseRequest"].(map[string]any), "performer")
		}
	}
}

func TestLifecycle(t *testing.T) {
	t.Run("release by ID: with the dispenser, the order as posted; again by the holder: the same", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		rel, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, g.ShortID, "r1", fhirgen.Release(pharmacy, g.ShortID))
		if err != nil || !bytes.Equal(rel.Order, g.Body) || rel.Record.Status != rx.StatusWithDispenser || rel.Record.Dispenser != pharmacy {
			t.Fatalf("%+v, %v", rel, err)
		}
		if q := e.st.Queue(pharmacy); len(q) != 0 {
			t.Errorf("still queued: %v", q)
		}
		again, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, g.ShortID, "r2", fhirgen.Release(pharmacy, g.ShortID))
		if err != nil || !bytes.Equal(again.Order, g.Body) || e.st.Len() != 2 {
			t.Fatalf("retry by the holder: %v, %d events", err, e.st.Len())
		}
	})

	t.Run("release by ID of a prescription another dispenser holds", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		_, err := e.life.ReleaseByID(e.ctx, otherP, otherPharm, g.ShortID, "r", fhirgen.Release(otherPharm, g.ShortID))
		wantError(t, err, fhir.KindInvalid, fhir.CodePrescriptionWithAnother)
	})

	t.Run("release of an unknown ID: RESOURCE_NOT_FOUND", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, "ABC123-A83008-00001A", "r", nil)
		wantError(t, err, fhir.KindInvalid, fhir.CodeResourceNotFound)
	})

	t.Run("nominated release: the oldest first, at most max", func(t *testing.T) {
		e := newEnv(t)
		a, b, c := e.accepted(), e.accepted(), e.accepted()
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 2)
		if err != nil || len(out) != 2 || out[0].Record.ID != a.ShortID || out[1].Record.ID != b.ShortID {
			t.Fatalf("%v: %d released", err, len(out))
		}
		if q := e.st.Queue(pharmacy); len(q) != 1 || q[0] != c.ShortID {
			t.Errorf("queue %v, want [%s]", q, c.ShortID)
		}
		if out, err := e.life.ReleaseNominated(e.ctx, otherP, otherPharm, "n2", []byte("{}"), 25); err != nil || len(out) != 0 {
			t.Errorf("another dispenser's queue: %d, %v", len(out), err)
		}
	})

	t.Run("nominated release: an entry another release took first is passed over, the rest in queue order", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 8 {
			gs = append(gs, e.accepted())
		}
		taken := gs[1].ShortID
		var once atomic.Bool
		e.st.BeforeWrite(func(id string) {
			if id != taken || !once.CompareAndSwap(false, true) {
				return
			}
			// Another dispenser releases it by ID between our decision and
			// our write: our write conflicts and is decided again.
			if _, err := e.life.ReleaseByID(e.ctx, otherP, otherPharm, taken, "other", nil); err != nil {
				t.Errorf("the other release: %v", err)
			}
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 5)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range out {
			got = append(got, r.Record.ID)
		}
		want := []string{gs[0].ShortID, gs[2].ShortID, gs[3].ShortID, gs[4].ShortID, gs[5].ShortID}
		if !slices.Equal(got, want) {
			t.Errorf("released %v, want %v (oldest first, the taken one passed over)", got, want)
		}
		if q := e.st.Queue(pharmacy); !slices.Equal(q, []string{gs[6].ShortID, gs[7].ShortID}) {
			t.Errorf("queue left %v", q)
		}
		if rec := e.current(taken); rec.Dispenser != otherPharm {
			t.Errorf("the taken one is held by %q", rec.Dispenser)
		}
	})

	t.Run("nominated release: a write failing after others succeeded hands over every one released", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 6 {
			gs = append(gs, e.accepted())
		}
		failing := gs[2].ShortID
		e.st.BeforeWrite(func(id string) {
			if id != failing {
				return
			}
			// Once the two before it are written, the store fails: its
			// write and any not yet made fail.
			for e.status(gs[0].ShortID) != rx.StatusWithDispenser || e.status(gs[1].ShortID) != rx.StatusWithDispenser {
				runtime.Gosched()
			}
			e.st.FailWrites(errDown)
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.FailWrites(nil)
		if err != nil {
			t.Fatalf("released some, yet an error: %v", err)
		}
		var got, held []string
		for _, r := range out {
			got = append(got, r.Record.ID)
		}
		for _, g := range gs {
			if e.status(g.ShortID) == rx.StatusWithDispenser {
				held = append(held, g.ShortID)
			}
		}
		if !slices.Equal(got, held) || len(got) < 2 || got[0] != gs[0].ShortID || got[1] != gs[1].ShortID || slices.Contains(got, failing) {
			t.Errorf("handed over %v; released %v (every one released must be handed over, in queue order)", got, held)
		}
	})

	t.Run("nominated release: writes stored whose answer was lost are read back and handed over, in queue order", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 7 {
			gs = append(gs, e.accepted())
		}
		// Every write is stored, but its answer is lost (a timeout, a
		// lost connection): the outcome is unknown to the release.
		e.st.AfterWrite(func(string) error { return errLost })
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 5)
		e.st.AfterWrite(nil)
		if err != nil {
			t.Fatalf("released five (stored), yet an error: %v", err)
		}
		want := ids(gs[:5])
		if got := releasedIDs(out); !slices.Equal(got, want) {
			t.Errorf("handed over %v, want %v (every one released, oldest first)", got, want)
		}
		for i, r := range out {
			if !bytes.Equal(r.Order, gs[i].Body) || r.Record.Status != rx.StatusWithDispenser {
				t.Errorf("%s: order bytes or record not as released (%s)", r.Record.ID, r.Record.Status)
			}
		}
		// The next release gets the two left, not those five again.
		next, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n2", []byte("{}"), 5)
		if got := releasedIDs(next); err != nil || !slices.Equal(got, ids(gs[5:])) {
			t.Errorf("next release: %v, %v", got, err)
		}
	})

	t.Run("nominated release: some writes stored without an answer, others refused: those stored are handed over", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 5 {
			gs = append(gs, e.accepted())
		}
		lost := map[string]bool{gs[1].ShortID: true, gs[3].ShortID: true}
		e.st.BeforeWrite(func(id string) {
			if id != gs[4].ShortID {
				return
			}
			// Once the four before it are stored, the store refuses its
			// write: nothing of it is stored.
			for _, g := range gs[:4] {
				for e.status(g.ShortID) != rx.StatusWithDispenser {
					runtime.Gosched()
				}
			}
			e.st.FailWrites(errDown)
		})
		e.st.AfterWrite(func(id string) error {
			if lost[id] {
				return errLost
			}
			return nil
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.BeforeWrite(nil)
		e.st.AfterWrite(nil)
		e.st.FailWrites(nil)
		if err != nil {
			t.Fatalf("released some, yet an error: %v", err)
		}
		var held []string
		for _, g := range gs {
			if e.status(g.ShortID) == rx.StatusWithDispenser {
				held = append(held, g.ShortID)
			}
		}
		got := releasedIDs(out)
		if !slices.Equal(got, held) || !slices.Equal(got, ids(gs[:4])) {
			t.Errorf("handed over %v; released %v (every one released must be handed over, in queue order)", got, held)
		}
	})

	t.Run("nominated release: writes without an answer read back once the store answers again", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 7 {
			gs = append(gs, e.accepted())
		}
		// The five writes are stored without an answer; then the store is
		// lost for one read (the read back's first): it is tried again.
		var stored atomic.Int32
		e.st.AfterWrite(func(string) error {
			if stored.Add(1) == 5 {
				e.st.FailNextReads(errDown, 1)
			}
			return errLost
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 5)
		e.st.AfterWrite(nil)
		if got := releasedIDs(out); err != nil || !slices.Equal(got, ids(gs[:5])) {
			t.Errorf("handed over %v, %v; want %v", got, err, ids(gs[:5]))
		}
	})

	t.Run("nominated release: writes without an answer that cannot be read back: 503, and its retry hands over what it released", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 7 {
			gs = append(gs, e.accepted())
		}
		// Each write is stored, its answer lost, and the store then cannot
		// be read (for longer than the release tries): the release cannot
		// learn what it did.
		e.life.ReadBackFor = time.Millisecond
		e.st.AfterWrite(func(string) error {
			e.st.FailReads(errDown)
			return errLost
		})
		_, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "req-1", []byte("{}"), 5)
		e.st.AfterWrite(nil)
		e.st.FailReads(nil)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if !errors.Is(err, service.ErrReleaseUnresolved) {
			t.Errorf("error %v, want ErrReleaseUnresolved", err)
		}
		var held []string
		for _, g := range gs {
			if e.status(g.ShortID) == rx.StatusWithDispenser {
				held = append(held, g.ShortID)
			}
		}
		if len(held) == 0 {
			t.Fatal("nothing stored: the test does not test a lost answer")
		}
		// Another user's request with the same ID does not get them.
		other := auth.Principal{Subject: "rx-9", ODS: pharmacy, Role: auth.RoleDispenser}
		if got, err := e.life.ReleaseNominated(e.ctx, other, pharmacy, "req-1", []byte("{}"), 25); err != nil ||
			slices.ContainsFunc(releasedIDs(got), func(id string) bool { return slices.Contains(held, id) }) {
			t.Errorf("another user's release: %v, %v (held %v)", releasedIDs(got), err, held)
		}
		// The retry (same X-Request-ID, same user) gets exactly those.
		again, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "req-1", []byte("{}"), 5)
		if got := releasedIDs(again); err != nil || !slices.Equal(got, held) {
			t.Errorf("retry handed over %v, %v; released to it %v", got, err, held)
		}
	})

	t.Run("nominated release: its own stored write answered as a lost compare-and-set: decided again, it is handed over", func(t *testing.T) {
		e := newEnv(t)
		var gs []*fhirgen.Generated
		for range 3 {
			gs = append(gs, e.accepted())
		}
		// The write of the second is stored, but the store answers it as
		// a conflict (a resend after a leader change meeting "wrong last
		// sequence"): the release reads it again and finds it released by
		// itself.
		var once atomic.Bool
		e.st.AfterWrite(func(id string) error {
			if id == gs[1].ShortID && once.CompareAndSwap(false, true) {
				return service.ErrConflict
			}
			return nil
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.AfterWrite(nil)
		if !once.Load() {
			t.Fatal("no write answered as a conflict: the test does not test it")
		}
		if got := releasedIDs(out); err != nil || !slices.Equal(got, ids(gs)) {
			t.Errorf("handed over %v, %v; want every one it released, %v", got, err, ids(gs))
		}
		if evs := e.st.Events(gs[1].ShortID); len(evs) != 2 {
			t.Errorf("%d events of the prescription, want 2 (order, one release)", len(evs))
		}
		// Another request of the same user is not handed it.
		if again, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n2", []byte("{}"), 25); err != nil || len(again) != 0 {
			t.Errorf("another request: %v, %v; want nothing", releasedIDs(again), err)
		}
	})

	t.Run("nominated release: its own stored write answered as a conflict, then read from a lagging replica that has no such prescription: read back, handed over", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		var once atomic.Bool
		e.st.AfterWrite(func(string) error {
			if once.CompareAndSwap(false, true) {
				// The next read (the compare-and-set's) is answered by a
				// replica that has not caught up: nothing stored there.
				e.st.FailNextReads(service.ErrNotFound, 1)
				return service.ErrConflict
			}
			return nil
		})
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.AfterWrite(nil)
		if got := releasedIDs(out); err != nil || !slices.Equal(got, []string{g.ShortID}) {
			t.Errorf("handed over %v, %v; want %s, which it released", got, err, g.ShortID)
		}
		if st := e.status(g.ShortID); st != rx.StatusWithDispenser {
			t.Errorf("status %s, want with dispenser", st)
		}
	})

	t.Run("nominated release: its own stored write answered as a conflict, then read as before it until the compare-and-sets run out: not passed over; 503, and its retry hands it over", func(t *testing.T) {
		e := newEnv(t)
		a, g := e.accepted(), e.accepted()
		evs := e.st.Events(g.ShortID)
		before := evs[len(evs)-1].Seq
		// g's release is stored and answered as a conflict; from then on
		// g reads as it was before (a leader cut off from its majority
		// answers until it steps down): every decision again conflicts.
		var once atomic.Bool
		e.st.AfterWrite(func(id string) error {
			if id == g.ShortID && once.CompareAndSwap(false, true) {
				e.st.ReadAsOf(id, before)
				return service.ErrConflict
			}
			return nil
		})
		e.life.ReadBackFor = time.Millisecond
		_, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.AfterWrite(nil)
		e.st.ReadAsOf(g.ShortID, 0)
		if !once.Load() {
			t.Fatal("no write answered as a conflict: the test does not test it")
		}
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if !errors.Is(err, service.ErrReleaseUnresolved) {
			t.Errorf("error %v, want ErrReleaseUnresolved (not a 200 without %s, which it released)", err, g.ShortID)
		}
		if st := e.status(g.ShortID); st != rx.StatusWithDispenser {
			t.Fatalf("status %s, want with dispenser: the test does not test a stored write", st)
		}
		again, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		if got := releasedIDs(again); err != nil || !slices.Equal(got, []string{a.ShortID, g.ShortID}) {
			t.Errorf("retry handed over %v, %v; want %v, both released to it", got, err, []string{a.ShortID, g.ShortID})
		}
	})

	t.Run("nominated release: queues that cannot catch up: 503, nothing released", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		e.st.FailReads(errDown)
		_, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n1", []byte("{}"), 25)
		e.st.FailReads(nil)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if st := e.status(g.ShortID); st != rx.StatusToBeDispensed {
			t.Errorf("status %s", st)
		}
	})

	t.Run("a retried release whose answer was lost: what that request released, to that user only", func(t *testing.T) {
		e := newEnv(t)
		since := e.clock()
		a, b := e.accepted(), e.accepted()
		out, err := e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "req-1", []byte("{}"), 25)
		if err != nil || len(out) != 2 {
			t.Fatalf("%d released, %v", len(out), err)
		}
		again, err := e.life.ReleasedUnder(e.ctx, pharmacyP, pharmacy, "req-1", since)
		// In queue order, as the first answer (the writes were made
		// together: the log may hold them in another order).
		if err != nil || len(again) != 2 || again[0].Record.ID != a.ShortID || again[1].Record.ID != b.ShortID ||
			!bytes.Equal(again[0].Order, a.Body) {
			t.Fatalf("%d handed over again, %v", len(again), err)
		}
		other := auth.Principal{Subject: "rx-9", ODS: pharmacy, Role: auth.RoleDispenser}
		if got, err := e.life.ReleasedUnder(e.ctx, other, pharmacy, "req-1", since); err != nil || len(got) != 0 {
			t.Errorf("another user's request with the same X-Request-ID: %d, %v", len(got), err)
		}
		e.advance(service.AbandonAfter + time.Hour)
		if got, err := e.life.ReleasedUnder(e.ctx, pharmacyP, pharmacy, "req-1", e.clock()); err != nil || len(got) != 0 {
			t.Errorf("a reservation made after those releases: %d, %v", len(got), err)
		}
	})

	t.Run("return: back to 0001, not nominated", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		task, err := fhir.DecodeTaskRequest(fhirgen.ReturnTask(g, pharmacy, "0003"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.life.Task(e.ctx, pharmacyP, task, nil); err != nil {
			t.Fatal(err)
		}
		if rec := e.current(g.ShortID); rec.Status != rx.StatusToBeDispensed || rec.Dispenser != "" || rec.Nominated != "" {
			t.Errorf("after return: %s dispenser %q nominated %q", rec.Status, rec.Dispenser, rec.Nominated)
		}
	})

	t.Run("return by a dispenser that does not hold it", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		task, _ := fhir.DecodeTaskRequest(fhirgen.ReturnTask(g, otherPharm, "0003"))
		err := e.life.Task(e.ctx, otherP, task, nil)
		wantError(t, err, fhir.KindInvalid, fhir.CodeInvalidStateTransition)
		if st := e.status(g.ShortID); st != rx.StatusWithDispenser {
			t.Errorf("status %s", st)
		}
	})

	t.Run("dispense, the same notification again, withdraw", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		body, id := fhirgen.DispenseNotification(g, pharmacy, allItems(g, "0001"), "0006", "")
		if _, err := e.in.ProcessMessage(e.ctx, pharmacyP, body); err != nil {
			t.Fatal(err)
		}
		if st := e.status(g.ShortID); st != rx.StatusDispensed {
			t.Fatalf("status %s, want 0006", st)
		}
		n := e.st.Len()
		if _, err := e.in.ProcessMessage(e.ctx, pharmacyP, body); err != nil || e.st.Len() != n {
			t.Fatalf("the same notification again: %v, %d events (was %d)", err, e.st.Len(), n)
		}
		task, err := fhir.DecodeTaskRequest(fhirgen.WithdrawTask(g, pharmacy, id, "QU"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.life.Task(e.ctx, pharmacyP, task, nil); err != nil {
			t.Fatal(err)
		}
		if st := e.status(g.ShortID); st != rx.StatusWithDispenser {
			t.Errorf("after withdraw: %s, want 0002", st)
		}
	})

	t.Run("claim, the same claim again", func(t *testing.T) {
		e := newEnv(t)
		g, _ := e.dispensed()
		body, _ := fhirgen.Claim(g, pharmacy, "")
		c, err := fhir.DecodeClaim(body)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.life.Claim(e.ctx, pharmacyP, c, body); err != nil {
			t.Fatal(err)
		}
		if st := e.status(g.ShortID); st != rx.StatusClaimed {
			t.Fatalf("status %s, want 0008", st)
		}
		n := e.st.Len()
		if err := e.life.Claim(e.ctx, pharmacyP, c, body); err != nil || e.st.Len() != n {
			t.Errorf("the same claim again: %v, %d events (was %d)", err, e.st.Len(), n)
		}
	})

	t.Run("cancel: R-0001 with the response Bundle; unknown: R-0008", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		body, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
		out, err := e.in.ProcessMessage(e.ctx, prescriberP, body)
		if err != nil || out.Status != 0 || !bytes.Contains(out.Body, []byte(rx.RCancelled)) {
			t.Fatalf("%+v, %v", out, err)
		}
		if it := e.current(g.ShortID).Items[0]; it.Status != rx.ItemCancelled {
			t.Errorf("item %s, want 0005", it.Status)
		}
		unknown := e.order()
		body, _ = fhirgen.Cancellation(unknown, unknown.ItemIDs[0], "0001")
		_, err = e.in.ProcessMessage(e.ctx, prescriberP, body)
		wantError(t, err, fhir.KindInvalid, string(rx.RNotFound))
	})

	t.Run("a conflicting write is decided again: the other dispenser got it first", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		once := true
		e.st.BeforeWrite(func(string) {
			if once {
				once = false
				if _, err := e.life.ReleaseByID(e.ctx, otherP, otherPharm, g.ShortID, "other", nil); err != nil {
					t.Errorf("the other release: %v", err)
				}
			}
		})
		_, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, g.ShortID, "mine", nil)
		wantError(t, err, fhir.KindInvalid, fhir.CodePrescriptionWithAnother)
		if rec := e.current(g.ShortID); e.st.Conflicts() != 1 || rec.Dispenser != otherPharm {
			t.Errorf("conflicts %d, held by %s; want 1 and %s", e.st.Conflicts(), rec.Dispenser, otherPharm)
		}
	})

	t.Run("a prescription changing on every attempt: 503, changing too often", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		inHook := false
		e.st.BeforeWrite(func(id string) {
			if inHook {
				return
			}
			inHook = true
			defer func() { inHook = false }()
			// Another writer gets there first every time.
			if _, err := e.st.Update(e.ctx, id, func(cur *service.Event) (*service.Write, error) {
				return &service.Write{Event: "touch", MessageID: "touch", Record: cur.Record}, nil
			}); err != nil {
				t.Error(err)
			}
		})
		task, _ := fhir.DecodeTaskRequest(fhirgen.ReturnTask(g, pharmacy, "0003"))
		err := e.life.Task(e.ctx, pharmacyP, task, nil)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if e.st.Conflicts() != service.MaxAttempts || e.status(g.ShortID) != rx.StatusWithDispenser {
			t.Errorf("conflicts %d, status %s; want %d and 0002", e.st.Conflicts(), e.status(g.ShortID), service.MaxAttempts)
		}
	})

	t.Run("store unavailable: 503, nothing changed", func(t *testing.T) {
		e := newEnv(t)
		g := e.released()
		n := e.st.Len()
		e.st.FailReads(errDown)
		_, err := e.life.ReleaseByID(e.ctx, pharmacyP, pharmacy, g.ShortID, "r", nil)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		e.st.FailReads(nil)
		e.st.FailWrites(errDown)
		body, _ := fhirgen.DispenseNotification(g, pharmacy, allItems(g, "0001"), "0006", "")
		_, err = e.in.ProcessMessage(e.ctx, pharmacyP, body)
		wantError(t, err, fhir.KindUnavailable, fhir.CodeServiceUnavailable)
		if !errors.Is(err, errDown) {
			t.Errorf("the store's error is not kept in the chain: %v", err)
		}
		_, err = e.life.ReleaseNominated(e.ctx, pharmacyP, pharmacy, "n", nil, 25)
		if err != nil {
			t.Errorf("nominated release of an empty queue while writes fail: %v", err)
		}
		if e.st.Len() != n || e.status(g.ShortID) != rx.StatusWithDispenser {
			t.Errorf("changed: %d events (was %d), status %s", e.st.Len(), n, e.status(g.ShortID))
		}
	})

	t.Run("a client gone after the decision: the write completes", func(t *testing.T) {
		e := newEnv(t)
		g := e.accepted()
		ctx, cancel := context.WithCancel(e.ctx)
		e.st.BeforeWrite(func(string) { cancel() })
		if _, err := e.life.ReleaseByID(ctx, pharmacyP, pharmacy, g.ShortID, "r", nil); err != nil {
			t.Fatal(err)
		}
		if st := e.status(g.ShortID); st != rx.StatusWithDispenser {
			t.Errorf("status %s, want 0002", st)
		}
	})
}

func TestScheduler(t *testing.T) {
	e := newEnv(t)
	// Noon today, so that the steps below (a day and an hour, ...) fall
	// on the days they name whatever the time the test runs.
	e.mu.Lock()
	e.now = time.Date(e.now.Year(), e.now.Month(), e.now.Day(), 12, 0, 0, 0, time.UTC)
	e.mu.Unlock()
	today := e.clock().Format(time.DateOnly)
	later := e.order()
	start := e.clock().AddDate(0, 0, 10).Format(time.DateOnly)
	body := bytes.ReplaceAll(later.Body, []byte(`"start": "`+today+`"`), []byte(`"start": "`+start+`"`))
	if _, err := e.in.ProcessMessage(e.ctx, prescriberP, body); err != nil {
		t.Fatal(err)
	}
	plain := e.accepted()
	if st := e.status(later.ShortID); st != rx.StatusFuture {
		t.Fatalf("post-dated: %s", st)
	}
	steps := []struct {
		name    string
		advance time.Duration
		applied int
		want    map[string]rx.Status
		queue   []string
	}{
		{"nothing due yet", 0, 0, map[string]rx.Status{later.ShortID: rx.StatusFuture}, []string{plain.ShortID}},
		{"the day before its start", 9*24*time.Hour + time.Hour, 0, map[string]rx.Status{later.ShortID: rx.StatusFuture}, []string{plain.ShortID}},
		{"its start date: ready and queued", 24 * time.Hour, 1, map[string]rx.Status{later.ShortID: rx.StatusToBeDispensed}, []string{plain.ShortID, later.ShortID}},
		{"a second pass applies nothing", 0, 0, nil, []string{plain.ShortID, later.ShortID}},
		{"past the first one's validity: expired, out of the queue", 6*31*24*time.Hour - 10*24*time.Hour, 1,
			map[string]rx.Status{plain.ShortID: rx.StatusExpired, later.ShortID: rx.StatusToBeDispensed}, []string{later.ShortID}},
	}
	for _, s := range steps {
		e.advance(s.advance)
		n, err := e.sched.RunOnce(e.ctx)
		if err != nil || n != s.applied {
			t.Fatalf("%s: %d applied (%v), want %d", s.name, n, err, s.applied)
		}
		for id, want := range s.want {
			if st := e.status(id); st != want {
				t.Errorf("%s: %s is %s, want %s", s.name, id, st, want)
			}
		}
		if q := e.st.Queue(pharmacy); !equal(q, s.queue) {
			t.Errorf("%s: queue %v, want %v", s.name, q, s.queue)
		}
	}

	t.Run("store unavailable: the pass reports it and applies nothing", func(t *testing.T) {
		e := newEnv(t)
		g := e.order()
		body := bytes.ReplaceAll(g.Body, []byte(`"start": "`+today+`"`), []byte(`"start": "`+start+`"`))
		if _, err := e.in.ProcessMessage(e.ctx, prescriberP, body); err != nil {
			t.Fatal(err)
		}
		e.advance(11 * 24 * time.Hour)
		e.st.FailWrites(errDown)
		n, err := e.sched.RunOnce(e.ctx)
		if n != 0 || fhir.ErrorKind(err) != fhir.KindUnavailable || !errors.Is(err, errDown) {
			t.Fatalf("%d applied, %v; want 0 and the store's error", n, err)
		}
		e.st.FailWrites(nil)
		if n, err := e.sched.RunOnce(e.ctx); n != 1 || err != nil {
			t.Errorf("the next pass: %d applied (%v), want 1", n, err)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// staleIndex is a due index that also lists prescriptions the event log
// does not have (an index entry gone stale).
type staleIndex struct {
	service.DueIndex
	extra []string
}

func (s staleIndex) Due(now time.Time) []string { return append(s.extra, s.DueIndex.Due(now)...) }

// A prescription the index says is due but the log does not have is
// passed over (rx.NotFound, a 400 RESOURCE_NOT_FOUND, is not an error of
// the pass): the due one beside it is applied and the pass reports no
// error. A failure of the store still is one.
func TestSchedulerPassesOverUnknownPrescriptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		extra   []string
		fail    error
		applied int
		wantErr bool
	}{
		{"only known", nil, nil, 1, false},
		{"one unknown beside it", []string{"ABCDEF-A83008-00000X"}, nil, 1, false},
		{"two unknown", []string{"ABCDEF-A83008-00000X", "ABCDEF-A83008-00001X"}, nil, 1, false},
		{"store down", []string{"ABCDEF-A83008-00000X"}, errDown, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			sched := service.NewScheduler(e.life, e.st, staleIndex{e.st, tc.extra}, zap.NewNop(), e.clock)
			g := e.accepted()
			e.advance(6 * 31 * 24 * time.Hour) // past its validity: expiry due
			e.st.FailWrites(tc.fail)
			n, err := sched.RunOnce(e.ctx)
			if n != tc.applied || (err != nil) != tc.wantErr {
				t.Fatalf("%d applied (%v), want %d (error %v)", n, err, tc.applied, tc.wantErr)
			}
			if want := map[bool]rx.Status{true: rx.StatusToBeDispensed, false: rx.StatusExpired}[tc.wantErr]; e.status(g.ShortID) != want {
				t.Errorf("%s is %s, want %s", g.ShortID, e.status(g.ShortID), want)
			}
		})
	}
}
