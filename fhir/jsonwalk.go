package fhir

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// This file holds a small pull decoder for JSON text that checkJSON has
// already accepted (so that no member is repeated). Its time is linear in
// the text it reads, however many errors the text holds. It hands out
// sub-slices of the input, allocates only the Go strings it returns (and
// when unescaping a string that holds escapes), matches keys
// case-sensitively as FHIR requires, and records the first JSON type
// mismatch with its FHIRPath.
//
// On text that is not valid JSON it never panics and always terminates
// (every loop moves forward), but what it reads is then meaningless.

// isSpace reports whether c is JSON whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the index of the first non-whitespace byte of b at or
// after i (len(b) if there is none). Indentation is skipped eight spaces at
// a time.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

const eightSpaces = 0x2020202020202020

// stringEnd returns the index just past the string literal whose opening
// quote is b[i], and whether the literal holds escapes.
func stringEnd(b []byte, i int) (end int, escaped bool) {
	j := i + 1
	for j <= len(b) {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			break
		}
		q += j
		bs := bytes.IndexByte(b[j:q], '\\')
		if bs < 0 {
			return q + 1, escaped
		}
		// An escape before the quote: step over escapes one by one.
		escaped = true
		for j += bs; j < q; j++ {
			if b[j] == '\\' {
				j++ // the escaped byte, which may be the quote
			}
		}
		if j == q {
			return q + 1, true
		}
	}
	return len(b), escaped
}

// valueEnd returns the index just past the JSON value that starts at b[i]
// (a non-whitespace byte). The result is always greater than i.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _ := stringEnd(b, i)
		return end
	case '{', '[':
		return containerEnd(b, i+1)
	default: // number, true, false, null
		j := i + 1
		for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ':' {
			j++
		}
		return j
	}
}

// containerEnd returns the index just past the bracket or brace that closes
// the object or array in which b[i] is (b[i] is not inside one of its
// strings); len(b) if none does.
func containerEnd(b []byte, i int) int {
	depth := 1
	for i < len(b) {
		if !structural[b[i]] {
			i++
			continue
		}
		switch b[i] {
		case '"':
			i, _ = stringEnd(b, i)
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(b)
}

// structural tells the bytes that valueEnd looks at within an object or
// array.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// literal returns the content of the string literal lit (quotes included)
// with its escapes decoded. Without escapes it is a sub-slice of lit.
func literal(lit []byte, escaped bool) []byte {
	if len(lit) < 2 {
		return nil
	}
	if !escaped {
		return lit[1 : len(lit)-1]
	}
	// Escapes are rare in FHIR: let encoding/json decode them, so that the
	// result is exactly what a consumer decoding with it would see.
	var s string
	if json.Unmarshal(lit, &s) != nil {
		return nil
	}
	return []byte(s)
}

// jsonKind names the JSON type of the raw value v, for diagnostics.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// reader is a cursor on a JSON value b, whose FHIRPath is root (or the
// resource of Bundle.entry[entry] when entry >= 0). It records the first type
// mismatch in err. Like encoding/json, it takes null for an absent value.
//
// It keeps the path from the top of b to the member or element being read
// (one step pushed and popped per member or element, no allocation once the
// stack has grown), so that naming the FHIRPath of an error costs its length,
// not a new walk of b: decoding stays linear in the size of b however many
// elements are bad. Once an error is recorded, the rest of the array being
// read is skipped without reading its elements: the error recorded first is
// the one reported.
type reader struct {
	b     []byte
	i     int
	root  string
	entry int
	path  []pathSeg
	err   *Error
}

// newReader reads b, whose FHIRPath is root.
func newReader(b []byte, root string) reader {
	return reader{b: b, i: skipSpace(b, 0), root: root, entry: -1, path: make([]pathSeg, 0, pathCap)}
}

// pathCap is the depth of path a reader holds without growing: more than
// the resources of the NHS examples nest.
const pathCap = 12

// entryReader reads res, the resource of Bundle entry k.
func entryReader(res []byte, k int) reader {
	return reader{b: res, i: skipSpace(res, 0), entry: k, path: make([]pathSeg, 0, pathCap)}
}

// expr is the FHIRPath of the member or element being read (of b itself at
// the top).
func (r *reader) expr() string {
	root := r.root
	if r.entry >= 0 {
		root = entryPath(r.entry, "")
	}
	return fhirPath(root, r.path)
}

// peek returns the first byte of the value at the cursor (0 at the end).
func (r *reader) peek() byte {
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// skip moves past the value at the cursor.
func (r *reader) skip() {
	if r.i < len(r.b) {
		r.i = valueEnd(r.b, r.i)
	}
}

// fail records err, unless an error is already recorded.
func (r *reader) fail(err *Error) {
	if r.err == nil {
		r.err = err
	}
}

// mismatch records that the value at the cursor is not want (unless an
// error is already recorded: its FHIRPath is then not worked out), and skips
// it.
func (r *reader) mismatch(want string) {
	if r.err == nil {
		r.fail(wrongType(r.expr(), r.b[min(r.i, len(r.b)):], want))
	}
	r.skip()
}

// capture runs read and returns the error it records, leaving r.err as it
// was: checks can then report errors in their own order.
func (r *reader) capture(read func()) *Error {
	saved := r.err
	r.err = nil
	read()
	err := r.err
	r.err = saved
	return err
}

// object reads the object at the cursor: it calls fn with each key, the
// cursor on the member's value, and skips the values fn does not read. It
// returns false (after recording a mismatch) if the value is not an object.
func (r *reader) object(fn func(key []byte)) bool {
	switch r.peek() {
	case '{':
	case 'n':
		r.skip()
		return true
	default:
		r.mismatch("an object")
		return false
	}
	b := r.b
	top := len(r.path)
	r.path = append(r.path, pathSeg{index: -1})
	for r.i++; ; r.i++ {
		r.i = skipSpace(b, r.i)
		if r.i >= len(b) || b[r.i] != '"' {
			break // '}' (or text that is not JSON)
		}
		kEnd, esc := stringEnd(b, r.i)
		key := literal(b[r.i:kEnd], esc)
		r.i = skipSpace(b, kEnd)
		if r.i < len(b) && b[r.i] == ':' {
			r.i = skipSpace(b, r.i+1)
		}
		start := r.i
		r.path[top].key = key
		fn(key)
		if r.i == start {
			r.skip()
		}
		if r.i = skipSpace(b, r.i); r.i >= len(b) || b[r.i] != ',' {
			break
		}
	}
	r.path = r.path[:top]
	r.i = min(r.i+1, len(b)) // the closing brace
	return true
}

// array reads the array at the cursor: it calls fn with each index, the
// cursor on the element, and skips the elements fn does not read. It returns
// false (after recording a mismatch) if the value is not an array.
func (r *reader) array(fn func(i int)) bool {
	switch r.peek() {
	case '[':
	case 'n':
		r.skip()
		return true
	default:
		r.mismatch("an array")
		return false
	}
	b := r.b
	top := len(r.path)
	r.path = append(r.path, pathSeg{})
	r.i++
	for n := 0; ; n++ {
		if r.i = skipSpace(b, r.i); r.i >= len(b) || b[r.i] == ']' {
			break
		}
		if r.err != nil {
			// The error reported is already known: skip the rest.
			r.i = containerEnd(b, r.i) - 1
			break
		}
		start := r.i
		r.path[top].index = n
		fn(n)
		if r.i == start {
			r.skip()
		}
		if r.i = skipSpace(b, r.i); r.i >= len(b) || b[r.i] != ',' {
			break
		}
		r.i++
	}
	r.path = r.path[:top]
	r.i = min(r.i+1, len(b)) // the closing bracket
	return true
}

// bytes reads the string at the cursor and returns its content, a sub-slice
// of the input unless it holds escapes; nil for null or a mismatch.
func (r *reader) bytes() []byte {
	switch r.peek() {
	case '"':
		end, esc := stringEnd(r.b, r.i)
		s := literal(r.b[r.i:end], esc)
		r.i = end
		return s
	case 'n':
		r.skip()
		return nil
	}
	r.mismatch("a string")
	return nil
}

// str reads the string at the cursor ("" for null or a mismatch). A value
// of internedValues is returned without allocating.
func (r *reader) str() string {
	b := r.bytes()
	if len(b) >= minInterned && len(b) <= maxInterned {
		if s, ok := internedValues[string(b)]; ok { // no allocation: the key is not kept
			return s
		}
	}
	return string(b)
}

// internedValues are the code systems, identifier systems and extension
// URLs that recur in every message (each an order reads dozens of times):
// the readers hand out these strings instead of a copy of each. The
// lengths bound the values looked up, so that other strings (names, IDs,
// texts) pay no look-up.
var internedValues = func() map[string]string {
	m := map[string]string{}
	for _, s := range [...]string{
		SystemODSCode, SystemNHSNumber, SystemPrescriptionID, SystemLineItemID, SystemCourseOfTherapy,
		SystemSDSUserID, SystemSDSRoleProfileID, SystemMessageEvent, SystemMessageID, SystemDispenseType,
		SystemDispenseItemNumber, SystemTaskBusinessStatus, SystemCancellationReason,
		ExtReplacementOf, ExtPrescriptionLongID, ExtPrescriptionType, ExtPerformerSiteType,
		ExtResponsiblePractitioner, ExtTaskBusinessStatus, ExtControlledDrug, ExtGroupIdentifier,
		"http://snomed.info/sct",
		"http://unitsofmeasure.org",
		"http://terminology.hl7.org/CodeSystem/medicationrequest-category",
		"https://fhir.nhs.uk/Id/prescription",
		"https://fhir.nhs.uk/CodeSystem/prescription-type",
		"https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
		"https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
		"https://fhir.nhs.uk/CodeSystem/organisation-role",
		"https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy",
		"https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation",
		"https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation",
		"https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation",
		"https://fhir.hl7.org.uk/Id/gmc-number",
		"https://fhir.hl7.org.uk/Id/din-number",
		"https://fhir.hl7.org.uk/Id/professional-code",
		"numberOfRepeatsAllowed",
		"numberOfRepeatsIssued",
		"authorisationExpiryDate",
		"urn:iso-astm:E1762-95:2013",
	} {
		m[s] = s
		minInterned, maxInterned = min(minInterned, len(s)), max(maxInterned, len(s))
	}
	return m
}()

// minInterned and maxInterned are the shortest and longest internedValues.
var minInterned, maxInterned = 1 << 30, 0

// raw returns the value at the cursor as it is, and skips it.
func (r *reader) raw() []byte {
	start := r.i
	r.skip()
	return r.b[start:r.i]
}

// number returns the text of the number at the cursor, or nil (after
// recording a mismatch unless the value is null).
func (r *reader) number() []byte {
	switch c := r.peek(); {
	case c == '-' || c >= '0' && c <= '9':
		return r.raw()
	case c == 'n':
		r.skip()
	default:
		r.mismatch("a number")
	}
	return nil
}

// float reads the number at the cursor; ok is false when it is absent or
// not a float64.
func (r *reader) float() (v float64, ok bool) {
	start := r.i
	if n := r.number(); n != nil {
		var err error
		if v, err = strconv.ParseFloat(string(n), 64); err == nil {
			return v, true
		}
		r.i = start
		r.mismatch("a number that fits a float64")
	}
	return 0, false
}

// integer reads the integer at the cursor; ok is false when it is absent or
// not an integer (a fraction or an exponent is a mismatch, as in
// encoding/json).
func (r *reader) integer() (v int, ok bool) {
	start := r.i
	if n := r.number(); n != nil {
		v64, err := strconv.ParseInt(string(n), 10, 0)
		if err == nil {
			return int(v64), true
		}
		r.i = start
		r.mismatch("an integer")
	}
	return 0, false
}

// list reads the array at the cursor into *dst (replacing what it held),
// reading each element with read.
func list[T any](r *reader, dst *[]T, read func(*T)) {
	*dst = (*dst)[:0]
	r.array(func(int) {
		var zero T
		*dst = append(*dst, zero)
		read(&(*dst)[len(*dst)-1])
	})
}
