package fhir

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// nhsDir holds the NHS England example messages (see its README.md).
const nhsDir = "../test/testdata/nhs/nhs-eps-api"

// order4Items is a signed prescription-order with four MedicationRequests.
// Its entries: 0 MessageHeader, 1-4 MedicationRequest, 5 Patient,
// 6 PractitionerRole, 7 Practitioner, 8 Organization, 9 Provenance.
const order4Items = "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json"

// readFixture reads a file under nhsDir.
func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nhsDir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// findFixtures returns, sorted, the paths (relative to nhsDir, with
// slashes) of the JSON files for which keep returns true.
func findFixtures(t testing.TB, keep func(rel string) bool) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(nhsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		rel, err := filepath.Rel(nhsDir, p)
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); keep(rel) {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// fixtureSummary reads, the slow way, what tests select fixtures by.
type fixtureSummary struct {
	bundleType string
	event      string
	signed     bool // a Provenance has a signature with data
}

func summarize(t testing.TB, b []byte) fixtureSummary {
	t.Helper()
	var v struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			Resource struct {
				ResourceType string `json:"resourceType"`
				EventCoding  struct {
					Code string `json:"code"`
				} `json:"eventCoding"`
				Signature []struct {
					Data string `json:"data"`
				} `json:"signature"`
			} `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.ResourceType != "Bundle" {
		return fixtureSummary{}
	}
	s := fixtureSummary{bundleType: v.Type}
	for _, e := range v.Entry {
		switch e.Resource.ResourceType {
		case "MessageHeader":
			s.event = e.Resource.EventCoding.Code
		case "Provenance":
			for _, sig := range e.Resource.Signature {
				s.signed = s.signed || sig.Data != ""
			}
		}
	}
	return s
}

// Bundle edits: tests make bad inputs by decoding a fixture into
// map[string]any, editing it and encoding it again.

type bundle = map[string]any

// mutate returns base edited by edit.
func mutate(t testing.TB, base []byte, edit func(b bundle)) []byte {
	t.Helper()
	var b bundle
	if err := json.Unmarshal(base, &b); err != nil {
		t.Fatal(err)
	}
	edit(b)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// at returns the value at path (object keys and array indices) under v.
func at(v any, path ...any) any {
	for _, p := range path {
		switch p := p.(type) {
		case string:
			v = v.(map[string]any)[p]
		case int:
			v = v.([]any)[p]
		}
	}
	return v
}

// set sets the value at path (at least one step) under v.
func set(v any, val any, path ...any) {
	parent := at(v, path[:len(path)-1]...)
	switch p := path[len(path)-1].(type) {
	case string:
		parent.(map[string]any)[p] = val
	case int:
		parent.([]any)[p] = val
	}
}

// entries returns Bundle.entry.
func entries(b bundle) []any { return b["entry"].([]any) }

// res returns the resource of entry k.
func res(b bundle, k int) map[string]any {
	return at(b, "entry", k, "resource").(map[string]any)
}

// eachOfType calls fn with every resource of the given type.
func eachOfType(b bundle, typ string, fn func(r map[string]any)) {
	for k := range entries(b) {
		if r := res(b, k); r["resourceType"] == typ {
			fn(r)
		}
	}
}

// clone deep-copies a JSON value.
func clone(v any) any {
	out, _ := json.Marshal(v)
	var c any
	_ = json.Unmarshal(out, &c)
	return c
}

// fhirErr returns err as a *Error, failing the test if it is not one of
// KindInvalid with a code, words and an expression.
func fhirErr(t testing.TB, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *fhir.Error", err, err)
	}
	if e.Kind != KindInvalid || e.Code == "" || e.Diagnostics == "" || len(e.Expression) == 0 || e.Expression[0] == "" {
		t.Fatalf("error %+v lacks kind, code, words or expression", e)
	}
	return e
}

// validate runs DecodeMessage and, for an order, Order.
func validate(b []byte) (*Message, *Order, error) {
	m, err := DecodeMessage(b)
	if err != nil {
		return nil, nil, err
	}
	if m.Event != EventPrescriptionOrder {
		return m, nil, nil
	}
	o, err := m.Order(written(b))
	return m, o, err
}

// writtenDateRe finds the date a message was written: its first authoredOn,
// else validity period start, Provenance recorded or Bundle timestamp (as
// fhirgen.MessageDate, which this package cannot import).
var writtenDateRe = []*regexp.Regexp{
	regexp.MustCompile(`"authoredOn"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"start"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"recorded"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"timestamp"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
}

// written is the date the message b was written (noon UTC), or now: the NHS
// examples are validated as of the day they were written, when they were
// valid (the eRD validity period must not have ended).
func written(b []byte) time.Time {
	for _, re := range writtenDateRe {
		if m := re.FindSubmatch(b); m != nil {
			if d, err := time.Parse(time.DateOnly, string(m[1])); err == nil {
				return d.Add(12 * time.Hour)
			}
		}
	}
	return time.Now()
}
