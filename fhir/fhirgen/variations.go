package fhirgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
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
	root, err := parseOrdered(body)
	if err != nil {
		panic(fmt.Sprintf("fhirgen.Variations: %v", err))
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	vary := func(name string, edit func(n *node)) Variation {
		n := root.clone()
		edit(n)
		return Variation{Name: name, Body: n.encode("")}
	}
	return []Variation{
		vary("reversed-members", func(n *node) { n.walk(func(n *node) { slices.Reverse(n.members) }) }),
		vary("shuffled-members", func(n *node) {
			n.walk(func(n *node) {
				rng.Shuffle(len(n.members), func(i, j int) { n.members[i], n.members[j] = n.members[j], n.members[i] })
			})
		}),
		vary("shuffled-entries", func(n *node) {
			if e := n.get("entry"); e != nil && len(e.elems) > 2 {
				rest := e.elems[1:]
				for range 4 { // a permutation other than the identity, most of the time
					rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
				}
			}
		}),
		vary("reversed-codings", func(n *node) {
			n.walk(func(n *node) {
				if c := n.get("coding"); c != nil {
					slices.Reverse(c.elems)
				}
			})
		}),
		{Name: "compact", Body: root.encode("")},
		{Name: "indented", Body: root.encode("\t")},
		vary("unread-elements", func(n *node) { n.walk(addUnread) }),
	}
}

// unreadExtension is an extension whose URL no EPS profile defines.
const unreadExtension = "https://example.org/fhir/StructureDefinition/Extension-Supplier-Note"

// addUnread adds meta, text and an extension with an unknown URL to n when
// n is a resource.
func addUnread(n *node) {
	if n.kind != '{' || n.get("resourceType") == nil {
		return
	}
	if n.get("meta") == nil {
		n.members = append(n.members, member{"meta", mustParse(`{"lastUpdated":"2024-01-01T00:00:00+00:00","source":"supplier-system"}`)})
	}
	if n.get("text") == nil && n.get("resourceType").scalar != `"Bundle"` && n.get("resourceType").scalar != `"Parameters"` {
		n.members = append(n.members, member{"text", mustParse(`{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">supplier narrative</div>"}`)})
	}
	switch rt := n.get("resourceType").scalar; rt {
	case `"Bundle"`, `"Parameters"`: // no extension element
	default:
		ext := mustParse(`{"url":"` + unreadExtension + `","valueString":"not read by EPS"}`)
		if e := n.get("extension"); e != nil {
			e.elems = append(e.elems, ext)
		} else {
			n.members = append(n.members, member{"extension", &node{kind: '[', elems: []*node{ext}}})
		}
	}
}

// node is a JSON value that keeps the order of its object members.
type node struct {
	kind    byte // '{', '[' or 0 for a scalar
	members []member
	elems   []*node
	scalar  string // the scalar's JSON text
}

type member struct {
	name  string
	value *node
}

func mustParse(s string) *node {
	n, err := parseOrdered([]byte(s))
	if err != nil {
		panic(err)
	}
	return n
}

// parseOrdered parses one JSON value.
func parseOrdered(b []byte) (*node, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	n, err := parseNode(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return n, nil
}

func parseNode(d *json.Decoder) (*node, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			n := &node{kind: '{'}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				val, err := parseNode(d)
				if err != nil {
					return nil, err
				}
				n.members = append(n.members, member{k.(string), val})
			}
			_, err := d.Token()
			return n, err
		case '[':
			n := &node{kind: '['}
			for d.More() {
				val, err := parseNode(d)
				if err != nil {
					return nil, err
				}
				n.elems = append(n.elems, val)
			}
			_, err := d.Token()
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", v)
	case json.Number:
		return &node{scalar: v.String()}, nil
	case nil:
		return &node{scalar: "null"}, nil
	default:
		return &node{scalar: string(marshal(v))}, nil
	}
}

func marshal(v any) []byte {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// get returns the value of member name of object n, or nil.
func (n *node) get(name string) *node {
	for _, m := range n.members {
		if m.name == name {
			return m.value
		}
	}
	return nil
}

// walk calls f on every object of the tree, parents first.
func (n *node) walk(f func(*node)) {
	if n.kind == '{' {
		f(n)
	}
	for _, m := range n.members {
		m.value.walk(f)
	}
	for _, e := range n.elems {
		e.walk(f)
	}
}

func (n *node) clone() *node {
	c := &node{kind: n.kind, scalar: n.scalar}
	for _, m := range n.members {
		c.members = append(c.members, member{m.name, m.value.clone()})
	}
	for _, e := range n.elems {
		c.elems = append(c.elems, e.clone())
	}
	return c
}

// encode writes n as JSON, indented with indent ("" for compact).
func (n *node) encode(indent string) []byte {
	var b strings.Builder
	n.write(&b, indent, 0)
	return []byte(b.String())
}

func (n *node) write(b *strings.Builder, indent string, depth int) {
	newline := func(d int) {
		if indent != "" {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(indent, d))
		}
	}
	switch n.kind {
	case '{':
		b.WriteByte('{')
		for i, m := range n.members {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			b.Write(marshal(m.name))
			b.WriteByte(':')
			if indent != "" {
				b.WriteByte(' ')
			}
			m.value.write(b, indent, depth+1)
		}
		if len(n.members) > 0 {
			newline(depth)
		}
		b.WriteByte('}')
	case '[':
		b.WriteByte('[')
		for i, e := range n.elems {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			e.write(b, indent, depth+1)
		}
		if len(n.elems) > 0 {
			newline(depth)
		}
		b.WriteByte(']')
	default:
		b.WriteString(n.scalar)
	}
}
