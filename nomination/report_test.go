package nomination

import (
	"fmt"
	"math"
	"testing"
	"time"
)

var day0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// gains returns n changes to ods on day d (days after day0), from "".
func gains(ods string, d, n int) []Record {
	var out []Record
	for i := 0; i < n; i++ {
		out = append(out, Record{
			NHSNumber: fmt.Sprintf("%s-%d-%d", ods, d, i),
			Change: Change{Type: Pharmacy, To: ods, Time: day0.AddDate(0, 0, d).Add(time.Duration(i+1) * time.Minute),
				By: By{User: "u-" + ods, Org: ods, Role: "dispenser", OnBehalfOf: true}},
		})
	}
	return out
}

func steady(ods string, first, last, perDay int) []Record {
	var out []Record
	for d := first; d <= last; d++ {
		out = append(out, gains(ods, d, perDay)...)
	}
	return out
}

func concat(rs ...[]Record) []Record {
	var out []Record
	for _, r := range rs {
		out = append(out, r...)
	}
	return out
}

func TestReportForDispenser(t *testing.T) {
	move := Record{NHSNumber: "9449304130", Change: Change{Type: Pharmacy, From: "FA565", To: "FCG71",
		Time: day0.AddDate(0, 0, 5).Add(9 * time.Hour), By: By{User: "u1", Org: "FCG71", Role: "dispenser", OnBehalfOf: true}}}
	removed := Record{NHSNumber: "9449304131", Change: Change{Type: Pharmacy, From: "FCG71",
		Time: day0.AddDate(0, 0, 6), By: By{User: "admin", Org: "X26", Role: "admin"}}}
	outside := gains("FCG71", 9, 1)
	recs := concat(gains("FA565", 5, 2), []Record{move, removed}, outside)
	p := Days(day0.AddDate(0, 0, 5), day0.AddDate(0, 0, 6))
	for _, tc := range []struct {
		ods          string
		gained, lost int
		detail       []string
	}{
		{"FA565", 2, 1, []string{"FA565-5-0", "FA565-5-1", "9449304130"}},
		{"FCG71", 1, 1, []string{"9449304130", "9449304131"}},
		{"Y12345", 0, 0, nil},
	} {
		r := ForDispenser(recs, tc.ods, p)
		if r.Gained != tc.gained || r.Lost != tc.lost || len(r.Detail) != len(tc.detail) {
			t.Errorf("%s: gained %d lost %d detail %d, want %d %d %d", tc.ods, r.Gained, r.Lost, len(r.Detail), tc.gained, tc.lost, len(tc.detail))
			continue
		}
		for i, nhs := range tc.detail {
			if r.Detail[i].NHSNumber != nhs {
				t.Errorf("%s: detail[%d] = %s, want %s", tc.ods, i, r.Detail[i].NHSNumber, nhs)
			}
		}
	}
	if r := ForDispenser(recs, "FCG71", p); r.Detail[0].By.User != "u1" || r.Detail[0].From != "FA565" {
		t.Errorf("who moved it: %+v", r.Detail[0])
	}
	if !p.Contains(day0.AddDate(0, 0, 6).Add(23*time.Hour)) || p.Contains(day0.AddDate(0, 0, 7)) {
		t.Error("the period includes its last day, not the day after")
	}
}

func TestReportSummaryRanking(t *testing.T) {
	period := Days(day0.AddDate(0, 0, 28), day0.AddDate(0, 0, 34)) // days 28..34
	for _, tc := range []struct {
		name  string
		recs  []Record
		order []string
	}{
		{
			name: "a dispenser with a sudden spike ranks first even though another dispenser gains more every day steadily",
			recs: concat(
				steady("BIG1", 0, 34, 20), // 20 a day, always: 140 in the period
				steady("SPIKE", 0, 34, 1), // 1 a day ...
				gains("SPIKE", 31, 15),    // ... and 15 more on day 31: 22 in the period
				steady("MID", 0, 34, 3),   // 3 a day
				gains("MID", 30, 2),       // a slightly better day
			),
			order: []string{"SPIKE", "MID", "BIG1"},
		},
		{
			name: "noisy history makes the same spike less unusual",
			recs: concat(
				// NOISY alternates 0 and 10 a day: MAD 5, spread 7.4.
				func() []Record {
					var out []Record
					for d := 0; d < 28; d++ {
						out = append(out, gains("NOISY", d, 10*((d+1)%2))...)
					}
					return out
				}(),
				gains("NOISY", 30, 20),
				steady("CALM", 0, 27, 2),
				gains("CALM", 30, 12),
			),
			// NOISY: (20-5)/7.4 = 2.0; CALM: (12-2)/1 = 10.
			order: []string{"CALM", "NOISY"},
		},
		{
			name: "no history: the period's other days, then none",
			recs: concat(
				steady("OLD", 0, 34, 5),
				steady("NEWA", 28, 34, 1), gains("NEWA", 33, 9), // new: 1 a day, 10 on day 33
				gains("NEWB", 34, 4), // new, one day only: score 4
			),
			order: []string{"NEWA", "NEWB", "OLD"},
		},
		{
			name: "a dispenser that only lost nominations is listed, last",
			recs: concat(
				steady("KEEP", 0, 34, 1),
				[]Record{{NHSNumber: "1", Change: Change{Type: Pharmacy, From: "LOSER", To: "KEEP", Time: day0.AddDate(0, 0, 30)}}},
			),
			order: []string{"KEEP", "LOSER"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Summary(tc.recs, period, 28)
			var ods []string
			for _, r := range got {
				ods = append(ods, r.ODS)
			}
			if fmt.Sprint(ods) != fmt.Sprint(tc.order) {
				for _, r := range got {
					t.Logf("%+v", r)
				}
				t.Fatalf("ranked %v, want %v", ods, tc.order)
			}
		})
	}
}

func TestReportSummaryFigures(t *testing.T) {
	period := Days(day0.AddDate(0, 0, 28), day0.AddDate(0, 0, 34))
	recs := concat(steady("SPIKE", 0, 34, 1), gains("SPIKE", 31, 15), steady("NEW", 33, 33, 4), steady("NEW", 34, 34, 2))
	got := Summary(recs, period, 0)
	by := map[string]Ranked{}
	for _, r := range got {
		by[r.ODS] = r
	}
	s := by["SPIKE"]
	if s.Gained != 22 || s.MaxDailyGain != 16 || !s.Day.Equal(day0.AddDate(0, 0, 31)) || s.Baseline != 1 || s.Spread != 1 ||
		s.Score != 15 || s.Basis != BasisHistory || s.HistoryDays != DefaultHistoryDays {
		t.Errorf("SPIKE: %+v", s)
	}
	// NEW: first seen on day 33; its other period day (34) is the baseline.
	n := by["NEW"]
	if n.Basis != BasisPeriod || n.HistoryDays != 1 || n.MaxDailyGain != 4 || n.Baseline != 2 || math.Abs(n.Score-2) > 1e-9 {
		t.Errorf("NEW: %+v", n)
	}
	if got := Summary(nil, period, 0); got == nil || len(got) != 0 {
		t.Errorf("no changes: %v", got)
	}
}
