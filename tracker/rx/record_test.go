package rx

import (
	"testing"
	"time"
)

func TestCreate(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	order := func(site, performer string, start time.Time) *Order {
		return &Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", BundleID: "b", NHSNumber: "9449305552",
			Sender: "A83008", SiteType: site, Performer: performer, ValidityStart: start, TherapyType: "acute",
			Items: []OrderItem{{ID: "i1"}, {ID: "i2"}}}
	}
	for _, tc := range []struct {
		name      string
		o         *Order
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

// The expiry of each order shape counts from the prescription date as Spine
// takes it, never from the arrival; an order that arrives past its expiry is
// created and expires at once, never dispensable.
//
// An order's authoredOn and validity end are not read (rx.Order has no such
// fields): fhir TestRxOrderDates checks that they change no expiry.
func TestExpiryDate(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	today := Day(now)
	const (
		nag    = "next_activity_generator.py _calculate_expiry_date"
		facade = "nhs-eps-api parent-prescription.ts convertParentPrescription"
	)
	for _, tc := range []struct {
		name, ref  string
		order      Order
		issue      int       // 0: the first
		want       time.Time // the issue's expiry
		wantStatus Status    // on creation at now
	}{
		{"acute: 6 months", nag, Order{ValidityStart: now}, 0, today.AddDate(0, 6, 0), StatusToBeDispensed},
		{"acute dated a week ago: from its date, not its arrival", nag, Order{ValidityStart: now.AddDate(0, 0, -7)}, 0, today.AddDate(0, 6, -7), StatusToBeDispensed},
		{"date from the signature time without a validity period", facade, Order{SignedAt: now.AddDate(0, -1, 0)}, 0, today.AddDate(0, 5, 0), StatusToBeDispensed},
		{"validityPeriod.start before the signature", facade, Order{ValidityStart: now.AddDate(0, -2, 0), SignedAt: now}, 0, today.AddDate(0, 4, 0), StatusToBeDispensed},
		{"no date at all: the arrival (an unsigned order's time)", "practitioner.ts setSignatureTimeAndText", Order{}, 0, today.AddDate(0, 6, 0), StatusToBeDispensed},
		{"CD2: 28 days (stricter than Spine: Misuse of Drugs Regulations)", "README deliberate difference", Order{ValidityStart: now, ControlledDrug: "CD2"}, 0, today.AddDate(0, 0, 28), StatusToBeDispensed},
		{"CD3: 28 days", "README deliberate difference", Order{ValidityStart: now, ControlledDrug: "CD3"}, 0, today.AddDate(0, 0, 28), StatusToBeDispensed},
		{"CD4: 28 days", "README deliberate difference", Order{ValidityStart: now, ControlledDrug: "CD4-1"}, 0, today.AddDate(0, 0, 28), StatusToBeDispensed},
		{"CD5: 6 months", nag, Order{ValidityStart: now, ControlledDrug: "CD5"}, 0, today.AddDate(0, 6, 0), StatusToBeDispensed},
		{"repeat prescribing: one issue, 6 months", nag + " (repeat_prescribe.py: max_repeats 1)", Order{ValidityStart: now, TherapyType: TherapyContinuous}, 0, today.AddDate(0, 6, 0), StatusToBeDispensed},
		{"eRD issue 1: 6 months", nag, Order{ValidityStart: now, TherapyType: TherapyRepeatDispensing, RepeatsAllowed: 2}, 1, today.AddDate(0, 6, 0), StatusToBeDispensed},
		{"eRD issue 2: 12 months from the prescription date", nag, Order{ValidityStart: now, TherapyType: TherapyRepeatDispensing, RepeatsAllowed: 2}, 2, today.AddDate(1, 0, 0), StatusToBeDispensed},
		{"eRD issue 3: 12 months from the prescription date", nag, Order{ValidityStart: now, TherapyType: TherapyRepeatDispensing, RepeatsAllowed: 2}, 3, today.AddDate(1, 0, 0), StatusToBeDispensed},
		{"31 August + 6 months: the end of February", "dateutil relativedelta(months=+6)", Order{ValidityStart: time.Date(2026, 8, 31, 12, 0, 0, 0, time.UTC)}, 0, time.Date(2027, 2, 28, 0, 0, 0, 0, time.UTC), StatusToBeDispensed},
		{"post-dated: 9001, expiry from its date", "record.py set_initial_prescription_status", Order{ValidityStart: now.AddDate(0, 0, 3)}, 0, today.AddDate(0, 6, 3), StatusFuture},
		{"dated 2020: expired on arrival", "record.py handle_overdue_expiry", Order{ValidityStart: time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)}, 0, time.Date(2020, 12, 1, 0, 0, 0, 0, time.UTC), StatusExpired},
		{"CD2 dated 40 days ago: expired on arrival", "README deliberate difference", Order{ValidityStart: now.AddDate(0, 0, -40), ControlledDrug: "CD2"}, 0, today.AddDate(0, 0, -12), StatusExpired},
		{"dated 6 months ago today: expired on arrival", "next activity due on its date", Order{ValidityStart: now.AddDate(0, -6, 0)}, 0, today, StatusExpired},
		{"eRD dated 2020: every issue expired on arrival", "record.py perform_instance_specific_updates", Order{ValidityStart: time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC), TherapyType: TherapyRepeatDispensing, RepeatsAllowed: 1}, 2, time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC), StatusExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.order
			o.PrescriptionID, o.BundleID, o.Items = "24F5DA-A83008-7EFE6Z", "b", []OrderItem{{ID: "i1"}, {ID: "i2"}}
			if o.TherapyType == "" {
				o.TherapyType = TherapyAcute
			}
			p := Create(&o, Actor{Org: "A83008"}, now)
			at, ok := p.AtIssue(tc.issue)
			if !ok {
				t.Fatalf("no issue %d", tc.issue)
			}
			if !at.ExpiresAt.Equal(tc.want) {
				t.Errorf("expires %s, want %s (%s)", at.ExpiresAt, tc.want, tc.ref)
			}
			first, _ := p.AtIssue(1)
			if first.Status != tc.wantStatus {
				t.Errorf("status on arrival %s, want %s (%s)", first.Status, tc.wantStatus, tc.ref)
			}
			if tc.wantStatus != StatusExpired {
				return
			}
			// Never dispensable: expired, its items too, and a release fails.
			for _, is := range p.Issues() {
				if is.Status != StatusExpired || is.Items[0].Status != ItemExpired {
					t.Errorf("issue %d: %s, items %s", is.Number, is.Status, is.Items[0].Status)
				}
			}
			if h := p.History; len(h) < 2 || h[0].Type != EventOrder || h[0].Status != StatusToBeDispensed || h[len(h)-1].Type != EventExpire {
				t.Errorf("history %+v: want the order (0001), then its expiry", h)
			}
			if _, err := Release(p, "FA565", Actor{Org: "FA565"}, "r", false, now); err == nil {
				t.Error("an expired order was released")
			}
			if ApplyScheduled(p, now.AddDate(1, 0, 0), nil) != nil {
				t.Error("the scheduler changed it again")
			}
		})
	}
}
