package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

var validSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e-3`, `-12.0E+4`, `true`, `false`, `null`, ` {"a" : [1, "b", {"c": null}] } `,
	`"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"`, `"é😀"`, "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\x01\"", `"\x"`, `"\u12G4"`,
	`01`, `1.`, `.5`, `1e`, `+1`, `-`, `tru`, `nul`, `truex`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,]`, `{,}`,
	`{"a":1 "b":2}`, `[1 2]`, `{} {}`, ``, ` `, `{"a":1}x`, "\"\t\"", `"`, `"\`, "[\"\xc3\"]", "{\"\xe2\x82\":1}",
	`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"\ud800":1,"\udbff":2}`, `{"A":1,"a":2}`, `[{"a":1},{"a":1}]`,
	`{"a":{"a":{"a":1}},"b":[{"b":1,"c":{"d":1,"d":2}}]}`,
}

// unlimited are limits that only encoding/json's own nesting limit bounds.
var unlimited = jsonLimits{depth: 10000, array: math.MaxInt}

func TestCheckJSON(t *testing.T) {
	// Without limits and with duplicates allowed, checkJSON is json.Valid
	// and utf8.Valid.
	for _, s := range validSeeds {
		want := json.Valid([]byte(s)) && utf8.Valid([]byte(s))
		if got := checkJSON([]byte(s), unlimited, true); (got.fault == faultNone) != want {
			t.Errorf("checkJSON(%q) = %v, want valid %v", s, got.fault, want)
		}
	}
	// encoding/json's nesting limit.
	for _, n := range []int{10000, 10001} {
		s := []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
		if got, want := checkJSON(s, unlimited, true).fault == faultNone, json.Valid(s); got != want || got != (n <= 10000) {
			t.Errorf("depth %d: checkJSON %v, json.Valid %v", n, got, want)
		}
	}
	for _, rel := range findFixtures(t, func(string) bool { return true }) {
		if c := checkJSON(readFixture(t, rel), limits, false); c.fault != faultNone {
			t.Errorf("%s: %v at %s", rel, c.fault, fhirPath("$", c.path))
		}
	}
	many := func(n int, elem func(i int) string) string {
		var s []string
		for i := range n {
			s = append(s, elem(i))
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		in    string
		fault jsonFault
		path  string
	}{
		{`{"a":1,"a":2}`, faultDuplicate, "$.a"},
		{`{"a":1,"\u0061":2}`, faultDuplicate, "$.a"},
		{`{"A":1,"a":2}`, faultNone, ""},
		{`[{"a":1},{"a":1}]`, faultNone, ""},
		{`{"a":{"a":{"a":1}},"b":[{"b":1},{"b":1,"c":{"d":1,"d":2}}]}`, faultDuplicate, "$.b[1].c.d"},
		{"{" + many(20, func(i int) string { return fmt.Sprintf(`"k%d":{"k%d":1}`, i, i) }) + "}", faultNone, ""},
		{"{" + many(20, func(i int) string { return fmt.Sprintf(`"k%d":1`, i%15) }) + "}", faultDuplicate, "$.k0"},
		{"{" + many(20, func(i int) string { return fmt.Sprintf(`"k%d":1`, i) }) + `,"k3":2}`, faultDuplicate, "$.k3"},
		{`{"a":1,"a":2,` + "\xff" + `}`, faultDuplicate, "$.a"}, // the first fault
		{`{"a":1,"a":2`, faultDuplicate, "$.a"},
		{`{"x":1,"a"` + "\xff" + `:1,"a":2}`, faultSyntax, ""},
		{strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth), faultNone, ""},
		{strings.Repeat(`{"a":`, MaxJSONDepth-1) + `[]` + strings.Repeat("}", MaxJSONDepth-1), faultNone, ""},
		{strings.Repeat(`{"a":`, MaxJSONDepth) + `[]` + strings.Repeat("}", MaxJSONDepth), faultDepth, "$" + strings.Repeat(".a", MaxJSONDepth)},
		{`{"e":[` + strings.Repeat("[", MaxJSONDepth) + strings.Repeat("]", MaxJSONDepth) + "]}", faultDepth, "$.e" + strings.Repeat("[0]", MaxJSONDepth-1)},
		{`{"e":[` + many(MaxJSONArray, func(int) string { return "1" }) + "]}", faultNone, ""},
		{`{"e":[` + many(MaxJSONArray+1, func(int) string { return "1" }) + "]}", faultArray, "$.e"},
		{`{"e":[` + many(MaxJSONArray+1, func(int) string { return "1" }) + "", faultArray, "$.e"},
		{`{"e":[{},{"f":[` + many(MaxJSONArray+1, func(int) string { return "{}" }) + "]}]}", faultArray, "$.e[1].f"},
	} {
		c := checkJSON([]byte(tc.in), limits, false)
		path := ""
		if c.fault > faultSyntax {
			path = fhirPath("$", c.path)
		}
		if c.fault != tc.fault || path != tc.path {
			t.Errorf("checkJSON(%.80s) = %v at %q, want %v at %q", tc.in, c.fault, path, tc.fault, tc.path)
		}
	}
}

// FuzzCheckJSON holds checkJSON to two oracles: without limits and with
// duplicates allowed, json.Valid && utf8.Valid; on valid JSON, the first
// fault that encoding/json's token stream shows, with its path, under small
// limits chosen by the fuzzer.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s), uint8(3), uint8(3))
	}
	f.Add(readFixture(f, order4Items), uint8(9), uint8(4))
	f.Add(readFixture(f, order4Items), uint8(60), uint8(60))
	f.Fuzz(func(t *testing.T, b []byte, depth, array uint8) {
		valid := json.Valid(b) && utf8.Valid(b)
		if got := checkJSON(b, unlimited, true).fault == faultNone; got != valid {
			t.Fatalf("checkJSON(%q) valid %v, want %v", b, got, valid)
		}
		lim := jsonLimits{depth: 1 + int(depth%16), array: 1 + int(array%16)}
		c := checkJSON(b, lim, false)
		if !valid {
			if c.fault == faultNone {
				t.Fatalf("checkJSON(%q) accepts invalid JSON", b)
			}
			return
		}
		want, wantPath := tokenFault(t, b, lim)
		if path := fhirPath("$", c.path); c.fault != want || c.fault > faultSyntax && path != wantPath {
			t.Fatalf("checkJSON(%q, %+v) = %v at %s, want %v at %s", b, lim, c.fault, path, want, wantPath)
		}
	})
}

// tokenFault finds, the slow way, the first fault of the valid JSON text b
// under lim: it reads b with encoding/json's token stream, which unescapes
// names as consumers of the message would.
func tokenFault(t *testing.T, b []byte, lim jsonLimits) (jsonFault, string) {
	type frame struct {
		object bool
		names  map[string]bool
		key    string // the member being read
		n      int    // elements read so far
		inKey  bool   // the next string is a name
	}
	var stack []*frame
	path := func() string {
		var segs []pathSeg
		for _, f := range stack {
			if f.object {
				segs = append(segs, pathSeg{key: []byte(f.key), index: -1})
			} else {
				segs = append(segs, pathSeg{index: f.n - 1})
			}
		}
		return fhirPath("$", segs)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			return faultNone, ""
		}
		if err != nil {
			t.Fatalf("token stream of valid JSON %q: %v", b, err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.object && top.inKey {
			if top.names[s] {
				top.key = s
				return faultDuplicate, path()
			}
			top.names[s], top.key, top.inKey = true, s, false
			continue
		}
		if tok == json.Delim('}') || tok == json.Delim(']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 {
				stack[len(stack)-1].inKey = true
			}
			continue
		}
		// A value starts.
		if top != nil && !top.object {
			if top.n == lim.array {
				stack = stack[:len(stack)-1]
				return faultArray, path()
			}
			top.n++
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) == lim.depth {
				return faultDepth, path()
			}
			stack = append(stack, &frame{object: tok == json.Delim('{'), names: map[string]bool{}, inKey: true})
		default:
			if top != nil {
				top.inKey = true
			}
		}
	}
}
