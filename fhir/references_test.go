package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// refHit is a reference found in a JSON text: the path of the member (under
// "$") and its value.
type refHit struct{ path, value string }

func (h refHit) String() string { return h.path + "=" + fmt.Sprintf("%q", h.value) }

// fastReferences collects what scanReferences finds.
func fastReferences(b []byte) []refHit {
	var hits []refHit
	scanReferences(b, func(ref []byte, path []pathSeg) bool {
		hits = append(hits, refHit{fhirPath("$", path) + ".reference", string(ref)})
		return true
	})
	return hits
}

// slowReferences is the reference implementation of scanReferences: it
// decodes b into any and walks it.
func slowReferences(b []byte) []refHit {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	var hits []refHit
	var walk func(v any, path []pathSeg)
	walk = func(v any, path []pathSeg) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "reference" {
					hits = append(hits, refHit{fhirPath("$", path) + ".reference", s})
					continue
				}
				walk(c, append(slices.Clip(path), pathSeg{key: []byte(k), index: -1}))
			}
		case []any:
			for i, c := range v {
				walk(c, append(slices.Clip(path), pathSeg{index: i}))
			}
		}
	}
	walk(v, nil)
	return hits
}

// hasDuplicateKeys reports whether an object of the JSON text b repeats a
// key (after unescaping), which decoding into a map hides.
func hasDuplicateKeys(b []byte) bool {
	type frame struct {
		keys    map[string]bool
		wantKey bool // the next token of this object is a key
	}
	var stack []*frame // nil frames are arrays
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err == io.EOF || err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if top != nil && top.wantKey {
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k], top.wantKey = true, false
			continue
		}
		if top != nil {
			top.wantKey = true // after this value
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, nil)
		}
	}
}

// sortedHits sorts hits for comparison as multisets.
func sortedHits(hits []refHit) []refHit {
	slices.SortFunc(hits, func(a, b refHit) int {
		return strings.Compare(a.String(), b.String())
	})
	return hits
}

// isSubMultiset reports whether every element of sub (sorted) is in super
// (sorted), counting repeats.
func isSubMultiset(sub, super []refHit) bool {
	i := 0
	for _, h := range super {
		if i < len(sub) && sub[i] == h {
			i++
		}
	}
	return i == len(sub)
}

// referenceSeeds are JSON texts with tricky references.
var referenceSeeds = []string{
	`{"reference":"a"}`,
	`{"subject":{"reference":"urn:uuid:1"},"x":[{"reference":"#c"},[{"reference":"Patient/1"}]]}`,
	`{"reference":{"reference":"nested"}}`,
	`{"reference":5,"y":{"reference":null},"z":{"reference":["r"]}}`,
	`{"refer\u0065nce":"escaped key","\"reference\"":"quoted key","reference ":"space"}`,
	`{"reference":"esc\"aped\\","a\\":{"reference":"\u00e9\ud83d\ude00\n"}}`,
	`{"reference":"\\\"","b":"\\","reference":"dup"}`,
	`{"k\\\"":{"reference":"after escaped quote"}}`,
	`[{"reference":"in array"},"reference",{"a":"reference","b":{"reference":"deep"}}]`,
	` { "reference" : "spaced" , "o" : { } , "a" : [ ] } `,
	`"reference"`, `[]`, `{}`, `null`, `12`,
	`{"a":{"b":{"c":{"d":[[[{"reference":"deep"}]]]}}}}`,
	`{"":{"reference":"empty key"},"we ird` + "`" + `":{"reference":"odd key"}}`,
	`{"reference":"\ud800"}`,
}

func TestScanReferences(t *testing.T) {
	for _, seed := range referenceSeeds {
		got, want := sortedHits(fastReferences([]byte(seed))), sortedHits(slowReferences([]byte(seed)))
		if hasDuplicateKeys([]byte(seed)) {
			if !isSubMultiset(want, got) {
				t.Errorf("%s:\n got %v\nwant at least %v", seed, got, want)
			}
		} else if !slices.Equal(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", seed, got, want)
		}
	}
	// Document order, paths and early stop.
	b := []byte(`{"entry":[{"resource":{"subject":{"reference":"x"}}},{"resource":{"a":[{"reference":"y"}]}}]}`)
	want := []refHit{{"$.entry[0].resource.subject.reference", "x"}, {"$.entry[1].resource.a[0].reference", "y"}}
	if got := fastReferences(b); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	n := 0
	scanReferences(b, func([]byte, []pathSeg) bool { n++; return false })
	if n != 1 {
		t.Errorf("scanning went on after fn returned false: %d calls", n)
	}
}

// FuzzReferences compares scanReferences with the slow reference
// implementation on valid JSON, and checks that it neither panics nor hangs
// on anything else.
func FuzzReferences(f *testing.F) {
	for _, s := range referenceSeeds {
		f.Add([]byte(s))
	}
	for _, rel := range []string{order4Items, "spec/dispensing/dispense-notification/acute-primary-example-05-req.json"} {
		f.Add(readFixture(f, rel))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := fastReferences(b)
		if !json.Valid(b) || !utf8.Valid(b) {
			return // outside the contract: only must not panic or hang
		}
		got, want := sortedHits(got), sortedHits(slowReferences(b))
		if hasDuplicateKeys(b) {
			// A map keeps the last of duplicate keys; the scanner sees all.
			if !isSubMultiset(want, got) {
				t.Fatalf("%q:\n got %v\nwant at least %v", b, got, want)
			}
			return
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q:\n got %v\nwant %v", b, got, want)
		}
	})
}

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
		fastReferences([]byte(bad))
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
	if holderOf(path) != 3 || holderOf(path[:2]) != -1 {
		t.Error("holderOf")
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
