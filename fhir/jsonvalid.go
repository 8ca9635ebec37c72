package fhir

import (
	"bytes"
	"slices"
	"unicode/utf8"
)

// Limits on a request, checked in the first pass over it, before any other
// work: no FHIR message the broker reads comes near them (the NHS examples
// nest at most 17 deep and hold at most 20 elements in an array), and with
// them no request can make the readers do more than a few passes over it.
const (
	// MaxJSONDepth is the deepest nesting of objects and arrays a request
	// may have (the top-level object is at depth 1).
	MaxJSONDepth = 64
	// MaxJSONArray is the most elements one array of a request may hold.
	MaxJSONArray = 1000
)

// jsonLimits bounds the JSON text checkJSON accepts.
type jsonLimits struct {
	depth int // nesting of objects and arrays
	array int // elements in one array
}

// limits are the bounds every request is held to. Benchmarks lift them to
// measure the readers on bodies that go past them.
var limits = jsonLimits{depth: MaxJSONDepth, array: MaxJSONArray}

// jsonFault says why checkJSON refused a text.
type jsonFault uint8

const (
	faultNone      jsonFault = iota
	faultSyntax              // not JSON, or not UTF-8
	faultDepth               // nested deeper than the limit
	faultArray               // an array longer than the limit
	faultDuplicate           // a member name given twice in one object
)

// jsonCheck is what checkJSON found: the first fault in the text and, for
// the faults after faultSyntax, the path of the value at fault (the
// container too deep, the array too long, the repeated member).
type jsonCheck struct {
	fault jsonFault
	path  []pathSeg
}

// checkJSON checks that b is one JSON value (RFC 8259) that is valid UTF-8,
// nests at most lim.depth deep, holds at most lim.array elements in each
// array and, when dups is false, no object with two members of the same name
// (names compared after unescaping, case-sensitively, as FHIR does). It reads
// each byte once and keeps, besides the call stack, only the names of the
// objects open at the time; it allocates only for a name that holds escapes
// and for objects of more than a few members. Without limits and with dups
// allowed, it accepts exactly what json.Valid(b) && utf8.Valid(b) accepts
// (FuzzCheckJSON holds it to that), about four times faster.
func checkJSON(b []byte, lim jsonLimits, dups bool) jsonCheck {
	v := validator{b: b, lim: lim, dups: dups, names: make([][]byte, 0, 64)}
	i := v.value(skipSpace(b, 0), 0)
	if i >= 0 && skipSpace(b, i) != len(b) {
		i, v.fault = -1, faultSyntax
	}
	if i >= 0 {
		return jsonCheck{}
	}
	slices.Reverse(v.path)
	return jsonCheck{fault: v.fault, path: v.path}
}

type validator struct {
	b     []byte
	lim   jsonLimits
	dups  bool
	fault jsonFault
	path  []pathSeg // innermost first, built as the calls return
	names [][]byte  // the member names of the open objects, outermost first
}

// fail records fault at b[i] and returns -1.
func (v *validator) fail(fault jsonFault) int {
	v.fault = fault
	return -1
}

// failed adds seg to the path of a fault found inside the value seg names,
// and returns -1.
func (v *validator) failed(seg pathSeg) int {
	if v.fault != faultSyntax {
		v.path = append(v.path, seg)
	}
	return -1
}

// value validates the value at b[i] (nested in depth containers) and returns
// the index just past it, or -1.
func (v *validator) value(i, depth int) int {
	b := v.b
	if i >= len(b) {
		return v.fail(faultSyntax)
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := v.str(i)
		return end
	case c == '{':
		return v.object(i, depth+1)
	case c == '[':
		return v.array(i, depth+1)
	case c == '-' || c >= '0' && c <= '9':
		return v.number(i)
	case c == 't':
		return v.word(i, "true")
	case c == 'f':
		return v.word(i, "false")
	case c == 'n':
		return v.word(i, "null")
	}
	return v.fail(faultSyntax)
}

// smallObject is the number of members up to which an object's names are
// compared one by one; past it they go in a map.
const smallObject = 32

func (v *validator) object(i, depth int) int {
	if depth > v.lim.depth {
		return v.fail(faultDepth)
	}
	first := len(v.names)
	end := v.members(i, depth, first)
	v.names = v.names[:first]
	return end
}

// members validates the members of the object whose opening brace is b[i];
// its names go in v.names from first.
func (v *validator) members(i, depth, first int) int {
	b := v.b
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	var seen map[string]struct{} // the names, once there are many
	for {
		if i >= len(b) || b[i] != '"' {
			return v.fail(faultSyntax)
		}
		start := i
		var escaped bool
		if i, escaped = v.str(i); i < 0 {
			return -1
		}
		name := b[start+1 : i-1]
		if escaped {
			name = literal(b[start:i], true)
		}
		if !v.dups {
			if v.repeated(name, first, &seen) {
				v.fault = faultDuplicate
				return v.failed(pathSeg{key: name, index: -1})
			}
		}
		if i = skipSpace(b, i); i >= len(b) || b[i] != ':' {
			return v.fail(faultSyntax)
		}
		if i = v.value(skipSpace(b, i+1), depth); i < 0 {
			return v.failed(pathSeg{key: name, index: -1})
		}
		if i = skipSpace(b, i); i >= len(b) {
			return v.fail(faultSyntax)
		}
		switch b[i] {
		case '}':
			return i + 1
		case ',':
			i = skipSpace(b, i+1)
		default:
			return v.fail(faultSyntax)
		}
	}
}

// repeated reports whether name is among the names of the object whose
// first name is v.names[first], and adds it to them.
func (v *validator) repeated(name []byte, first int, seen *map[string]struct{}) bool {
	if *seen != nil {
		n := len(*seen)
		(*seen)[string(name)] = struct{}{}
		return len(*seen) == n
	}
	for _, o := range v.names[first:] {
		if bytes.Equal(o, name) {
			return true
		}
	}
	v.names = append(v.names, name)
	if len(v.names)-first > smallObject {
		*seen = make(map[string]struct{}, 2*smallObject)
		for _, o := range v.names[first:] {
			(*seen)[string(o)] = struct{}{}
		}
	}
	return false
}

func (v *validator) array(i, depth int) int {
	b := v.b
	if depth > v.lim.depth {
		return v.fail(faultDepth)
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for n := 0; ; n++ {
		if n == v.lim.array {
			return v.fail(faultArray)
		}
		if i = v.value(i, depth); i < 0 {
			return v.failed(pathSeg{index: n})
		}
		if i = skipSpace(b, i); i >= len(b) {
			return v.fail(faultSyntax)
		}
		switch b[i] {
		case ']':
			return i + 1
		case ',':
			i = skipSpace(b, i+1)
		default:
			return v.fail(faultSyntax)
		}
	}
}

// str validates the string literal whose opening quote is b[i] (no control
// characters, valid escapes, valid UTF-8) and returns the index just past it
// (or -1) and whether it holds escapes.
func (v *validator) str(i int) (end int, escaped bool) {
	b := v.b
	for i++; i < len(b); {
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		switch {
		case c == '"':
			return i + 1, escaped
		case c == '\\':
			escaped = true
			if i++; i >= len(b) {
				return v.fail(faultSyntax), escaped
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+4 >= len(b) || !isHex(b[i+1]) || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) {
					return v.fail(faultSyntax), escaped
				}
				i += 5
			default:
				return v.fail(faultSyntax), escaped
			}
		case c < utf8.RuneSelf: // a control character
			return v.fail(faultSyntax), escaped
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				return v.fail(faultSyntax), escaped
			}
			i += n
		}
	}
	return v.fail(faultSyntax), escaped
}

// number validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func (v *validator) number(i int) int {
	b := v.b
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return v.fail(faultSyntax)
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return v.fail(faultSyntax)
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return v.fail(faultSyntax)
		}
		i = j
	}
	return i
}

// digits returns the index of the first byte at or after i that is not a
// decimal digit.
func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// word validates the literal w (true, false or null) at b[i].
func (v *validator) word(i int, w string) int {
	if len(v.b)-i < len(w) || string(v.b[i:i+len(w)]) != w {
		return v.fail(faultSyntax)
	}
	return i + len(w)
}

// plainByte tells the bytes that a string may hold as they are and that
// need no further look: ASCII but control characters, quote and backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
