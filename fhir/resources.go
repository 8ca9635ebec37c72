package fhir

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Identifier systems, extension URLs and code systems of the NHS profiles.
const (
	SystemODSCode         = "https://fhir.nhs.uk/Id/ods-organization-code"
	SystemNHSNumber       = "https://fhir.nhs.uk/Id/nhs-number"
	SystemPrescriptionID  = "https://fhir.nhs.uk/Id/prescription-order-number"
	SystemLineItemID      = "https://fhir.nhs.uk/Id/prescription-order-item-number"
	SystemCourseOfTherapy = "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy"
	ExtReplacementOf      = "https://fhir.nhs.uk/StructureDefinition/Extension-replacementOf"
	ExtPrescriptionLongID = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId"
	ExtPrescriptionType   = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType"
	ExtPerformerSiteType  = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType"
)

// The small structs below hold only the elements of FHIR resources that the
// broker reads, and their readers skip the rest.

type identifier struct {
	System string
	Value  string
}

func (r *reader) identifier(id *identifier) {
	r.object(func(key []byte) {
		switch string(key) {
		case "system":
			id.System = r.str()
		case "value":
			id.Value = r.str()
		}
	})
}

type reference struct {
	Reference  string
	Identifier identifier
	Display    string
}

func (r *reader) reference(ref *reference) {
	r.object(func(key []byte) {
		switch string(key) {
		case "reference":
			ref.Reference = r.str()
		case "identifier":
			r.identifier(&ref.Identifier)
		case "display":
			ref.Display = r.str()
		}
	})
}

func (r *reader) coding(c *Coding) {
	r.object(func(key []byte) {
		switch string(key) {
		case "system":
			c.System = r.str()
		case "code":
			c.Code = r.str()
		case "display":
			c.Display = r.str()
		}
	})
}

func (r *reader) concept(c *Concept) {
	r.object(func(key []byte) {
		if string(key) == "coding" {
			list(r, &c.Coding, r.coding)
		}
	})
}

type extension struct {
	URL             string
	ValueCoding     *Coding
	ValueIdentifier *identifier
	ValueReference  *reference
	// ValueInt is a valueInteger or valueUnsignedInt as it is in the
	// request, unchecked (its checks are the reader's of the extension that
	// holds it): its key and its raw JSON.
	ValueInt      rawValue
	ValueDateTime *string     // valueDateTime, nil when absent
	Extension     []extension // a complex extension's parts
	raw           []byte      // the extension's JSON, when read by reader.extensions
}

// rawValue is the raw JSON of the member key of an object, kept unchecked.
type rawValue struct {
	key string
	b   []byte
}

func (r *reader) extension(e *extension) {
	r.object(func(key []byte) {
		switch string(key) {
		case "url":
			e.URL = r.str()
		case "valueCoding":
			e.ValueCoding = new(Coding)
			r.coding(e.ValueCoding)
		case "valueIdentifier":
			e.ValueIdentifier = new(identifier)
			r.identifier(e.ValueIdentifier)
		case "valueReference":
			e.ValueReference = new(reference)
			r.reference(e.ValueReference)
		case "valueInteger":
			e.ValueInt = rawValue{"valueInteger", r.raw()}
		case "valueUnsignedInt":
			e.ValueInt = rawValue{"valueUnsignedInt", r.raw()}
		case "valueDateTime":
			v := r.str()
			e.ValueDateTime = &v
		case "extension":
			list(r, &e.Extension, r.extension)
		}
	})
}

type period struct {
	Start string
	End   string
}

func (r *reader) period(p *period) {
	r.object(func(key []byte) {
		switch string(key) {
		case "start":
			p.Start = r.str()
		case "end":
			p.End = r.str()
		}
	})
}

type quantity struct {
	Value    float64
	HasValue bool
	Unit     string
	Code     string
}

func (r *reader) quantity(q *quantity) {
	r.object(func(key []byte) {
		switch string(key) {
		case "value":
			q.Value, q.HasValue = r.float()
		case "unit":
			q.Unit = r.str()
		case "code":
			q.Code = r.str()
		}
	})
}

// findExtension returns the first extension with the given url, or nil.
func findExtension(exts []extension, url string) *extension {
	for i := range exts {
		if exts[i].URL == url {
			return &exts[i]
		}
	}
	return nil
}

// extensionCode returns valueCoding.code of the extension with the given url.
func extensionCode(exts []extension, url string) string {
	if e := findExtension(exts, url); e != nil && e.ValueCoding != nil {
		return e.ValueCoding.Code
	}
	return ""
}

// extensionIdentifier returns valueIdentifier.value of the extension with the
// given url.
func extensionIdentifier(exts []extension, url string) string {
	if e := findExtension(exts, url); e != nil && e.ValueIdentifier != nil {
		return e.ValueIdentifier.Value
	}
	return ""
}

// findIdentifier returns the index of the first identifier with the given
// system, or -1.
func findIdentifier(ids []identifier, system string) int {
	for j, id := range ids {
		if id.System == system {
			return j
		}
	}
	return -1
}

// fieldPath is the FHIRPath of an element, kept in parts and formatted only
// when an error needs it: the resource of Bundle.entry[entry] (or root when
// entry < 0), then field, then, when index >= 0, [index] and rest.
type fieldPath struct {
	root  string
	entry int
	field string
	index int
	rest  string
}

// inEntry is the path of field in the resource of Bundle.entry[k].
func inEntry(k int, field string) fieldPath { return fieldPath{entry: k, field: field, index: -1} }

// under is the path of field under root, e.g. MessageHeader.
func under(root, field string) fieldPath {
	return fieldPath{root: root, entry: -1, field: field, index: -1}
}

// at is the path of rest in element i of the repeating element p.
func (p fieldPath) at(i int, rest string) fieldPath {
	p.index, p.rest = i, rest
	return p
}

func (p fieldPath) String() string {
	var sb strings.Builder
	if p.entry >= 0 {
		sb.WriteString("Bundle.entry[")
		sb.WriteString(strconv.Itoa(p.entry))
		sb.WriteString("].resource")
	} else {
		sb.WriteString(p.root)
	}
	if p.field != "" {
		sb.WriteByte('.')
		sb.WriteString(p.field)
	}
	if p.index >= 0 {
		sb.WriteByte('[')
		sb.WriteString(strconv.Itoa(p.index))
		sb.WriteByte(']')
		sb.WriteString(p.rest)
	}
	return sb.String()
}

// entryPath is the FHIRPath of field (which may be empty) in the resource of
// Bundle.entry[k].
func entryPath(k int, field string) string { return inEntry(k, field).String() }

// readEntry reads the resource of entry k of m with read.
func readEntry(m *Message, k int, read func(r *reader)) *Error {
	r := entryReader(m.Entries[k].Resource, k)
	read(&r)
	return r.err
}

// Error constructors shared by every check: one per kind of finding.

// missing is MISSING_VALUE: a required element is absent.
func missing(expr, format string, args ...any) *Error {
	return Invalid(CodeMissingValue, "required", expr, format, args...)
}

// badValue is INVALID_VALUE: an element's value is not allowed or malformed.
func badValue(expr, format string, args ...any) *Error {
	return Invalid(CodeInvalidValue, "value", expr, format, args...)
}

// inconsistent is INVALID_VALUE: elements contradict each other.
func inconsistent(expr, format string, args ...any) *Error {
	return Invalid(CodeInvalidValue, "invalid", expr, format, args...)
}

// wrongType is INVALID_VALUE "structure": an element has the wrong JSON type.
func wrongType(expr string, v []byte, want string) *Error {
	return Invalid(CodeInvalidValue, "structure", expr, "%s must be %s, found %s", expr, want, jsonKind(v))
}

// requireUUID checks that v, the value at p, is present and a UUID.
func requireUUID(v string, p fieldPath) *Error {
	switch {
	case v == "":
		return missing(p.String(), "%s is missing: it must be a UUID", p)
	case !ValidUUID(v):
		return badValue(p.String(), "%s %s is not a UUID (8-4-4-4-12 hexadecimal digits)", p, quote(v))
	}
	return nil
}

// requireODS checks that v, the value at p, is present and a well-formed ODS
// organisation code.
func requireODS(v string, p fieldPath) *Error {
	if v == "" {
		return missing(p.String(), "%s is missing: it must be an ODS organisation code", p)
	}
	return optionalODS(v, p)
}

// optionalODS checks that v, the value at p, is a well-formed ODS
// organisation code when it is present.
func optionalODS(v string, p fieldPath) *Error {
	if v != "" && !ValidODSCode(v) {
		return badValue(p.String(), "%s %s is not a valid ODS organisation code (1 to 8 letters, digits and '-')", p, quote(v))
	}
	return nil
}

// requireNHSNumber checks that v, the value at p, is a valid NHS number.
func requireNHSNumber(v string, p fieldPath) *Error {
	switch {
	case v == "":
		return missing(p.String(), "Patient NHS number %s is missing: the patient needs an NHS number", p)
	case !ValidNHSNumber(v):
		return badValue(p.String(), "Patient NHS number %s %s is not a valid NHS number (modulus 11 check)", p, quote(v))
	}
	return nil
}

// maxQuoted bounds the length of values repeated in diagnostics.
const maxQuoted = 80

// clip shortens s to at most maxQuoted bytes (on a rune boundary).
func clip(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	n := maxQuoted
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// quote quotes a value from the request for diagnostics, clipped.
func quote(s string) string {
	return fmt.Sprintf("%q", clip(s))
}
