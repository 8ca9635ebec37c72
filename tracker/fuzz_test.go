package tracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// fzNow is the clock of the fuzz targets.
var fzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// fzRecords returns real prescription records: a new order, the same
// released and partly dispensed, with a pending cancellation, and a repeat
// dispensing prescription of three issues.
func fzRecords(f *testing.F) []*rx.Prescription {
	f.Helper()
	tpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		f.Fatal(err)
	}
	g, err := tpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565", Now: fzNow})
	if err != nil {
		f.Fatal(err)
	}
	order := func(body []byte) *fhir.Order {
		m, err := fhir.DecodeMessage(body)
		if err != nil {
			f.Fatal(err)
		}
		o, err := m.Order(fzNow)
		if err != nil {
			f.Fatal(err)
		}
		return o
	}
	by, disp := rx.Actor{User: "u1", Org: "A83008"}, rx.Actor{User: "d1", Org: "FA565"}
	created := rx.Create(order(g.Body).RxOrder(), by, fzNow)
	released, err := rx.Release(created, "FA565", disp, "m1", true, fzNow)
	if err != nil {
		f.Fatal(err)
	}
	dispensed, err := rx.Dispense(released, "FA565", disp, rx.DispenseInput{ID: "n1",
		Items: map[string]rx.ItemStatus{g.ItemIDs[0]: "0001", g.ItemIDs[1]: "0003"}, Status: "0003",
		Lines: []rx.DispensedLine{{LineItem: g.ItemIDs[0], Status: "0001", Quantity: 2, Unit: "tablet"}}}, fzNow)
	if err != nil {
		f.Fatal(err)
	}
	pending, _ := rx.Cancel(dispensed, by, rx.CancelInput{MessageID: "c1", NHSNumber: g.NHSNumber, LineItemID: g.ItemIDs[2], Reason: "0001"}, fzNow)
	if pending == nil {
		pending = dispensed
	}
	erd := rx.Create(order(fhirgen.RepeatDispensing(g.Body, 2, 28, fzNow)).RxOrder(), by, fzNow)
	return []*rx.Prescription{created, released, dispensed, pending, erd}
}

// FuzzReadSnapshot reads fuzzed tracker index snapshots (DATA_DIR/tracker/
// index.gob: a file a crash, a full disk or an operator may have damaged):
// ReadSnapshot refuses what it cannot read, and what it reads survives a
// write and read again unchanged.
func FuzzReadSnapshot(f *testing.F) {
	ix := NewIndex()
	ix.SetOrigin("EPS_EVENTS@2026-06-01T12:00:00Z")
	for i, p := range fzRecords(f) {
		ix.Apply(uint64(i+1), p)
	}
	var buf bytes.Buffer
	if err := ix.WriteSnapshot(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add(buf.Bytes()[:buf.Len()/2])
	buf.Reset()
	if err := NewIndex().WriteSnapshot(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		ix := NewIndex()
		if err := ix.ReadSnapshot(bytes.NewReader(data)); err != nil {
			if ix.Len() != 0 || ix.Applied() != 0 {
				t.Fatalf("a refused snapshot changed the index: %v", err)
			}
			return
		}
		var again bytes.Buffer
		if err := ix.WriteSnapshot(&again); err != nil {
			t.Fatal(err)
		}
		ix2 := NewIndex()
		if err := ix2.ReadSnapshot(&again); err != nil {
			t.Fatalf("a snapshot the index wrote does not read back: %v", err)
		}
		if ix2.Len() != ix.Len() || ix2.Applied() != ix.Applied() || ix2.Origin() != ix.Origin() {
			t.Fatalf("round trip: %d entries at %d of %q, want %d at %d of %q",
				ix2.Len(), ix2.Applied(), ix2.Origin(), ix.Len(), ix.Applied(), ix.Origin())
		}
		for id, e := range ix.byID {
			e2, ok := ix2.Get(id)
			if !ok || e2.Status != e.Status || e2.NHSNumber != e.NHSNumber || e2.Prescriber != e.Prescriber ||
				e2.PrescOrg != e.PrescOrg || e2.Nominated != e.Nominated || e2.Dispenser != e.Dispenser ||
				e2.Seq != e.Seq || !e2.DueAt.Equal(e.DueAt) || !e2.Created.Equal(e.Created) {
				t.Fatalf("round trip of %q: %+v, want %+v", id, e2, *e)
			}
		}
		ix.Due(fzNow)
	})
}

// checkTransition holds a transition's answer to its promises: a refusal is
// a complete *rx.Error, and a new record encodes as JSON.
func checkTransition(t *testing.T, what string, p *rx.Prescription, err error) {
	t.Helper()
	if err != nil {
		var fe *rx.Error
		if !errors.As(err, &fe) || fe.Code == "" || fe.Message == "" {
			t.Fatalf("%s: %v (%T), want a *rx.Error with a code and words", what, err, err)
		}
		return
	}
	if p == nil {
		t.Fatalf("%s: no record and no error", what)
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// FuzzRecordJSON decodes fuzzed prescription records as the projections read
// them from the event log (the Eps-Record header) and runs everything that
// reads a record: the index, the scheduler, the tracker's answers for every
// issue, and every transition, which must refuse with a *rx.Error or give
// a record, never panic.
func FuzzRecordJSON(f *testing.F) {
	for _, p := range fzRecords(f) {
		b, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "FA565")
	}
	f.Add([]byte(`{}`), "")
	f.Add([]byte(`{"id":"X","history":[{"issue":3}],"otherIssues":[{"issue":3},{"issue":3}],"issue":-1}`), "FA565")
	f.Add([]byte(`{"id":"Y","status":"0002","dispenser":"FA565","dispenses":[{"id":"n"},{"id":"n","withdrawn":true}],"items":[{"id":"a"}]}`), "FA565")
	f.Add([]byte(`{"id":"Z","repeatsAllowed":-5,"supplyDays":-28,"therapyType":"continuous-repeat-dispensing","otherIssues":[{"issue":0,"status":"9000"}]}`), "")
	f.Fuzz(func(t *testing.T, data []byte, ods string) {
		var rec rx.Prescription
		if json.Unmarshal(data, &rec) != nil {
			return
		}
		ix := NewIndex()
		ix.Apply(1, &rec)
		ix.Due(fzNow.AddDate(2, 0, 0))
		_ = rec.Ready()
		_ = rx.Scheduled(&rec, fzNow)
		_ = rx.NextDue(&rec)
		_ = rx.ApplyScheduled(&rec, fzNow.AddDate(2, 0, 0), &rx.NominationChange{})
		if b := SearchBundle([]SearchResult{{Record: &rec}}); !json.Valid(b) {
			t.Fatalf("search bundle is not JSON: %s", b)
		}
		for n := 0; n <= rec.IssueCount()+1; n++ {
			if at, ok := rec.AtIssue(n); ok {
				if b := DetailBundle(at, nil); !json.Valid(b) {
					t.Fatalf("detail bundle of issue %d is not JSON: %s", n, b)
				}
			}
		}
		by := rx.Actor{User: "d1", Org: ods}
		p, err := rx.Release(&rec, ods, by, "m1", true, fzNow)
		checkTransition(t, "Release", p, err)
		p, err = rx.Return(&rec, ods, by, "m2", fzNow)
		checkTransition(t, "Return", p, err)
		var notif string
		if len(rec.Dispenses) > 0 {
			notif = rec.Dispenses[len(rec.Dispenses)-1].ID
		}
		p, err = rx.Withdraw(&rec, ods, by, notif, "m3", fzNow)
		checkTransition(t, "Withdraw", p, err)
		items := map[string]rx.ItemStatus{}
		for i, it := range rec.Items {
			items[it.ID] = []rx.ItemStatus{"0001", "0002", "0003", "0004"}[i%4]
		}
		p, err = rx.Dispense(&rec, ods, by, rx.DispenseInput{ID: "n2", Items: items, Status: "0006"}, fzNow)
		checkTransition(t, "Dispense", p, err)
		p, err = rx.Claim(&rec, ods, by, "c1", "", fzNow)
		checkTransition(t, "Claim", p, err)
		line := ""
		if len(rec.Items) > 0 {
			line = rec.Items[0].ID
		}
		if p, _ := rx.Cancel(&rec, by, rx.CancelInput{MessageID: "x1", NHSNumber: rec.NHSNumber, LineItemID: line, Reason: "0001"}, fzNow); p != nil {
			checkTransition(t, "Cancel", p, nil)
		}
	})
}
