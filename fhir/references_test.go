package fhir

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestReader(t *testing.T) {
	obj := []byte(` {"a" : "x\"}" , "b\\" :{"c":[1,{"d":"]"}]},"e":[ ],"f":-1.5e3,"g":true, "h":null} `)
	var keys, vals []string
	r := newReader(obj, "$")
	r.object(func(key []byte) {
		keys, vals = append(keys, string(key)), append(vals, string(r.raw()))
	})
	if want := []string{"a", `b\`, "e", "f", "g", "h"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if want := []string{`"x\"}"`, `{"c":[1,{"d":"]"}]}`, "[ ]", "-1.5e3", "true", "null"}; !slices.Equal(vals, want) || r.err != nil {
		t.Errorf("values %q, want %q (%v)", vals, want, r.err)
	}
	var elems []string
	r = newReader([]byte(`[ 1 , "two" , [3] , {"4":4} ]`), "$")
	r.array(func(i int) { elems = append(elems, fmt.Sprintf("%d %s", i, r.raw())) })
	if want := []string{"0 1", `1 "two"`, "2 [3]", `3 {"4":4}`}; !slices.Equal(elems, want) {
		t.Errorf("elements %q, want %q", elems, want)
	}
	// Values fn does not read are skipped; the last of repeated members wins.
	var id identifier
	r = newReader([]byte(`{"x":{"y":[{}]},"value":"1","system":"s\u0041","value":"2"}`), "$")
	if r.identifier(&id); id != (identifier{System: "sA", Value: "2"}) || r.err != nil {
		t.Errorf("identifier %+v (%v)", id, r.err)
	}
	// Numbers, null and mismatches with their FHIRPath.
	var q quantity
	r = newReader([]byte(`{"value":2.5,"unit":null,"code":7}`), "Q")
	if r.quantity(&q); q.Value != 2.5 || !q.HasValue || r.err == nil || r.err.Expression[0] != "Q.code" {
		t.Errorf("quantity %+v (%v)", q, r.err)
	}
	r = newReader([]byte(`[{"a":1},{"a":1.5}]`), "L")
	r.array(func(int) { r.object(func([]byte) { r.integer() }) })
	if r.err == nil || r.err.Expression[0] != "L[1].a" {
		t.Errorf("integer mismatch: %v", r.err)
	}
	// Not JSON: no panic, no hang.
	for _, bad := range []string{`{"a`, `{"a":`, `{"a":[`, `[1,`, `{"a" 1}`, `{,}`, `"\`, `{"reference":"x`, `[{"reference"]`, `{"a":}`} {
		r := newReader([]byte(bad), "$")
		var mr medicationRequest
		r.medicationRequest(&mr)
		r = newReader([]byte(bad), "$")
		r.array(func(int) { r.raw() })
	}
}

func TestResolve(t *testing.T) {
	entries := []Entry{
		{FullURL: "urn:uuid:aaaa", ResourceType: "MessageHeader"},
		{FullURL: "https://example.org/fhir/Patient/p1", ResourceType: "Patient"},
		{FullURL: "urn:uuid:bbbb", ResourceType: "Practitioner", ID: "pr1",
			Resource: []byte(`{"resourceType":"Practitioner","contained":[{"resourceType":"Organization","id":"org"}]}`)},
	}
	x, err := newRefIndex(entries)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref    string
		holder int
		want   int
	}{
		{"urn:uuid:aaaa", -1, 0}, {"urn:uuid:bbbb", 1, 2}, {"urn:uuid:cccc", 0, -1},
		{"https://example.org/fhir/Patient/p1", 0, 1}, {"Patient/p1", 0, 1}, {"Patient/p1/_history/2", 0, 1},
		{"Practitioner/pr1", 0, 2}, {"Practitioner/p1", 0, -1}, {"p1", 0, -1}, {"", 0, -1},
		{"#org", 2, 2}, {"#org", 1, -1}, {"#org", -1, -1}, {"#", 1, 1}, {"#", -1, -1}, {"#other", 2, -1},
	} {
		if got := x.resolve([]byte(tc.ref), tc.holder); got != tc.want {
			t.Errorf("resolve(%q, %d) = %d, want %d", tc.ref, tc.holder, got, tc.want)
		}
	}
	if _, err := newRefIndex(append(entries, Entry{FullURL: "urn:uuid:aaaa"})); err == nil || err.IssueType != "duplicate" {
		t.Errorf("duplicate fullUrl: %v", err)
	}
}

func TestFHIRPath(t *testing.T) {
	path := []pathSeg{{key: []byte("entry"), index: -1}, {index: 3}, {key: []byte("resource"), index: -1},
		{key: []byte("odd key`"), index: -1}, {key: []byte(strings.Repeat("k", 100)), index: -1}}
	// Long keys are clipped; keys that are not identifiers go in backticks.
	want := "Bundle.entry[3].resource.`odd key\\``.`" + strings.Repeat("k", maxQuoted) + "...`"
	if got := fhirPath("Bundle", path); got != want {
		t.Errorf("fhirPath = %s, want %s", got, want)
	}
}

func TestPathAt(t *testing.T) {
	b := []byte(`{"entry":[{"a":1},{"resource":{"subject":{"reference":"x"},"n":[0,{"k":true}]}}]}`)
	for _, tc := range []struct{ value, want string }{
		{`{"reference"`, "$.entry[1].resource.subject"},
		{`"x"`, "$.entry[1].resource.subject.reference"},
		{`true`, "$.entry[1].resource.n[1].k"},
		{`1}`, "$.entry[0].a"},
		{`{"entry"`, "$"},
	} {
		if got := fhirPath("$", pathAt(b, bytes.Index(b, []byte(tc.value)))); got != tc.want {
			t.Errorf("path of %s = %s, want %s", tc.value, got, tc.want)
		}
	}
}
