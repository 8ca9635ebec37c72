package tracker

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"

	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

var (
	q0       = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	gpActor  = rx.Actor{User: "gp", Org: "A83008"}
	fa565    = rx.Actor{User: "pharmacist", Org: "FA565"}
	qItems   = []rx.OrderItem{{ID: "i1"}, {ID: "i2"}}
	noFollow *rx.NominationChange
)

// qorder is a new prescription id of the given therapy, nominated to
// performer ("" : not nominated), dated start, arriving at q0.
func qorder(id, performer string, start time.Time, therapy string, issues int) *rx.Prescription {
	site := "P1"
	if performer == "" {
		site = "0004"
	}
	o := &rx.Order{PrescriptionID: id, BundleID: "b-" + id, NHSNumber: "9449305552", Sender: "A83008",
		SiteType: site, Performer: performer, ValidityStart: start, TherapyType: therapy, Items: qItems}
	if therapy == rx.TherapyRepeatDispensing {
		o.RepeatsAllowed = issues - 1
	}
	return rx.Create(o, gpActor, q0)
}

func qmust(p *rx.Prescription, err error) *rx.Prescription {
	if err != nil {
		panic(err)
	}
	return p
}

// queueIDs is a dispenser's queue as "ID/issue ...", oldest first.
func queueIDs(ix *Index, ods string) string {
	var s []string
	for _, e := range ix.ReadyQueue(ods, 0, 1000) {
		s = append(s, fmt.Sprintf("%s/%d", e.ID, e.Issue))
	}
	return strings.Join(s, " ")
}

// TestReadyQueues applies events of real transitions (tracker/rx) to an
// index, and checks after each one every dispenser's queue, and that the
// event is said to have entered a queue (EnteredQueue, from the event
// alone: what the notifications use) exactly when the queues put the
// prescription at the back of one.
func TestReadyQueues(t *testing.T) {
	type step struct {
		name  string
		event string // "": the record's last history entry's type
		rec   func(cur map[string]*rx.Prescription) *rx.Prescription
		want  map[string]string // dispenser -> queue
	}
	at := func(d int) time.Time { return q0.Add(time.Duration(d) * time.Hour) }
	cases := []struct {
		name  string
		steps []step
	}{
		{"oldest first; released, cancelled, returned and expired leave; a partial cancellation keeps the place", []step{
			{"order A", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("A", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "A/0"}},
			{"order B", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("B", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "A/0 B/0"}},
			{"order C to another dispenser", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("C", "FCG71", q0, rx.TherapyAcute, 1)
			}, map[string]string{"FA565": "A/0 B/0", "FCG71": "C/0"}},
			{"order N not nominated", "", func(map[string]*rx.Prescription) *rx.Prescription { return qorder("N", "", q0, rx.TherapyAcute, 1) },
				map[string]string{"FA565": "A/0 B/0", "FCG71": "C/0"}},
			{"order D", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("D", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "A/0 B/0 D/0", "FCG71": "C/0"}},
			{"one item of A cancelled: A keeps its place", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				n, code := rx.Cancel(c["A"], gpActor, rx.CancelInput{MessageID: "c1", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}, at(1))
				if code != rx.RCancelled || n.Status != rx.StatusToBeDispensed {
					panic(fmt.Sprintf("cancel: %s %s", code, n.Status))
				}
				return n
			}, map[string]string{"FA565": "A/0 B/0 D/0", "FCG71": "C/0"}},
			{"B released", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return qmust(rx.Release(c["B"], "FA565", fa565, "r1", true, at(2)))
			}, map[string]string{"FA565": "A/0 D/0", "FCG71": "C/0"}},
			{"B returned: nomination cleared, in no queue", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return qmust(rx.Return(c["B"], "FA565", fa565, "ret1", at(3)))
			}, map[string]string{"FA565": "A/0 D/0", "FCG71": "C/0"}},
			{"D cancelled whole", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				n, _ := rx.Cancel(c["D"], gpActor, rx.CancelInput{MessageID: "c2", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}, at(4))
				n, _ = rx.Cancel(n, gpActor, rx.CancelInput{MessageID: "c3", NHSNumber: "9449305552", LineItemID: "i2", Reason: "0001"}, at(4))
				return n
			}, map[string]string{"FA565": "A/0", "FCG71": "C/0"}},
			{"C expired", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return rx.ApplyScheduled(c["C"], c["C"].ExpiresAt.Add(time.Hour), noFollow)
			}, map[string]string{"FA565": "A/0"}},
		}},
		{"a post-dated order enters when it becomes ready, behind those ready before", []step{
			{"order P post-dated", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("P", "FA565", q0.AddDate(0, 0, 5), rx.TherapyAcute, 1)
			}, map[string]string{}},
			{"order A", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("A", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "A/0"}},
			{"P ready", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return rx.ApplyScheduled(c["P"], q0.AddDate(0, 0, 6), noFollow)
			}, map[string]string{"FA565": "A/0 P/0"}},
		}},
		{"a repeat dispensing issue becoming ready goes to the back; a renomination moves it to its new dispenser", []step{
			{"order R, 3 issues", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("R", "FA565", q0, rx.TherapyRepeatDispensing, 3)
			}, map[string]string{"FA565": "R/1"}},
			{"order A", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("A", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "R/1 A/0"}},
			{"issue 1 released", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return qmust(rx.Release(c["R"], "FA565", fa565, "r1", true, at(1)))
			}, map[string]string{"FA565": "A/0"}},
			{"issue 1 dispensed", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return qmust(rx.Dispense(c["R"], "FA565", fa565, rx.DispenseInput{ID: "dn1",
					Items: map[string]rx.ItemStatus{"i1": rx.ItemFullyDispensed, "i2": rx.ItemFullyDispensed}}, at(2)))
			}, map[string]string{"FA565": "A/0"}},
			{"order B", "", func(map[string]*rx.Prescription) *rx.Prescription {
				return qorder("B", "FA565", q0, rx.TherapyAcute, 1)
			},
				map[string]string{"FA565": "A/0 B/0"}},
			{"issue 2 awaiting then ready, in one write", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return rx.ApplyScheduled(c["R"], q0.AddDate(0, 0, 22), noFollow)
			}, map[string]string{"FA565": "A/0 B/0 R/2"}},
			{"issue 2 released and dispensed", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				r := qmust(rx.Release(c["R"], "FA565", fa565, "r2", true, q0.AddDate(0, 0, 23)))
				return qmust(rx.Dispense(r, "FA565", fa565, rx.DispenseInput{ID: "dn2",
					Items: map[string]rx.ItemStatus{"i1": rx.ItemFullyDispensed, "i2": rx.ItemFullyDispensed}}, q0.AddDate(0, 0, 23)))
			}, map[string]string{"FA565": "A/0 B/0"}},
			{"issue 3 ready after the patient nominated FCG71", "", func(c map[string]*rx.Prescription) *rx.Prescription {
				return rx.ApplyScheduled(c["R"], q0.AddDate(0, 0, 50), &rx.NominationChange{ODS: "FCG71", Time: q0.AddDate(0, 0, 10)})
			}, map[string]string{"FA565": "A/0 B/0", "FCG71": "R/3"}},
		}},
		{"an order after an early cancellation of one of its items", []step{
			{"cancellation kept", rx.EventCancelKept, func(map[string]*rx.Prescription) *rx.Prescription {
				return rx.EarlyCancellation("E", gpActor, rx.CancelInput{MessageID: "c0", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}, q0.Add(-time.Hour))
			}, map[string]string{}},
			{"order E: the kept cancellation applied", rx.EventOrder, func(c map[string]*rx.Prescription) *rx.Prescription {
				n, outcome := rx.AcceptOrder(c["E"], qorder("E", "FA565", q0, rx.TherapyAcute, 1), q0)
				if outcome != rx.OrderAfterCancellation || n.Status != rx.StatusToBeDispensed {
					panic(fmt.Sprintf("order after cancellation: %v %s", outcome, n.Status))
				}
				return n
			}, map[string]string{"FA565": "E/0"}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ix := NewIndex()
			cur := map[string]*rx.Prescription{}
			for i, s := range tc.steps {
				rec := s.rec(cur)
				cur[rec.ID] = rec
				event := s.event
				if event == "" {
					event = rec.History[len(rec.History)-1].Type
				}
				before, wasQueued := ix.Queued(rec.ID)
				seq := uint64(i + 1)
				ix.Apply(seq, rec)
				after, queued := ix.Queued(rec.ID)
				pushed := queued && after.Seq == seq && (!wasQueued || before.Seq != seq)
				if got := EnteredQueue(event, rec); got != pushed {
					t.Errorf("%s: EnteredQueue(%s) = %v, but the queues put it at the back: %v", s.name, event, got, pushed)
				}
				for _, ods := range []string{"FA565", "FCG71"} {
					if got := queueIDs(ix, ods); got != s.want[ods] {
						t.Errorf("%s: queue of %s %q, want %q", s.name, ods, got, s.want[ods])
					}
					if n := ix.QueueLen(ods); n != len(strings.Fields(s.want[ods])) {
						t.Errorf("%s: QueueLen(%s) %d", s.name, ods, n)
					}
				}
			}
		})
	}
}

func TestReadyQueueTakeFrom(t *testing.T) {
	ix := NewIndex()
	for i := 1; i <= 10; i++ {
		ix.Apply(uint64(i*10), rec(fmt.Sprintf("ID%02d", i), "9449305552", "A83008", "FA565", q0, rx.StatusToBeDispensed))
	}
	cases := []struct {
		from uint64
		n    int
		want string
	}{
		{0, 3, "ID01/0 ID02/0 ID03/0"},
		{1, 3, "ID01/0 ID02/0 ID03/0"},
		{30, 2, "ID03/0 ID04/0"},
		{31, 2, "ID04/0 ID05/0"},
		{95, 5, "ID10/0"},
		{101, 5, ""},
		{0, 0, ""},
	}
	for _, c := range cases {
		var got []string
		for _, e := range ix.ReadyQueue("FA565", c.from, c.n) {
			got = append(got, fmt.Sprintf("%s/%d", e.ID, e.Issue))
		}
		if s := strings.Join(got, " "); s != c.want {
			t.Errorf("from %d, %d: %q, want %q", c.from, c.n, s, c.want)
		}
	}
	if got := ix.ReadyQueue("FCG71", 0, 5); len(got) != 0 {
		t.Errorf("an empty queue: %v", got)
	}
}

func TestReadyQueuesSnapshot(t *testing.T) {
	ix := NewIndex()
	// Three queues, filled in interleaved order, then some leave and one
	// moves to the back of another queue.
	for i := 1; i <= 30; i++ {
		ods := []string{"FA565", "FCG71", "VNE51"}[i%3]
		ix.Apply(uint64(i), rec(fmt.Sprintf("ID%02d", i), "9449305552", "A83008", ods, q0.Add(time.Duration(i)*time.Minute), rx.StatusToBeDispensed))
	}
	ix.Apply(31, rec("ID03", "9449305552", "A83008", "FA565", q0, rx.StatusWithDispenser))
	ix.Apply(32, rec("ID04", "9449305552", "A83008", "FA565", q0, rx.StatusToBeDispensed)) // FCG71 -> FA565
	var buf bytes.Buffer
	if err := ix.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	back := NewIndex()
	if err := back.ReadSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	for _, ods := range []string{"FA565", "FCG71", "VNE51"} {
		if got, want := queueIDs(back, ods), queueIDs(ix, ods); got != want || got == "" {
			t.Errorf("queue of %s after the snapshot %q, want %q", ods, got, want)
		}
	}
	// The queues go on from the snapshot as they would have.
	for _, x := range []*Index{ix, back} {
		x.Apply(33, rec("ID06", "9449305552", "A83008", "FA565", q0, rx.StatusExpired))
		x.Apply(34, rec("ID99", "9449305552", "A83008", "FA565", q0, rx.StatusToBeDispensed))
	}
	if got, want := queueIDs(back, "FA565"), queueIDs(ix, "FA565"); got != want || !strings.HasSuffix(got, "ID04/0 ID99/0") {
		t.Errorf("after more events %q, want %q", got, want)
	}
}

// TestSnapshotOlderFormat: a version 2 snapshot (before the ready queues)
// is refused with ErrSnapshotFormat, so that the broker rebuilds the index.
func TestSnapshotOlderFormat(t *testing.T) {
	type v2 struct {
		Version int
		Origin  string
		Applied uint64
		Entries []Entry
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v2{Version: 2, Origin: "EPS_EVENTS@x", Applied: 7,
		Entries: []Entry{{ID: "A", NHSNumber: "9449305552", Status: rx.StatusToBeDispensed, Nominated: "FA565", Seq: 7}}}); err != nil {
		t.Fatal(err)
	}
	ix := NewIndex()
	err := ix.ReadSnapshot(&buf)
	if !errors.Is(err, ErrSnapshotFormat) {
		t.Fatalf("version 2 snapshot: %v, want ErrSnapshotFormat", err)
	}
	if ix.Len() != 0 || ix.Applied() != 0 {
		t.Errorf("refused snapshot loaded: len %d applied %d", ix.Len(), ix.Applied())
	}
}

// BenchmarkReadyQueueTake25 takes the first 25 of a queue of 1k and of 1M:
// the cost must not grow with the queue (compare the two with benchstat).
func BenchmarkReadyQueueTake25(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		ix := NewIndex()
		for i := 1; i <= n; i++ {
			ix.Apply(uint64(i), &rx.Prescription{ID: fmt.Sprintf("ID%07d", i), Issue: rx.Issue{Status: rx.StatusToBeDispensed, Nominated: "FA565"}})
		}
		b.Run(fmt.Sprintf("queue=%d", n), func(b *testing.B) {
			for b.Loop() {
				if got := ix.ReadyQueue("FA565", 0, 25); len(got) != 25 {
					b.Fatal(len(got))
				}
			}
		})
	}
}
