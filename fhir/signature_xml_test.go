package fhir

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"io"
	"testing"
)

// tokenWellFormed is the check wellFormedXML replaced: the same reading
// through Decoder.Token, which matches the tags and translates name
// spaces. wellFormedXML must answer as it does on every input.
func tokenWellFormed(raw []byte) bool {
	d := xml.NewDecoder(bytes.NewReader(raw))
	depth, roots := 0, 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return roots == 1 && depth == 0
		}
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(t)) > 0 {
				return false
			}
		}
	}
}

// xmlCases are documents on each side of well-formedness.
var xmlCases = []struct {
	doc  string
	want bool
}{
	{`<a/>`, true},
	{`<a></a>`, true},
	{"<?xml version=\"1.0\"?>\n<!-- c --><a>x<b/>y</a>\n", true},
	{`<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>`, true},
	{`<a xmlns="urn:x"><b xmlns="urn:y"></b></a>`, true},
	{`<p:a></p:a>`, true}, // an undeclared prefix: Token does not refuse it
	{`<p:a></q:a>`, false},
	{`<a:x></x>`, false},
	{`<x></a:x>`, false},
	{`<a></b>`, false},
	{`<a><b></a></b>`, false},
	{`<a>`, false},
	{`</a>`, false},
	{`<a/></a>`, false},
	{`<a/><b/>`, false},
	{`text<a/>`, false},
	{`<a/>text`, false},
	{` <a/> `, true},
	{``, false},
	{`<a b="1" b="2"/>`, true},
	{`<a b=1/>`, false},
	{`<a>&bogus;</a>`, false},
	{`<a><![CDATA[<b>]]></a>`, true},
	{`<!DOCTYPE a><a/>`, true},
}

// TestWellFormedXML: wellFormedXML answers as the Token-based check did,
// on the cases and on the signature of the NHS example.
func TestWellFormedXML(t *testing.T) {
	for _, c := range xmlCases {
		if got, old := wellFormedXML([]byte(c.doc)), tokenWellFormed([]byte(c.doc)); got != c.want || old != c.want {
			t.Errorf("%q: wellFormedXML %v, Token-based %v, want %v", c.doc, got, old, c.want)
		}
	}
	sig := exampleSignature(t)
	if !wellFormedXML(sig) || !tokenWellFormed(sig) {
		t.Errorf("the NHS example's signature is not well-formed: %.200s", sig)
	}
}

// exampleSignature is the XML signature of the 4-item NHS order.
func exampleSignature(t testing.TB) []byte {
	t.Helper()
	body := readFixture(t, order4Items)
	i := bytes.Index(body, []byte(`"data": "`))
	if i < 0 {
		t.Fatal("no signature data in the example")
	}
	i += len(`"data": "`)
	raw, err := base64.StdEncoding.DecodeString(string(body[i : i+bytes.IndexByte(body[i:], '"')]))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// FuzzSignatureXML holds wellFormedXML to the Token-based check it
// replaced: the same answer on every input.
func FuzzSignatureXML(f *testing.F) {
	for _, c := range xmlCases {
		f.Add([]byte(c.doc))
	}
	f.Add(exampleSignature(f))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if got, want := wellFormedXML(raw), tokenWellFormed(raw); got != want {
			t.Errorf("%q: wellFormedXML %v, Token-based check %v", raw, got, want)
		}
	})
}

// BenchmarkSignatureXML checks the NHS example's signature (about 4 KB of
// XML) with wellFormedXML (RawToken) and with the Token-based check it
// replaced.
func BenchmarkSignatureXML(b *testing.B) {
	sig := exampleSignature(b)
	for _, c := range []struct {
		name  string
		check func([]byte) bool
	}{{"RawToken", wellFormedXML}, {"Token", tokenWellFormed}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(sig)))
			for b.Loop() {
				if !c.check(sig) {
					b.Fatal("not well-formed")
				}
			}
		})
	}
}
