package fhir

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"
)

// FuzzDecodeOrder feeds DecodeMessage and Order with mutations of the NHS
// fixtures: they must never panic, every error must be a *Error of
// KindInvalid with a code, words and an expression, and what they accept
// must hold what they promise.
func FuzzDecodeOrder(f *testing.F) {
	for _, rel := range findFixtures(f, func(string) bool { return true }) {
		f.Add(readFixture(f, rel))
	}
	// The forms EPS accepts (issue 10): no sender, a sender by reference, a
	// Medication entry by reference with its SNOMED coding second.
	base := readFixture(f, order4Items)
	f.Add(mutate(f, base, func(b bundle) { delete(res(b, 0), "sender") }))
	f.Add(mutate(f, base, func(b bundle) { res(b, 0)["sender"] = map[string]any{"reference": at(b, "entry", 6, "fullUrl")} }))
	f.Add(mutate(f, base, func(b bundle) {
		r := res(b, 1)
		delete(r, "medicationCodeableConcept")
		r["medicationReference"] = map[string]any{"reference": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11"}
		b["entry"] = append(entries(b), map[string]any{"fullUrl": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11",
			"resource": map[string]any{"resourceType": "Medication", "code": map[string]any{"coding": []any{
				map[string]any{"system": "https://dmd.nhs.uk", "code": "1"},
				map[string]any{"system": SystemSNOMED, "code": "39732311000001104"}}}}})
	}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMessage(b)
		if err != nil {
			checkOutcome(t, err)
			return
		}
		if &m.Raw[0] != &b[0] || len(m.Raw) != len(b) || len(m.Entries) == 0 || m.Entries[0].ResourceType != "MessageHeader" {
			t.Fatalf("decoded %+v", m)
		}
		for _, e := range m.Entries {
			if !json.Valid(e.Resource) || !bytes.Contains(b, e.Resource) {
				t.Fatalf("entry resource %q is not a JSON slice of the body", e.Resource)
			}
		}
		if m.Event != EventPrescriptionOrder {
			return
		}
		o, err := m.Order(time.Now())
		if err != nil {
			checkOutcome(t, err)
			return
		}
		if !ValidShortID(o.PrescriptionID) || !ValidUUID(o.LongID) || !ValidNHSNumber(o.NHSNumber) ||
			o.Sender != "" && !ValidODSCode(o.Sender) || len(o.Items) < 1 || len(o.Items) > maxItems {
			t.Fatalf("accepted order %+v", o)
		}
	})
}

// checkOutcome checks that err is a complete *Error and encodes as an
// OperationOutcome.
func checkOutcome(t *testing.T, err error) {
	t.Helper()
	fhirErr(t, err)
	var oo OperationOutcome
	if err := json.Unmarshal(ErrorOutcome(err), &oo); err != nil || len(oo.Issue) != 1 {
		t.Fatalf("ErrorOutcome: %v %+v", err, oo)
	}
}

// FuzzOrderEdits reaches deeper than FuzzDecodeOrder, whose mutations rarely
// stay valid JSON: it replaces up to two values of the four-item order, each
// chosen among all its leaves and containers, with a fuzzed JSON value (or
// string), and holds DecodeMessage and Order to the same promises.
func FuzzOrderEdits(f *testing.F) {
	base := readFixture(f, order4Items)
	var doc any
	if err := json.Unmarshal(base, &doc); err != nil {
		f.Fatal(err)
	}
	paths := jsonPaths(doc, nil)
	f.Add(uint16(0), "x", uint16(1), `{}`)
	f.Add(uint16(40), `"active"`, uint16(300), `[]`)
	f.Add(uint16(7), `null`, uint16(9), `5`)
	f.Fuzz(func(t *testing.T, p1 uint16, v1 string, p2 uint16, v2 string) {
		body := mutate(t, base, func(b bundle) {
			for _, e := range []struct {
				p uint16
				v string
			}{{p1, v1}, {p2, v2}} {
				var v any
				if json.Unmarshal([]byte(e.v), &v) != nil {
					v = e.v
				}
				if path := paths[int(e.p)%len(paths)]; len(path) > 0 && reachable(b, path) {
					set(b, v, path...)
				}
			}
		})
		m, err := DecodeMessage(body)
		if err != nil {
			checkOutcome(t, err)
			return
		}
		if m.Event != EventPrescriptionOrder {
			return
		}
		if o, err := m.Order(time.Now()); err != nil {
			checkOutcome(t, err)
		} else if !ValidShortID(o.PrescriptionID) || !ValidNHSNumber(o.NHSNumber) || len(o.Items) < 1 || len(o.Items) > maxItems {
			t.Fatalf("accepted order %+v", o)
		}
	})
}

// jsonPaths lists the paths of every value under v.
func jsonPaths(v any, path []any) [][]any {
	out := [][]any{slices.Clone(path)}
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			out = append(out, jsonPaths(v[k], append(slices.Clip(path), k))...)
		}
	case []any:
		for i, c := range v {
			out = append(out, jsonPaths(c, append(slices.Clip(path), i))...)
		}
	}
	return out
}

// reachable reports whether path still leads to a value of v (an earlier
// edit may have replaced a container).
func reachable(v any, path []any) bool {
	for _, p := range path[:len(path)-1] {
		switch p := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return false
			}
			v = m[p]
		case int:
			a, ok := v.([]any)
			if !ok || p >= len(a) {
				return false
			}
			v = a[p]
		}
	}
	switch p := path[len(path)-1].(type) {
	case string:
		_, ok := v.(map[string]any)
		return ok
	case int:
		a, ok := v.([]any)
		return ok && p < len(a)
	}
	return false
}
