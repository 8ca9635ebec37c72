package fhir

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var validSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0`, `1.5e-3`, `-12.0E+4`, `true`, `false`, `null`, ` {"a" : [1, "b", {"c": null}] } `,
	`"\u00e9\ud83d\ude00\"\\\/\b\f\n\r\t"`, `"é😀"`, "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\x01\"", `"\x"`, `"\u12G4"`,
	`01`, `1.`, `.5`, `1e`, `+1`, `-`, `tru`, `nul`, `truex`, `{"a"}`, `{"a":}`, `{"a":1,}`, `[1,]`, `[,]`, `{,}`,
	`{"a":1 "b":2}`, `[1 2]`, `{} {}`, ``, ` `, `{"a":1}x`, "\"\t\"", `"`, `"\`, "[\"\xc3\"]", "{\"\xe2\x82\":1}",
}

func TestValidJSON(t *testing.T) {
	for _, s := range validSeeds {
		want := json.Valid([]byte(s)) && utf8.Valid([]byte(s))
		if got := validJSON([]byte(s)); got != want {
			t.Errorf("validJSON(%q) = %v, want %v", s, got, want)
		}
	}
	// encoding/json's nesting limit.
	for _, n := range []int{maxDepth, maxDepth + 1} {
		s := strings.Repeat("[", n) + strings.Repeat("]", n)
		if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want || got != (n <= maxDepth) {
			t.Errorf("depth %d: validJSON %v, json.Valid %v", n, got, want)
		}
	}
	for _, rel := range findFixtures(t, func(string) bool { return true }) {
		if !validJSON(readFixture(t, rel)) {
			t.Errorf("%s: not valid", rel)
		}
	}
}

// FuzzValidJSON holds validJSON to json.Valid && utf8.Valid.
func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add([]byte(s))
	}
	f.Add(readFixture(f, order4Items))
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b) && utf8.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, want %v", b, got, want)
		}
	})
}
