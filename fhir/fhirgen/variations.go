package fhirgen

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
)

// Real prescribing and dispensing systems send what EPS accepts, not what
// the NHS examples happen to look like: members in another order, entries
// in another order (the MessageHeader stays first, as FHIR requires),
// codings in another order, other whitespace, and elements EPS never reads.
// Variations makes such messages from one, so that every test of a
// fixture can be run over its variations too. Each variation means the
// same message to EPS.

// Variation is one variant of a message.
type Variation struct {
	Name string
	Body []byte
}

// Variations returns variants of the FHIR resource body (a message Bundle,
// Parameters, Task or Claim), made with the random seed. They are:
//
//	reversed-members   every object's members in reverse order
//	shuffled-members   every object's members shuffled
//	shuffled-entries   Bundle.entry shuffled, the first entry kept first
//	reversed-codings   every coding list in reverse order
//	compact            no insignificant whitespace
//	indented           indented with tabs
//	unread-elements    meta, text and an extension with an unknown URL
//	                   added to every resource (FHIR allows them; EPS does
//	                   not read them)
func Variations(body []byte, seed uint64) []Variation {
	root, err := ojson.Parse(body)
	if err != nil {
		panic(fmt.Sprintf("fhirgen.Variations: %v", err))
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	vary := func(name string, edit func(n *ojson.Node)) Variation {
		n := root.Clone()
		edit(n)
		return Variation{Name: name, Body: n.Encode("")}
	}
	return []Variation{
		vary("reversed-members", func(n *ojson.Node) { n.Walk(func(n *ojson.Node) { slices.Reverse(n.Members) }) }),
		vary("shuffled-members", func(n *ojson.Node) {
			n.Walk(func(n *ojson.Node) {
				rng.Shuffle(len(n.Members), func(i, j int) { n.Members[i], n.Members[j] = n.Members[j], n.Members[i] })
			})
		}),
		vary("shuffled-entries", func(n *ojson.Node) {
			if e := n.Get("entry"); e != nil && len(e.Elems) > 2 {
				rest := e.Elems[1:]
				for range 4 { // a permutation other than the identity, most of the time
					rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
				}
			}
		}),
		vary("reversed-codings", func(n *ojson.Node) {
			n.Walk(func(n *ojson.Node) {
				if c := n.Get("coding"); c != nil {
					slices.Reverse(c.Elems)
				}
			})
		}),
		{Name: "compact", Body: root.Encode("")},
		{Name: "indented", Body: root.Encode("\t")},
		vary("unread-elements", func(n *ojson.Node) { n.Walk(addUnread) }),
	}
}

// unreadExtension is an extension whose URL no EPS profile defines.
const unreadExtension = "https://example.org/fhir/StructureDefinition/Extension-Supplier-Note"

// addUnread adds meta, text and an extension with an unknown URL to n when
// n is a resource.
func addUnread(n *ojson.Node) {
	if n.Kind != '{' || n.Get("resourceType") == nil {
		return
	}
	if n.Get("meta") == nil {
		n.Members = append(n.Members, ojson.Member{Name: "meta", Value: ojson.MustParse(`{"lastUpdated":"2024-01-01T00:00:00+00:00","source":"supplier-system"}`)})
	}
	if n.Get("text") == nil && n.Get("resourceType").Scalar != `"Bundle"` && n.Get("resourceType").Scalar != `"Parameters"` {
		n.Members = append(n.Members, ojson.Member{Name: "text", Value: ojson.MustParse(`{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">supplier narrative</div>"}`)})
	}
	switch rt := n.Get("resourceType").Scalar; rt {
	case `"Bundle"`, `"Parameters"`: // no extension element
	default:
		ext := ojson.MustParse(`{"url":"` + unreadExtension + `","valueString":"not read by EPS"}`)
		if e := n.Get("extension"); e != nil {
			e.Elems = append(e.Elems, ext)
		} else {
			n.Members = append(n.Members, ojson.Member{Name: "extension", Value: &ojson.Node{Kind: '[', Elems: []*ojson.Node{ext}}})
		}
	}
}
