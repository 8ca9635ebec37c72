package rx

import (
	"testing"
	"time"
)

// The post-dated window: an order dated more than a day after its arrival
// is post-dated (record.py set_initial_prescription_status: prescription
// time > handle time + 1 day).
func TestPostDated(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		date time.Time
		want bool
	}{
		{"today", now, false},
		{"in the past", now.AddDate(0, 0, -3), false},
		{"a day ahead exactly", now.Add(24 * time.Hour), false},
		{"a day and a second ahead", now.Add(24*time.Hour + time.Second), true},
		{"tomorrow's date, earlier in the day", time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC), false},
		{"a week ahead", now.AddDate(0, 0, 7), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PostDated(tc.date, now); got != tc.want {
				t.Errorf("PostDated = %v, want %v", got, tc.want)
			}
			o := &Order{PrescriptionID: "24F5DA-A83008-7EFE6Z", ValidityStart: tc.date, TherapyType: TherapyAcute, Items: []OrderItem{{ID: "i1"}}}
			want := StatusToBeDispensed
			if tc.want {
				want = StatusFuture
			}
			if p := Create(o, gp, now); p.Status != want {
				t.Errorf("created %s, want %s", p.Status, want)
			}
		})
	}
}

// The 180-day timers count from the day of the last dispense (0003) or the
// completion (0006) (next_activity_generator.py part_dispensed, dispensed).
func TestTimers(t *testing.T) {
	at := time.Date(2026, 3, 1, 17, 30, 0, 0, time.UTC)
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if got, want := WithDispenserLimit(at), day.AddDate(0, 0, 180); !got.Equal(want) {
		t.Errorf("WithDispenserLimit = %s, want %s", got, want)
	}
	if got, want := NoClaimAt(at), day.AddDate(0, 0, 180); !got.Equal(want) {
		t.Errorf("NoClaimAt = %s, want %s", got, want)
	}
	// As the state machine applies them.
	r := released(t)
	part := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn1", Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemPartiallyDispensed}}, at))
	full := must(Dispense(r, "FA565", pharmacy, DispenseInput{ID: "dn1", Items: map[string]ItemStatus{"i1": ItemFullyDispensed, "i2": ItemFullyDispensed}}, at))
	for _, tc := range []struct {
		name string
		p    *Prescription
		want time.Time
	}{
		{"part dispensed: no-claim 180 days after the last dispense", part, WithDispenserLimit(at)},
		{"dispensed: no-claim 180 days after completion", full, NoClaimAt(at)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ev := Scheduled(tc.p, tc.want.Add(-time.Second)); ev != "" {
				t.Errorf("due a second before: %s", ev)
			}
			if ev := Scheduled(tc.p, tc.want); ev != EventNoClaim {
				t.Errorf("due at %s: %q, want %s", tc.want, ev, EventNoClaim)
			}
		})
	}
}

// The download date of a later repeat dispensing issue: prescription date
// + days supply x (n - 1) - 7 days lead (record.py
// _calculate_nominated_download_date, NOMINATED_DOWNLOAD_LEAD_DAYS).
func TestIssueAvailableAt(t *testing.T) {
	start := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		supply, n int
		want      time.Time
	}{
		{28, 1, start},
		{28, 2, time.Date(2026, 3, 22, 0, 0, 0, 0, time.UTC)},
		{28, 3, time.Date(2026, 4, 19, 0, 0, 0, 0, time.UTC)},
		{0, 2, time.Date(2026, 3, 22, 0, 0, 0, 0, time.UTC)}, // DefaultSupplyDays
		{56, 2, time.Date(2026, 4, 19, 0, 0, 0, 0, time.UTC)},
		{7, 2, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
	} {
		p := &Prescription{StartDate: start, SupplyDays: tc.supply}
		if got := p.IssueAvailableAt(tc.n); !got.Equal(tc.want) {
			t.Errorf("supply %d, issue %d: %s, want %s", tc.supply, tc.n, got, tc.want)
		}
	}
}
