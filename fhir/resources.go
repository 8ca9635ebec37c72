package fhir

import (
	"fmt"
	"math"
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
	// Built on the stack and copied once into the string: the success path
	// formats paths too (the checks take them as strings), so this is paid
	// per element checked, not only per error.
	var buf [128]byte
	b := buf[:0]
	if p.entry >= 0 {
		b = append(b, "Bundle.entry["...)
		b = strconv.AppendInt(b, int64(p.entry), 10)
		b = append(b, "].resource"...)
	} else {
		b = append(b, p.root...)
	}
	if p.field != "" {
		b = append(b, '.')
		b = append(b, p.field...)
	}
	if p.index >= 0 {
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(p.index), 10)
		b = append(b, ']')
		b = append(b, p.rest...)
	}
	return string(b)
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

// medicationRequest holds what the broker reads of a MedicationRequest. The
// Raw fields keep an element's JSON as sent (nil when absent), for the
// checks that an element is the same on every item.
type medicationRequest struct {
	Extension                 []extension
	Identifier                []identifier
	Status                    string
	Intent                    string
	MedicationCodeableConcept Concept
	HasMedicationConcept      bool
	MedicationReference       *reference
	Subject                   reference
	Requester                 reference
	AuthoredOn                string
	GroupIdentifier           groupIdentifier
	CourseOfTherapyType       Concept
	Dosage                    string // dosageInstruction[0].text
	Dosages                   int    // len(dosageInstruction); -1 when absent
	DosagesWithoutSequence    int
	DispenseRequest           dispenseRequest

	CategoryRaw, AuthoredOnRaw, SubjectRaw, RequesterRaw, GroupIdentifierRaw []byte
}

type groupIdentifier struct {
	identifier
	Extension []extension
}

type dispenseRequest struct {
	Extension              []extension
	HasExtension           bool // the extension array is present
	ValidityPeriod         period
	Quantity               quantity
	ExpectedSupplyDuration *quantity
	// NumberOfRepeatsAllowed is the number of repeats, read as EPS reads it
	// (an integer, or a string of digits); nil when absent or unreadable.
	NumberOfRepeatsAllowed *int
	Performer              reference

	PerformerRaw, ValidityRaw, SupplyRaw, RepeatsRaw []byte
}

// extensions reads an extension array, keeping each extension's JSON.
func (r *reader) extensions(dst *[]extension) {
	list(r, dst, func(e *extension) {
		start := r.i
		r.extension(e)
		e.raw = r.b[start:r.i]
	})
}

// captured reads the value at the cursor with read and returns its JSON.
func (r *reader) captured(read func()) []byte {
	start := r.i
	read()
	if r.i == start {
		r.skip()
	}
	return r.b[start:r.i]
}

// medication reads the member key, medicationCodeableConcept (into concept,
// recording that it is present) or medicationReference (into *ref, nil when
// null), of a MedicationRequest.
func (r *reader) medication(key string, concept *Concept, has *bool, ref **reference) {
	if key == "medicationCodeableConcept" {
		*has = r.peek() != 'n'
		r.concept(concept)
		return
	}
	if r.peek() == 'n' {
		r.skip()
		return
	}
	*ref = new(reference)
	r.reference(*ref)
}

func (r *reader) medicationRequest(mr *medicationRequest) {
	mr.Dosages = -1
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			r.extensions(&mr.Extension)
		case "identifier":
			present := r.peek() != 'n'
			list(r, &mr.Identifier, r.identifier)
			if present && mr.Identifier == nil {
				mr.Identifier = []identifier{} // present but empty: not "missing" (identifierForSystem)
			}
		case "status":
			mr.Status = r.str()
		case "intent":
			mr.Intent = r.str()
		case "category":
			mr.CategoryRaw = r.raw()
		case "medicationCodeableConcept", "medicationReference":
			r.medication(string(key), &mr.MedicationCodeableConcept, &mr.HasMedicationConcept, &mr.MedicationReference)
		case "subject":
			mr.SubjectRaw = r.captured(func() { r.reference(&mr.Subject) })
		case "requester":
			mr.RequesterRaw = r.captured(func() { r.reference(&mr.Requester) })
		case "authoredOn":
			mr.AuthoredOnRaw = r.captured(func() { mr.AuthoredOn = r.str() })
		case "groupIdentifier":
			mr.GroupIdentifierRaw = r.captured(func() { r.groupIdentifier(&mr.GroupIdentifier) })
		case "courseOfTherapyType":
			r.concept(&mr.CourseOfTherapyType)
		case "dosageInstruction":
			mr.Dosage, mr.Dosages, mr.DosagesWithoutSequence = "", 0, 0
			r.array(func(i int) {
				mr.Dosages++
				seq := false
				r.object(func(key []byte) {
					switch string(key) {
					case "text":
						if i == 0 {
							mr.Dosage = r.str()
						}
					case "sequence":
						seq = r.peek() != 'n'
					case "doseAndRate":
						r.array(func(int) {
							r.object(func(key []byte) {
								if string(key) == "doseQuantity" {
									r.amount(new(quantity))
								}
							})
						})
					}
				})
				if !seq {
					mr.DosagesWithoutSequence++
				}
			})
		case "dispenseRequest":
			r.dispenseRequest(&mr.DispenseRequest)
		}
	})
}

func (r *reader) groupIdentifier(g *groupIdentifier) {
	r.object(func(key []byte) {
		switch string(key) {
		case "system":
			g.System = r.str()
		case "value":
			g.Value = r.str()
		case "extension":
			r.extensions(&g.Extension)
		}
	})
}

func (r *reader) dispenseRequest(d *dispenseRequest) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			d.HasExtension = r.peek() != 'n'
			r.extensions(&d.Extension)
		case "validityPeriod":
			d.ValidityRaw = r.captured(func() { r.period(&d.ValidityPeriod) })
		case "quantity":
			r.amount(&d.Quantity)
		case "expectedSupplyDuration":
			if r.peek() == 'n' {
				r.skip()
				return
			}
			d.ExpectedSupplyDuration = new(quantity)
			d.SupplyRaw = r.captured(func() { r.quantity(d.ExpectedSupplyDuration) })
		case "numberOfRepeatsAllowed":
			switch c := r.peek(); {
			case c == '"' || c == '-' || c >= '0' && c <= '9':
				d.RepeatsRaw = r.raw()
				if n, ok := parseRepeats(d.RepeatsRaw); ok {
					d.NumberOfRepeatsAllowed = &n
				}
			case c == 'n':
				r.skip()
			default:
				r.mismatch("an integer")
			}
		case "performer":
			d.PerformerRaw = r.captured(func() { r.reference(&d.Performer) })
		}
	})
}

type patient struct {
	Identifier          []identifier
	GeneralPractitioner []reference
	BirthDate           string
}

func (r *reader) patient(p *patient) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			present := r.peek() != 'n'
			list(r, &p.Identifier, r.identifier)
			if present && p.Identifier == nil {
				p.Identifier = []identifier{} // present but empty: not "missing" (identifierForSystem)
			}
		case "generalPractitioner":
			list(r, &p.GeneralPractitioner, r.reference)
		case "birthDate":
			p.BirthDate = r.str()
		}
	})
}

// organization is what the broker reads of an Organization, or of a
// HealthcareService (which has no partOf).
type organization struct {
	Identifier    []identifier
	HasIdentifier bool
	Name          string
	PartOf        reference
	HasPartOf     bool
}

func (r *reader) organization(o *organization) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			o.HasIdentifier = r.peek() != 'n'
			list(r, &o.Identifier, r.identifier)
		case "name":
			o.Name = r.str()
		case "partOf":
			o.HasPartOf = r.peek() != 'n'
			r.reference(&o.PartOf)
		}
	})
}

// practitionerRoleOrg reads PractitionerRole.organization.
func (r *reader) practitionerRoleOrg(org *reference) {
	r.object(func(key []byte) {
		if string(key) == "organization" {
			r.reference(org)
		}
	})
}

// SystemSNOMED is the code system of dm+d medication codes.
const SystemSNOMED = "http://snomed.info/sct"

// medicationCode reads Medication.code.
func (r *reader) medicationCode(c *Concept) {
	r.object(func(key []byte) {
		if string(key) == "code" {
			r.concept(c)
		}
	})
}

// Quantity bounds (issue 11). Neither the facade nor Spine bounds a
// quantity: the facade passes dispenseRequest.quantity and a
// MedicationDispense's quantity to Spine as written
// (translation/request/line-item.ts convertLineItemComponent,
// dispense-notification.ts), and Spine's create.py checks the days supply
// of repeat dispensing only. The broker refuses what no real system sends:
// a negative value (a dispensing system sends 0 for an item not dispensed,
// which stays accepted), a value above MaxAmount, and a value written with
// more than MaxAmountDigits significant digits (a float64 needs at most 17
// to be written exactly, so even a float artefact such as
// 0.30000000000000004 passes). JSON has no NaN or Infinity: such a value,
// bare or a number too large for a float64, is refused as malformed.
const (
	// MaxAmount is the largest quantity, supply duration or number of
	// repeats accepted: a million of any dm+d unit of measure (tablets, ml,
	// grams, doses) or days is far past any prescription.
	MaxAmount = 1e6
	// MaxAmountDigits is the most significant digits a quantity may have.
	MaxAmountDigits = 18
)

// amountIssue says what is wrong with the number literal lit as a
// quantity's value ("" when nothing is).
func amountIssue(lit []byte) string {
	s := string(lit)
	if strings.HasPrefix(s, "-") {
		return fmt.Sprintf("%s is negative: it must be 0 or more", s)
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v > MaxAmount {
		return fmt.Sprintf("%s is out of range: the largest value accepted is %d", s, int(MaxAmount))
	}
	mantissa := s
	if i := strings.IndexAny(mantissa, "eE"); i >= 0 {
		mantissa = mantissa[:i]
	}
	mantissa = strings.TrimLeft(strings.Replace(mantissa, ".", "", 1), "0")
	if len(mantissa) > MaxAmountDigits {
		return fmt.Sprintf("%s has %d significant digits: at most %d are accepted", s, len(mantissa), MaxAmountDigits)
	}
	return ""
}

// amount reads a Quantity (or Duration) as quantity does, refusing at the
// FHIRPath of its value a value amountIssue finds wrong: INVALID_VALUE,
// issue type value.
func (r *reader) amount(q *quantity) {
	r.object(func(key []byte) {
		switch string(key) {
		case "value":
			if c := r.peek(); c == '-' || c >= '0' && c <= '9' {
				if why := amountIssue(r.b[r.i:valueEnd(r.b, r.i)]); why != "" {
					r.fail(badValue(r.expr(), "%s", why))
					r.skip()
					return
				}
			}
			q.Value, q.HasValue = r.float()
		case "unit":
			q.Unit = r.str()
		case "code":
			q.Code = r.str()
		}
	})
}
