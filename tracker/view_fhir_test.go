package tracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// entryStart is how an entry of a view begins: its resource's first member
// is resourceType.
var entryStart = regexp.MustCompile(`\{"fullUrl":"[^"]+","search":\{"mode":"(include|match)"\},"resource":\{"resourceType":"`)

// TestViewsWriteValidFHIR holds the views, written from samply's FHIR
// types, to what FHIR JSON allows and samply alone would break: no empty
// string, object or array, no enum written as "<unknown>", one form of a
// choice element (medication[x], substitution.allowed[x]), and
// resourceType first in every resource, as the NHS tracker writes it.
func TestViewsWriteValidFHIR(t *testing.T) {
	acute, acuteD := fixtureRecord(t, orderAcute4Items, created)
	mixed, mixedD := fixtureRecord(t, orderAcuteRepeat, created.Add(time.Hour))
	erd, erdD := fixtureRecord(t, orderERD, created.Add(2*time.Hour))
	by, disp := rx.Actor{User: "u1", Org: "A83008"}, rx.Actor{User: "d1", Org: "FA565"}
	released, err := rx.Release(acute, "FA565", disp, "m1", true, created.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	notDispensed, err := rx.Dispense(released, "FA565", disp, dispenseInput(released, acuteD, "n1",
		all(released, rx.ItemNotDispensed), all(released, "0002"), "0002"), created.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	partly, err := rx.Dispense(released, "FA565", disp, dispenseInput(released, acuteD, "n2",
		map[int]rx.ItemStatus{0: rx.ItemFullyDispensed, 1: rx.ItemNotDispensedOwing}, nil, ""), created.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	pending, code := rx.Cancel(partly, by, rx.CancelInput{MessageID: "c1", NHSNumber: acute.NHSNumber, LineItemID: acute.Items[2].ID, Reason: "0001"},
		created.Add(3*time.Minute))
	if pending == nil {
		t.Fatalf("cancel: %s", code)
	}
	cancelled := acute
	for i, it := range acute.Items {
		next, code := rx.Cancel(cancelled, by, rx.CancelInput{MessageID: fmt.Sprint("c", i), NHSNumber: acute.NHSNumber, LineItemID: it.ID, Reason: "0005"},
			created.Add(3*time.Minute))
		if next == nil {
			t.Fatalf("cancel: %s", code)
		}
		cancelled = next
	}
	odd := *acuteD
	odd.Patient.Gender = "F" // not an administrative-gender code: left out
	odd.Items = nil

	views := map[string][]byte{
		"search": SearchBundle([]SearchResult{{acute, acuteD.Patient}, {mixed, mixedD.Patient}, {erd, erdD.Patient},
			{cancelled, fhir.PatientDetails{}}}),
		"acute": DetailBundle(acute, acuteD), "acute without details": DetailBundle(acute, nil),
		"mixed": DetailBundle(mixed, mixedD), "not dispensed": DetailBundle(notDispensed, acuteD),
		"partly dispensed, pending cancellation": DetailBundle(pending, acuteD),
		"cancelled":                              DetailBundle(cancelled, acuteD), "odd details": DetailBundle(partly, &odd),
	}
	for n := 1; n <= erd.IssueCount(); n++ {
		is, _ := erd.AtIssue(n)
		views[fmt.Sprintf("erd issue %d", n)] = DetailBundle(is, erdD)
	}
	for name, b := range views {
		if n, m := bytes.Count(b, []byte(`"fullUrl":`)), len(entryStart.FindAll(b, -1)); n == 0 || n != m {
			t.Errorf("%s: %d of %d resources begin with resourceType", name, m, n)
		}
		if bytes.Contains(b, []byte("<unknown>")) {
			t.Errorf("%s: an enum written as <unknown>: %s", name, b)
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var walk func(path string, x any)
		walk = func(path string, x any) {
			switch x := x.(type) {
			case string:
				if x == "" {
					t.Errorf("%s: empty string at %s", name, path)
				}
			case []any:
				if len(x) == 0 {
					t.Errorf("%s: empty array at %s", name, path)
				}
				for i, y := range x {
					walk(fmt.Sprintf("%s[%d]", path, i), y)
				}
			case map[string]any:
				if len(x) == 0 {
					t.Errorf("%s: empty object at %s", name, path)
				}
				if x["medicationCodeableConcept"] != nil && x["medicationReference"] != nil {
					t.Errorf("%s: both medication forms at %s", name, path)
				}
				if x["allowedCodeableConcept"] != nil {
					t.Errorf("%s: substitution.allowedCodeableConcept at %s", name, path)
				}
				for k, y := range x {
					walk(path+"."+k, y)
				}
			}
		}
		walk("Bundle", v)
		if name == "odd details" && strings.Contains(string(b), `"gender"`) {
			t.Errorf("%s: gender F written", name)
		}
	}
}

// TestDecimal: a decimal is written as encoding/json writes a float64.
func TestDecimal(t *testing.T) {
	for _, v := range []float64{0, 1, 28, 0.5, -2.25, 1e-7, 1.5e-6, 1e20, 1e21, 123456789.125, 0.1 + 0.2, math.MaxFloat64} {
		want, _ := json.Marshal(v)
		if got := decimal(v); got == nil || string(*got) != string(want) {
			t.Errorf("decimal(%v) = %v, want %s", v, got, want)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1)} {
		if got := decimal(v); got != nil {
			t.Errorf("decimal(%v) = %s, want nil", v, *got)
		}
	}
}
