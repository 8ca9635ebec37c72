package nomination

import (
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

func TestSetChangeRemove(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	by := By{User: "u", Org: "A83008", Role: "prescriber", OnBehalfOf: true}
	p := Set(nil, "9449305552", Pharmacy, "FA565", by, now)
	if p.Of(Pharmacy) != "FA565" || p.Change.From != "" || p.Change.To != "FA565" {
		t.Fatalf("set: %+v", p)
	}
	if Set(p, "9449305552", Pharmacy, "FA565", by, now) != nil {
		t.Error("setting the same dispenser again is a change")
	}
	q := Set(p, "9449305552", Pharmacy, "FCG71", by, now.Add(time.Hour))
	if q.Of(Pharmacy) != "FCG71" || q.Change.From != "FA565" || p.Of(Pharmacy) != "FA565" {
		t.Errorf("change: %+v (the old value must be untouched)", q)
	}
	r := Set(q, "9449305552", DispensingDoctor, "A83008", by, now)
	if r.Of(Pharmacy) != "FCG71" || r.Of(DispensingDoctor) != "A83008" {
		t.Errorf("a second type: %+v", r)
	}
	gone := Remove(r, "9449305552", Pharmacy, by, now)
	if gone.Of(Pharmacy) != "" || gone.Change.From != "FCG71" || gone.Change.To != "" || gone.Of(DispensingDoctor) != "A83008" {
		t.Errorf("remove: %+v", gone)
	}
	if Remove(gone, "9449305552", Pharmacy, by, now) != nil {
		t.Error("removing nothing is a change")
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		nhs  string
		typ  Type
		ods  string
		want string // "" valid; else the FHIRPath named
	}{
		{"9449305552", Pharmacy, "FA565", ""},
		{"9449305553", Pharmacy, "FA565", "nhsNumber"},
		{"9449305552", "P4", "FA565", "type"},
		{"9449305552", Pharmacy, "FA 565", "ods"},
		{"9449305552", Pharmacy, "", "ods"},
	} {
		err := Check(tc.nhs, tc.typ, tc.ods, true)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc, err)
			}
			continue
		}
		e, ok := err.(*fhir.Error)
		if !ok || e.Kind != fhir.KindInvalid || len(e.Expression) == 0 || e.Expression[0] != tc.want {
			t.Errorf("%+v: %v, want an error at %s", tc, err, tc.want)
		}
	}
	if err := Check("9449305552", Pharmacy, "", false); err != nil {
		t.Errorf("removing needs no ODS code: %v", err)
	}
}
