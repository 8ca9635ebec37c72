// Package ojson is a JSON tree that keeps what encoding/json's generic
// decoding loses: the order of object members and the exact text of every
// string and number. The broker uses it where it must add to a message it
// forwards (the release answer of a repeat dispensing issue, the answer to a
// cancellation) without rewriting the rest; tests use it to vary messages.
package ojson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Node is a JSON value: an object (Kind '{'), an array ('[') or a scalar
// (Kind 0, its JSON text in Scalar).
type Node struct {
	Kind    byte
	Members []Member
	Elems   []*Node
	Scalar  string
}

// Member is one member of an object.
type Member struct {
	Name  string
	Value *Node
}

// Parse parses one JSON value.
func Parse(b []byte) (*Node, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	n, err := parse(d, b)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("ojson: data after the JSON value")
	}
	return n, nil
}

// MustParse is Parse for JSON the caller wrote; it panics on an error.
func MustParse(s string) *Node {
	n, err := Parse([]byte(s))
	if err != nil {
		panic(err)
	}
	return n
}

func parse(d *json.Decoder, b []byte) (*Node, error) {
	start := d.InputOffset()
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	delim, ok := t.(json.Delim)
	if !ok { // a scalar: its text as written
		raw := bytes.TrimLeft(b[start:d.InputOffset()], " \t\r\n,:")
		return &Node{Scalar: string(raw)}, nil
	}
	switch delim {
	case '{':
		n := &Node{Kind: '{'}
		for d.More() {
			k, err := d.Token()
			if err != nil {
				return nil, err
			}
			v, err := parse(d, b)
			if err != nil {
				return nil, err
			}
			n.Members = append(n.Members, Member{k.(string), v})
		}
		_, err := d.Token()
		return n, err
	case '[':
		n := &Node{Kind: '['}
		for d.More() {
			v, err := parse(d, b)
			if err != nil {
				return nil, err
			}
			n.Elems = append(n.Elems, v)
		}
		_, err := d.Token()
		return n, err
	}
	return nil, fmt.Errorf("ojson: unexpected %v", delim)
}

// Get returns the value of member name of object n, or nil.
func (n *Node) Get(name string) *Node {
	if n == nil {
		return nil
	}
	for _, m := range n.Members {
		if m.Name == name {
			return m.Value
		}
	}
	return nil
}

// Set sets member name of object n to v: in its place when n has it,
// else as a new last member.
func (n *Node) Set(name string, v *Node) {
	for i, m := range n.Members {
		if m.Name == name {
			n.Members[i].Value = v
			return
		}
	}
	n.Members = append(n.Members, Member{name, v})
}

// Delete removes member name of object n, if it has one.
func (n *Node) Delete(name string) {
	if n == nil {
		return
	}
	n.Members = slices.DeleteFunc(n.Members, func(m Member) bool { return m.Name == name })
}

// Of is the tree of v encoded by encoding/json (without escaping HTML
// characters): for a value the caller builds from Go types. It panics when
// v cannot be encoded.
func Of(v any) *Node {
	n, err := Parse(marshal(v))
	if err != nil {
		panic(err)
	}
	return n
}

// Str returns the string value of n, "" when n is not a string.
func (n *Node) Str() string {
	var s string
	if n == nil || len(n.Scalar) == 0 || n.Scalar[0] != '"' || n.Kind != 0 || json.Unmarshal([]byte(n.Scalar), &s) != nil {
		return ""
	}
	return s
}

// String returns a string scalar.
func String(s string) *Node { return &Node{Scalar: string(marshal(s))} }

// Walk calls f on every object of the tree, parents first.
func (n *Node) Walk(f func(*Node)) {
	if n.Kind == '{' {
		f(n)
	}
	for _, m := range n.Members {
		m.Value.Walk(f)
	}
	for _, e := range n.Elems {
		e.Walk(f)
	}
}

// Clone returns a deep copy of n.
func (n *Node) Clone() *Node {
	c := &Node{Kind: n.Kind, Scalar: n.Scalar}
	for _, m := range n.Members {
		c.Members = append(c.Members, Member{m.Name, m.Value.Clone()})
	}
	for _, e := range n.Elems {
		c.Elems = append(c.Elems, e.Clone())
	}
	return c
}

// Encode writes n as JSON, indented with indent ("" for compact).
func (n *Node) Encode(indent string) []byte {
	var b strings.Builder
	n.write(&b, indent, 0)
	return []byte(b.String())
}

func (n *Node) write(b *strings.Builder, indent string, depth int) {
	newline := func(d int) {
		if indent != "" {
			b.WriteByte('\n')
			b.WriteString(strings.Repeat(indent, d))
		}
	}
	switch n.Kind {
	case '{':
		b.WriteByte('{')
		for i, m := range n.Members {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			b.Write(marshal(m.Name))
			b.WriteByte(':')
			if indent != "" {
				b.WriteByte(' ')
			}
			m.Value.write(b, indent, depth+1)
		}
		if len(n.Members) > 0 {
			newline(depth)
		}
		b.WriteByte('}')
	case '[':
		b.WriteByte('[')
		for i, e := range n.Elems {
			if i > 0 {
				b.WriteByte(',')
			}
			newline(depth + 1)
			e.write(b, indent, depth+1)
		}
		if len(n.Elems) > 0 {
			newline(depth)
		}
		b.WriteByte(']')
	default:
		b.WriteString(n.Scalar)
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

// Items returns the elements of array n (nil when n is nil or not an
// array).
func (n *Node) Items() []*Node {
	if n == nil || n.Kind != '[' {
		return nil
	}
	return n.Elems
}
