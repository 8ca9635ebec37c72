package tracker

import (
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

func TestCreate(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	order := func(site, performer string, start time.Time) *fhir.Order {
		return &fhir.Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", BundleID: "b", NHSNumber: "9449305552",
			Sender: "A83008", SiteType: site, Performer: performer, ValidityStart: start, TherapyType: "acute",
			Items: []fhir.OrderItem{{ID: "i1"}, {ID: "i2"}}}
	}
	for _, tc := range []struct {
		name      string
		o         *fhir.Order
		status    Status
		nominated string
		ready     bool
	}{
		{"nominated today", order("P1", "FA565", now), StatusToBeDispensed, "FA565", true},
		{"non-nominated", order("0004", "", now), StatusToBeDispensed, "", false},
		{"no start date", order("P2", "FA565", time.Time{}), StatusToBeDispensed, "FA565", true},
		{"start tomorrow but within a day", order("P1", "FA565", now.Add(23*time.Hour)), StatusToBeDispensed, "FA565", true},
		{"post-dated", order("P1", "FA565", now.Add(49*time.Hour)), StatusFuture, "FA565", false},
		{"P1 without performer", order("P1", "", now), StatusToBeDispensed, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Create(tc.o, Actor{User: "u", Org: "A83008"}, now)
			if p.Status != tc.status || p.Nominated != tc.nominated || p.Ready() != tc.ready {
				t.Errorf("status %s nominated %q ready %v; want %s %q %v", p.Status, p.Nominated, p.Ready(), tc.status, tc.nominated, tc.ready)
			}
			for _, it := range p.Items {
				if it.Status != ItemToBeDispensed {
					t.Errorf("item %s status %s, want 0007", it.ID, it.Status)
				}
			}
			if len(p.History) != 1 || p.History[0].Type != EventOrder || p.History[0].Org != "A83008" {
				t.Errorf("history %+v", p.History)
			}
		})
	}
}

func TestStatusModel(t *testing.T) {
	for s, want := range map[Status]string{StatusToBeDispensed: "requested", StatusWithDispenser: "accepted",
		StatusWithDispenserActive: "in-progress", StatusExpired: "failed", StatusCancelled: "cancelled",
		StatusClaimed: "completed", StatusCancelledFuture: "cancelled"} {
		if s.TaskStatus() != want || s.Display() == "" {
			t.Errorf("%s: task status %q display %q", s, s.TaskStatus(), s.Display())
		}
	}
	if Status("1234").Valid() || !ItemToBeDispensed.Valid() {
		t.Error("Valid wrong")
	}
}

// Schedule 2-4 controlled drugs are valid for 28 days; others 6 months.
func TestValidity(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for cd, want := range map[string]time.Time{"": now.AddDate(0, 6, 0), "CD2": now.AddDate(0, 0, 28), "CD3": now.AddDate(0, 0, 28),
		"CD4-1": now.AddDate(0, 0, 28), "CD5": now.AddDate(0, 6, 0)} {
		o := &fhir.Order{PrescriptionID: "x", ValidityStart: now, ControlledDrug: cd, Items: []fhir.OrderItem{{ID: "i"}}}
		if p := Create(o, Actor{}, now); !p.ExpiresAt.Equal(want) {
			t.Errorf("%q: expires %v, want %v", cd, p.ExpiresAt, want)
		}
	}
	// An order dated long ago is valid from its arrival.
	o := &fhir.Order{PrescriptionID: "x", ValidityStart: now.AddDate(-3, 0, 0), Items: []fhir.OrderItem{{ID: "i"}}}
	if p := Create(o, Actor{}, now); !p.ExpiresAt.Equal(now.AddDate(0, 6, 0)) {
		t.Errorf("old order expires %v", p.ExpiresAt)
	}
}
