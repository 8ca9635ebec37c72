package rx

import (
	"testing"
	"time"
)

func TestAcceptOrder(t *testing.T) {
	created := fresh()
	kept := EarlyCancellation(created.ID, gp, CancelInput{MessageID: "c1", NHSNumber: created.NHSNumber, LineItemID: "i1", Reason: "0001"}, t0)
	another := fresh()
	another.BundleID = "b2"
	for _, tc := range []struct {
		name      string
		cur       *Prescription
		want      OrderOutcome
		wantWrite bool
		items     string // of the record written
	}{
		{"nothing stored", nil, OrderStored, true, "0007 0007"},
		{"only a kept cancellation", kept, OrderAfterCancellation, true, "0005 0007"},
		{"the same order again", created, OrderResent, false, ""},
		{"the same order, released since", released(t), OrderResent, false, ""},
		{"another message under the ID", another, OrderDuplicateID, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, got := AcceptOrder(tc.cur, created, t0.Add(time.Minute))
			if got != tc.want || (next != nil) != tc.wantWrite {
				t.Fatalf("AcceptOrder: %v (write %v), want %v (write %v)", got, next != nil, tc.want, tc.wantWrite)
			}
			if next != nil && items(next) != tc.items {
				t.Errorf("items %s, want %s", items(next), tc.items)
			}
		})
	}
}

func TestCancelOrKeep(t *testing.T) {
	in := CancelInput{MessageID: "c1", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}
	cancelledI1, _ := Cancel(fresh(), gp, in, t0)
	kept := EarlyCancellation("24F5DA-A83008-7EFE6Z", gp, CancelInput{MessageID: "c0", NHSNumber: "9449305552", LineItemID: "i2", Reason: "0001"}, t0)
	for _, tc := range []struct {
		name      string
		cur       *Prescription
		by        Actor
		wantEvent string
		wantCode  CancelCode
		wantWrite bool
	}{
		{"own prescription", fresh(), gp, EventCancel, RCancelled, true},
		{"own prescription, item cancelled before", cancelledI1, gp, EventCancel, RAlreadyCancelled, false},
		{"nothing stored", nil, gp, EventCancelKept, RNotFound, true},
		{"only a kept cancellation", kept, gp, EventCancelKept, RNotFound, true},
		{"another organisation's prescription", fresh(), other, EventCancelKept, RNotFound, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, event, code := CancelOrKeep(tc.cur, "24F5DA-A83008-7EFE6Z", tc.by, in, t0.Add(time.Minute))
			if event != tc.wantEvent || code != tc.wantCode || (next != nil) != tc.wantWrite {
				t.Errorf("CancelOrKeep: %s %s (write %v), want %s %s (write %v)", event, code, next != nil, tc.wantEvent, tc.wantCode, tc.wantWrite)
			}
		})
	}
}

func TestQueuedFor(t *testing.T) {
	returned := fresh()
	returned.Nominated = ""
	cancelled, _ := Cancel(fresh(), gp, CancelInput{MessageID: "c", NHSNumber: "9449305552", LineItemID: "i1", Reason: "0001"}, t0)
	cancelled, _ = Cancel(cancelled, gp, CancelInput{MessageID: "c2", NHSNumber: "9449305552", LineItemID: "i2", Reason: "0001"}, t0)
	for _, tc := range []struct {
		name      string
		p         *Prescription
		dispenser string
		want      bool
	}{
		{"ready for it", fresh(), "FA565", true},
		{"nominated to another", fresh(), "FCG71", false},
		{"released", released(t), "FA565", false},
		{"not nominated", returned, "FA565", false},
		{"cancelled", cancelled, "FA565", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QueuedFor(tc.p, tc.dispenser); got != tc.want {
				t.Errorf("QueuedFor(%s): %v, want %v", tc.dispenser, got, tc.want)
			}
			// A nominated release refuses what a queue passes over.
			if _, err := Release(tc.p, tc.dispenser, pharmacy, "r", true, t0.Add(time.Hour)); (err == nil) != tc.want {
				t.Errorf("Release: %v, want allowed %v", err, tc.want)
			}
		})
	}
}
