package nomination

import (
	"fmt"
	"testing"
	"time"
)

// A dispenser nominating its own organisation is recorded as a
// self-nomination in the change's "by" (and the nomination's); nobody else's
// change is.
func TestSetRecordsSelfNomination(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	cur := Set(nil, "9449305552", Pharmacy, "FA565", By{User: "a", Org: "X26", Role: "admin"}, now)
	for _, tc := range []struct {
		name string
		by   By
		ods  string
		self bool
	}{
		{"a dispenser nominating itself", By{User: "d", Org: "FCG71", Role: "dispenser", OnBehalfOf: true}, "FCG71", true},
		{"the token's ODS in lower case", By{User: "d", Org: "fcg71", Role: "dispenser", OnBehalfOf: true}, "FCG71", true},
		{"a dispenser nominating another dispenser", By{User: "d", Org: "FCG71", Role: "dispenser", OnBehalfOf: true}, "FH542", false},
		{"a prescriber whose ODS is the new dispenser", By{User: "p", Org: "FCG71", Role: "prescriber", OnBehalfOf: true}, "FCG71", false},
		{"an admin whose ODS is the new dispenser", By{User: "a", Org: "FCG71", Role: "admin"}, "FCG71", false},
		{"a flag set by the caller on another's nomination is not kept", By{User: "d", Org: "FCG71", Role: "dispenser", SelfNomination: true}, "FH542", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Set(cur, "9449305552", Pharmacy, tc.ods, tc.by, now.Add(time.Hour))
			if p == nil {
				t.Fatal("no change")
			}
			if p.Change.By.SelfNomination != tc.self || p.Nominations[Pharmacy].By.SelfNomination != tc.self || p.Change.IsSelfNomination() != tc.self {
				t.Errorf("self-nomination: change %v, nomination %v, IsSelfNomination %v; want %v",
					p.Change.By.SelfNomination, p.Nominations[Pharmacy].By.SelfNomination, p.Change.IsSelfNomination(), tc.self)
			}
			if got := p.Change.String(); (tc.self && got != "P1 FA565 -> "+tc.ods+" by "+tc.by.Org+"/"+tc.by.Role+" (self-nomination)") ||
				(!tc.self && got != "P1 FA565 -> "+tc.ods+" by "+tc.by.Org+"/"+tc.by.Role) {
				t.Errorf("String: %q", got)
			}
		})
	}
	// A dispenser removing its own nomination is not a self-nomination.
	mine := Set(nil, "9449305552", Pharmacy, "FCG71", By{User: "d", Org: "FCG71", Role: "dispenser"}, now)
	if gone := Remove(mine, "9449305552", Pharmacy, By{User: "d", Org: "FCG71", Role: "dispenser", SelfNomination: true}, now); gone.Change.By.SelfNomination || gone.Change.IsSelfNomination() {
		t.Errorf("removal recorded as a self-nomination: %+v", gone.Change)
	}
}

// Changes recorded before the flag existed are still recognised: a
// dispenser-made change to its own organisation.
func TestIsSelfNominationOfOlderRecords(t *testing.T) {
	for _, tc := range []struct {
		c    Change
		want bool
	}{
		{Change{To: "FCG71", By: By{Org: "FCG71", Role: "dispenser"}}, true},
		{Change{From: "FA565", To: "FCG71", By: By{Org: "FCG71", Role: "dispenser"}}, true},
		{Change{From: "FA565", To: "FCG71", By: By{Org: "FA565", Role: "dispenser"}}, false},
		{Change{From: "FCG71", By: By{Org: "FCG71", Role: "dispenser"}}, false}, // a removal
		{Change{To: "FCG71", By: By{Org: "FCG71", Role: "prescriber"}}, false},
		{Change{To: "FCG71", By: By{Org: "X26", Role: "admin", SelfNomination: true}}, true}, // recorded so
	} {
		if got := tc.c.IsSelfNomination(); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.c, got, tc.want)
		}
	}
}

// self returns n self-nominations of ods on day d, moved from from.
func self(ods, from string, d, n int) []Record {
	var out []Record
	for i := 0; i < n; i++ {
		out = append(out, Record{
			NHSNumber: fmt.Sprintf("self-%s-%d-%d", ods, d, i),
			Change: Change{Type: Pharmacy, From: from, To: ods, Time: day0.AddDate(0, 0, d).Add(time.Duration(i+1) * time.Minute),
				By: By{User: "u-" + ods, Org: ods, Role: "dispenser", OnBehalfOf: true, SelfNomination: true}},
		})
	}
	return out
}

// others returns n nominations of ods on day d made by a prescriber.
func others(ods string, d, n int) []Record {
	var out []Record
	for i := 0; i < n; i++ {
		out = append(out, Record{
			NHSNumber: fmt.Sprintf("gp-%s-%d-%d", ods, d, i),
			Change: Change{Type: Pharmacy, To: ods, Time: day0.AddDate(0, 0, d).Add(time.Duration(i+1) * time.Minute),
				By: By{User: "gp", Org: "A83008", Role: "prescriber", OnBehalfOf: true}},
		})
	}
	return out
}

// The reports count each dispenser's self-nominations in the period; the
// summary's self-nominators list only those, the most first.
func TestReportsCountSelfNominations(t *testing.T) {
	p := Days(day0.AddDate(0, 0, 5), day0.AddDate(0, 0, 6))
	recs := concat(
		others("FA565", 5, 4),
		self("FCG71", "FA565", 5, 2), // two moved from FA565 by FCG71 itself
		self("FCG71", "", 6, 1),
		self("FCG71", "", 9, 7), // outside the period
		others("FCG71", 6, 1),
		self("FH542", "", 6, 1),
		self("FH542", "", 4, 3), // outside the period
	)
	ranked := Summary(recs, p, 28)
	by := map[string]Ranked{}
	for _, r := range ranked {
		by[r.ODS] = r
	}
	for _, tc := range []struct {
		ods                  string
		gained, lost, selfed int
	}{
		{"FA565", 4, 2, 0},
		{"FCG71", 4, 0, 3},
		{"FH542", 1, 0, 1},
	} {
		r := ForDispenser(recs, tc.ods, p)
		if r.Gained != tc.gained || r.Lost != tc.lost || r.SelfNominated != tc.selfed {
			t.Errorf("ForDispenser %s: gained %d lost %d self %d, want %d %d %d", tc.ods, r.Gained, r.Lost, r.SelfNominated, tc.gained, tc.lost, tc.selfed)
		}
		selfRows := 0
		for _, c := range r.Detail {
			if c.IsSelfNomination() && c.To == tc.ods {
				selfRows++
			}
		}
		if selfRows != tc.selfed {
			t.Errorf("ForDispenser %s: %d detail rows are its self-nominations, want %d", tc.ods, selfRows, tc.selfed)
		}
		if s := by[tc.ods]; s.Gained != tc.gained || s.SelfNominated != tc.selfed {
			t.Errorf("Summary %s: gained %d self %d, want %d %d", tc.ods, s.Gained, s.SelfNominated, tc.gained, tc.selfed)
		}
	}
	var got []string
	for _, r := range SelfNominators(ranked) {
		got = append(got, fmt.Sprintf("%s:%d", r.ODS, r.SelfNominated))
	}
	if fmt.Sprint(got) != "[FCG71:3 FH542:1]" {
		t.Errorf("self-nominators %v, want [FCG71:3 FH542:1]", got)
	}
	if s := SelfNominators(Summary(others("FA565", 5, 2), p, 28)); s == nil || len(s) != 0 {
		t.Errorf("no self-nominations: %v", s)
	}
}
