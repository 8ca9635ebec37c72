package rx

import (
	"slices"
	"testing"
	"time"
)

// KeepCancellation keeps a cancellation for its own organisation alone,
// whatever the ID's subject holds, and decides from that organisation's
// kept cancellations only (issue 11: a prescriber cannot touch another
// organisation's prescriptions, present or future).
func TestKeepCancellation(t *testing.T) {
	const id = "24F5DA-A83008-7EFE6Z"
	nhs := "9449305552"
	in := func(msg, item string) CancelInput {
		return CancelInput{MessageID: msg, NHSNumber: nhs, LineItemID: item, Reason: "0001"}
	}
	ownEarly := EarlyCancellation(id, gp, in("g1", "i1"), t0)
	othersEarly := EarlyCancellation(id, other, in("o1", "i1"), t0)
	withKept := KeepCancellation(fresh(), id, other, in("o1", "i1"), t0)
	full := othersEarly
	for i := 0; i < MaxKeptItems; i++ {
		full = KeepCancellation(full, id, gp, in("g", "x"+string(rune('a'+i))), t0)
	}
	cases := []struct {
		name  string
		cur   *Prescription
		by    Actor
		item  string
		write bool
		// what the write keeps for by.Org: as the early record's own
		// (Prescriber) or as an entry of Kept
		asOwn bool
	}{
		{"nothing on the subject: an early record of its own", nil, gp, "i1", true, true},
		{"its own early record, another item", ownEarly, gp, "i2", true, true},
		{"its own early record, the same item again: nothing new", ownEarly, gp, "I1", false, true},
		{"another organisation's early record: kept apart", othersEarly, gp, "i1", true, false},
		{"another organisation's prescription: kept apart", fresh(), other, "i1", true, false},
		{"its entry on another's prescription, the same item: nothing new", withKept, other, "i1", false, false},
		{"its entry on another's prescription, another item", withKept, other, "i2", true, false},
		{"its entry full (MaxKeptItems): nothing new", full, gp, "i9", false, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before string
			if c.cur != nil {
				before = snapshotJSON(c.cur)
			}
			n := KeepCancellation(c.cur, id, c.by, in("m", c.item), t0.Add(time.Minute))
			if c.cur != nil && snapshotJSON(c.cur) != before {
				t.Fatal("the input record was changed")
			}
			if (n != nil) != c.write {
				t.Fatalf("write = %v, want %v", n != nil, c.write)
			}
			if n == nil {
				return
			}
			if c.asOwn {
				if !n.IsEarlyCancellation() || n.Prescriber != c.by.Org || !hasID(n.Pending.Items, c.item) {
					t.Fatalf("not kept as its own early record: %+v", n)
				}
				return
			}
			// Kept apart: the record is otherwise what it was (status, items,
			// history, prescriber), and its entry holds the item.
			if n.Prescriber != c.cur.Prescriber || n.Status != c.cur.Status || !slices.Equal(n.Items, c.cur.Items) ||
				len(n.History) != len(c.cur.History) {
				t.Fatalf("the record changed: %s %s %v history %d", n.Prescriber, n.Status, n.Items, len(n.History))
			}
			i := slices.IndexFunc(n.Kept, func(k KeptCancel) bool { return k.Org == c.by.Org })
			if i < 0 || !hasID(n.Kept[i].Items, c.item) || n.Kept[i].NHSNumber != nhs {
				t.Fatalf("not kept for %s: %+v", c.by.Org, n.Kept)
			}
		})
	}
}

// ApplyEarlyCancellations applies to an arriving order only what the
// order's own organisation (the token's that sent it) kept for the same
// patient; another organisation's kept cancellations never apply and never
// show in its history (Spine matches a pending cancellation with the
// prescription by its organisation: record.py
// check_pending_cancellation_unique).
func TestApplyEarlyCancellationsOnlyOwnOrganisation(t *testing.T) {
	const id = "24F5DA-A83008-7EFE6Z"
	nhs := "9449305552"
	cancel := func(item string) CancelInput {
		return CancelInput{MessageID: "m-" + item, NHSNumber: nhs, LineItemID: item, Reason: "0001"}
	}
	// The other organisation cancels first (the record is its early record),
	// then the order's own organisation cancels item 2.
	kept := KeepCancellation(nil, id, other, cancel("i1"), t0)
	kept = KeepCancellation(kept, id, other, cancel("i2"), t0)
	kept = KeepCancellation(kept, id, gp, cancel("i2"), t0.Add(time.Minute))
	rec := ApplyEarlyCancellations(kept, fresh(), t0.Add(time.Hour))
	if items(rec) != "0007 0005" || rec.Status != StatusToBeDispensed || rec.Prescriber != gp.Org {
		t.Fatalf("arrived: %s %s", rec.Status, items(rec))
	}
	for _, h := range rec.History {
		if h.Org == other.Org {
			t.Errorf("another organisation's event in the history: %+v", h)
		}
	}
	if rec.History[0].Type != EventCancel || rec.History[0].Org != gp.Org {
		t.Errorf("the own kept cancellation is not first in the history: %+v", rec.History[0])
	}
	if len(rec.Kept) != 1 || rec.Kept[0].Org != other.Org || !slices.Equal(rec.Kept[0].Items, []string{"i1", "i2"}) {
		t.Errorf("the other organisation's kept cancellations: %+v", rec.Kept)
	}
	// Kept stays the other organisation's: asking again changes nothing.
	if n := KeepCancellation(rec, id, other, cancel("i1"), t0.Add(2*time.Hour)); n != nil {
		t.Error("a repeat of a kept cancellation wrote again")
	}
	// Only the other organisation kept anything: the order is untouched.
	alone := ApplyEarlyCancellations(KeepCancellation(nil, id, other, cancel("i1"), t0), fresh(), t0)
	if items(alone) != "0007 0007" || len(alone.History) != 1 {
		t.Errorf("another organisation's early cancellation applied: %s history %d", items(alone), len(alone.History))
	}
}
