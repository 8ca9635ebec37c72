package fhir

import (
	"cmp"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// DecodeMessage decodes a FHIR message Bundle (the body of $process-message)
// and applies the checks every message needs, in this order. Each failure is
// a *Error of KindInvalid with an EPS code, a FHIR issue type, words and the
// FHIRPath of the offending element:
//
//	the body is JSON (diagnostics give the byte offset)
//	  and UTF-8                                   INVALID_VALUE structure
//	the top level is an object                    INVALID_VALUE structure
//	resourceType "Bundle"                         MISSING_VALUE required, INVALID_VALUE value
//	type "message"                                MISSING_VALUE required, INVALID_VALUE value
//	Bundle.identifier.value present, a UUID       MISSING_VALUE required,
//	                                              FAILURE_TO_PROCESS_MESSAGE (Spine check_hl7_event_id)
//	Bundle.identifier.system rfc4122              TOO_FEW_VALUES_SUBMITTED invalid
//	entry present and not empty, each entry an
//	  object with a resource with a resourceType  MISSING_VALUE required, INVALID_VALUE structure
//	one MessageHeader, the first entry            MISSING_VALUE required, INVALID_VALUE invalid
//	eventCoding.code a known event                MISSING_VALUE required, INVALID_VALUE value
//
// References are not resolved here: each message's decoder (Order,
// Cancellation, DispenseNotification) resolves those EPS reads, where it
// reads them, by fullUrl (nhs-eps-api translation/common/index.ts
// resolveReference: none is TOO_FEW_VALUES_SUBMITTED, several
// TOO_MANY_VALUES_SUBMITTED, at Bundle.entry); others may name anything.
//
// The sender and the destination receivers are not checked as ODS codes:
// neither the facade nor Spine reads them.
//
// A member of the wrong JSON type is INVALID_VALUE structure where it is
// found. Like encoding/json, the decoder takes null for an absent member;
// unlike it, it matches member names case-sensitively, as FHIR does.
// Members that it reads to find its way (the Bundle's resourceType, id,
// type, identifier and entry, each entry's fullUrl and resource, each
// resource's resourceType and id) must not be repeated in their object.
//
// MessageHeader.sender is optional (EPS never reads it: the acting
// organisation is the authenticated caller's). When present it is resolved
// to an ODS code, Message.Sender (see resolveSender); "" means absent or
// naming no ODS code.
//
// The Message keeps body as Raw, unchanged; each Entry.Resource is a slice of
// it. DecodeMessage reads body in four passes, none of which uses reflection:
// validation, the Bundle's skeleton, the references and the MessageHeader.
func DecodeMessage(body []byte) (*Message, error) {
	m, err := decodeMessage(body)
	if err != nil {
		err.Op = "decode message"
		return nil, err
	}
	return m, nil
}

func decodeMessage(body []byte) (*Message, *Error) {
	if err := checkSyntax(body); err != nil {
		return nil, err
	}
	t := readBundle(body)
	if err := t.check(); err != nil {
		return nil, err
	}
	m := &Message{Raw: body, BundleID: t.identifier.Value, Entries: t.entries}
	if err := m.readHeader(); err != nil {
		return nil, err
	}
	// No Bundle-wide reference check: EPS resolves only what it reads
	// (Order, Cancellation, DispenseNotification do so).
	if err := m.resolveSender(); err != nil {
		return nil, err
	}
	return m, nil
}

// acceptedEvents lists the message events the broker accepts.
var acceptedEvents = [...]string{EventPrescriptionOrder, EventPrescriptionOrderUpdate, EventDispenseNotification}

// checkSyntax checks that body is valid UTF-8 JSON whose top level is an
// object.
func checkSyntax(body []byte) *Error {
	if !validJSON(body) {
		if !json.Valid(body) {
			return syntaxError(body)
		}
		return Invalid(CodeInvalidValue, "structure", "Bundle",
			"the message is not valid UTF-8 (at byte offset %d)", invalidUTF8Offset(body))
	}
	if v := body[skipSpace(body, 0):]; v[0] != '{' {
		return Invalid(CodeInvalidValue, "structure", "Bundle",
			"the message must be a JSON object (a FHIR Bundle), found %s", jsonKind(v))
	}
	return nil
}

// syntaxError describes why body is not JSON, with the byte offset.
func syntaxError(body []byte) *Error {
	var v struct{}
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if !errors.As(err, &se) { // cannot happen: json.Valid said no
		return Invalid(CodeInvalidValue, "structure", "Bundle", "the message is not valid JSON")
	}
	return Invalid(CodeInvalidValue, "structure", "Bundle",
		"the message is not valid JSON: %s (at byte offset %d)", se.Error(), se.Offset)
}

// invalidUTF8Offset returns the offset of the first byte of b that is not
// part of valid UTF-8.
func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// The Bundle members the broker reads, in the order they are checked.
const (
	topResourceType = iota
	topType
	topID
	topIdentifier
	topEntry
	topMembers
)

var topNames = [topMembers]string{"resourceType", "type", "id", "identifier", "entry"}

// bundleTop is what one pass over a Bundle reads, with the first error
// found in each member, so that the checks run in their order whatever the
// order of the members.
type bundleTop struct {
	resourceType, typ, id string
	identifier            identifier
	entries               []Entry
	seen                  [topMembers]bool
	errs                  [topMembers]*Error
}

// readBundle reads the members of the Bundle body that the broker needs:
// Bundle.entry and each resource's resourceType and id in the same pass.
func readBundle(body []byte) *bundleTop {
	t := &bundleTop{}
	r := newReader(body, "Bundle")
	r.object(func(key []byte) {
		for m, name := range topNames {
			if string(key) != name {
				continue
			}
			if err := r.capture(func() { t.read(&r, m) }); t.errs[m] == nil {
				t.errs[m] = err
			}
		}
	})
	return t
}

// read reads member m at the cursor.
func (t *bundleTop) read(r *reader, m int) {
	r.once(&t.seen[m])
	switch m {
	case topResourceType:
		t.resourceType = r.str()
	case topType:
		t.typ = r.str()
	case topID:
		t.id = r.str()
	case topIdentifier:
		r.identifier(&t.identifier)
	case topEntry:
		t.entries = r.entries()
	}
}

// check checks the members read, in order.
func (t *bundleTop) check() *Error {
	var noEntry *Error
	if len(t.entries) == 0 {
		noEntry = missing("Bundle.entry", "Bundle.entry is missing or empty: a message holds at least its MessageHeader")
	}
	return cmp.Or(
		t.errs[topResourceType], requireCode(t.resourceType, "Bundle.resourceType", "Bundle"),
		t.errs[topType], requireCode(t.typ, "Bundle.type", "message"),
		t.errs[topID],
		t.errs[topIdentifier], checkMessageIDSystem(t.identifier.System), checkHL7EventID(t.identifier.Value),
		t.errs[topEntry], noEntry,
	)
}

// EPS codes of the facade's processing errors (nhs-eps-api
// models/errors/processing-errors.ts) and validation issues.
const (
	CodeTooFewValues      = "TOO_FEW_VALUES_SUBMITTED"
	CodeTooManyValues     = "TOO_MANY_VALUES_SUBMITTED"
	CodeConflictingValues = "CONFLICTING_VALUES"
)

// SystemMessageID is the system of Bundle.identifier: a UUID (RFC 4122).
const SystemMessageID = "https://tools.ietf.org/html/rfc4122"

// checkMessageIDSystem checks Bundle.identifier.system as EPS reads the
// message id (nhs-eps-api translation/common/index.ts getBundleIdentifierValue:
// the identifier whose system is rfc4122, exactly one, else
// TooFewValuesError).
func checkMessageIDSystem(system string) *Error {
	if system == SystemMessageID {
		return nil
	}
	return tooFewValues("Bundle.identifier", "system == '"+SystemMessageID+"'")
}

// checkHL7EventID checks the message id as Spine does (eps-spine-shared
// validation/common.py check_hl7_event_id: REGEX_GUID), answered as the
// facade relays Spine's refusals.
func checkHL7EventID(v string) *Error {
	if ValidUUID(v) {
		return nil
	}
	return spineError("Bundle.identifier.value", "hl7EventID has invalid format")
}

// tooFewValues is EPS's TooFewValuesError (nhs-eps-api onlyElement):
// TOO_FEW_VALUES_SUBMITTED, issue type invalid, at expr.
func tooFewValues(expr, where string) *Error {
	d := "Too few values submitted. Expected 1 element where " + where + "."
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeTooFewValues, Display: d, Diagnostics: d, Expression: []string{expr}}
}

// tooManyValues is EPS's TooManyValuesError (nhs-eps-api onlyElement):
// TOO_MANY_VALUES_SUBMITTED, issue type invalid, at expr.
func tooManyValues(expr, where string) *Error {
	d := "Too many values submitted. Expected 1 element where " + where + "."
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeTooManyValues, Display: d, Diagnostics: d, Expression: []string{expr}}
}

// requireCode checks that v, the value at expr, is want.
func requireCode(v, expr, want string) *Error {
	switch v {
	case want:
		return nil
	case "":
		return missing(expr, "%s is missing: it must be %q", expr, want)
	}
	return badValue(expr, "%s must be %q, found %s", expr, want, quote(v))
}

// once records, in *seen, that the member at the cursor was read, and an
// error if it was read before: a repeated member would be read differently
// by different parsers.
func (r *reader) once(seen *bool) {
	if *seen {
		expr := r.expr()
		r.fail(Invalid(CodeInvalidValue, "structure", expr, "%s appears more than once", expr))
	}
	*seen = true
}

// entries reads Bundle.entry: each entry's fullUrl and resource, and the
// resource's resourceType and id.
func (r *reader) entries() []Entry {
	var out []Entry
	r.array(func(int) {
		var e Entry
		var seenURL, seenRes bool
		start := r.i
		if !r.object(func(key []byte) {
			switch string(key) {
			case "fullUrl":
				r.once(&seenURL)
				e.FullURL = r.str()
			case "resource":
				r.once(&seenRes)
				start := r.i
				r.resourceHead(&e)
				e.Resource = r.b[start:r.i]
			}
		}) {
			return
		}
		if !seenRes {
			expr := r.exprAt(start) + ".resource"
			r.fail(missing(expr, "%s is missing", expr))
		}
		out = append(out, e)
	})
	return out
}

// resourceHead reads the resourceType and id of the resource at the cursor.
func (r *reader) resourceHead(e *Entry) {
	var seenType, seenID bool
	start := r.i
	r.object(func(key []byte) {
		switch string(key) {
		case "resourceType":
			r.once(&seenType)
			e.ResourceType = internType(r.bytes())
		case "id":
			r.once(&seenID)
			e.ID = r.str()
		}
	})
	if e.ResourceType == "" {
		expr := r.exprAt(start) + ".resourceType"
		r.fail(missing(expr, "%s is missing", expr))
	}
}

// internType returns the resource type t as a string, without allocating
// for the common types.
func internType(t []byte) string {
	switch string(t) {
	case "MessageHeader":
		return "MessageHeader"
	case "MedicationRequest":
		return "MedicationRequest"
	case "MedicationDispense":
		return "MedicationDispense"
	case "Patient":
		return "Patient"
	case "Practitioner":
		return "Practitioner"
	case "PractitionerRole":
		return "PractitionerRole"
	case "Organization":
		return "Organization"
	case "Provenance":
		return "Provenance"
	}
	return string(t)
}

// messageHeader holds what the broker reads of a MessageHeader.
type messageHeader struct {
	Extension   []extension
	EventCoding Coding
	Sender      reference
	Destination []reference // destination[].receiver
}

func (r *reader) messageHeader(h *messageHeader) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &h.Extension, r.extension)
		case "eventCoding":
			r.coding(&h.EventCoding)
		case "sender":
			r.reference(&h.Sender)
		case "destination":
			list(r, &h.Destination, func(receiver *reference) {
				r.object(func(key []byte) {
					if string(key) == "receiver" {
						r.reference(receiver)
					}
				})
			})
		}
	})
}

// readHeader checks that the first entry, and only it, is a MessageHeader,
// and reads its event, sender, receiver and replacementOf.
func (m *Message) readHeader() *Error {
	const base = "MessageHeader"
	first := -1
	for k, e := range m.Entries {
		if e.ResourceType != "MessageHeader" {
			continue
		}
		if first >= 0 {
			return inconsistent(entryPath(k, ""), "%s is a second MessageHeader (the first is Bundle.entry[%d]): a message has exactly one",
				entryPath(k, ""), first)
		}
		first = k
	}
	switch {
	case first < 0:
		return missing("Bundle.entry.resource.ofType(MessageHeader)", "the Bundle has no MessageHeader: it must be the first entry")
	case first > 0:
		return inconsistent(entryPath(0, ""), "the first entry must be the MessageHeader; it is a %s and the MessageHeader is Bundle.entry[%d]",
			quote(m.Entries[0].ResourceType), first)
	}
	var h messageHeader
	r := newReader(m.Entries[0].Resource, base)
	if r.messageHeader(&h); r.err != nil {
		return r.err
	}
	if err := checkEvent(h.EventCoding.Code); err != nil {
		return err
	}
	m.Event = h.EventCoding.Code
	m.sender = h.Sender
	if len(h.Destination) > 0 {
		m.Receiver = h.Destination[0].Identifier.Value
	}
	m.ReplacementOf = extensionIdentifier(h.Extension, ExtReplacementOf)
	return nil
}

// checkEvent checks MessageHeader.eventCoding.code.
func checkEvent(code string) *Error {
	const expr = "MessageHeader.eventCoding.code"
	if code == "" {
		return missing(expr, "%s is missing", expr)
	}
	for _, e := range acceptedEvents {
		if code == e {
			return nil
		}
	}
	return badValue(expr, "%s %s is not an event this service accepts (prescription-order, prescription-order-update, dispense-notification)",
		expr, quote(code))
}

// resolveSender resolves MessageHeader.sender to an ODS code, m.Sender.
// EPS never reads the sender; the broker reads it to check that a prescriber
// sends for its own organisation. It may be
//
//   - an identifier: its value, when it is an ODS code;
//   - a reference to an Organization of the Bundle: its identifier with the
//     ODS system;
//   - a reference to a PractitionerRole of the Bundle: its organization, an
//     ODS identifier or a reference to an Organization of the Bundle.
//
// An identifier wins over a reference given with it. A reference that
// resolves to anything else, or to an Organization without an ODS code,
// names no organisation: m.Sender is "" as when the sender is absent (the
// acting organisation is then the caller's), and so is a value that is not
// an ODS code or a reference that does not resolve: EPS reads none of them,
// so none is refused.
func (m *Message) resolveSender() *Error {
	if v := m.sender.Identifier.Value; v != "" || m.sender.Reference == "" {
		if ValidODSCode(v) {
			m.Sender = v
		}
		return nil
	}
	x, err := newRefIndex(m.Entries)
	if err != nil {
		return err
	}
	k := x.resolve([]byte(m.sender.Reference), 0)
	if k < 0 {
		return nil
	}
	if m.Entries[k].ResourceType == "PractitionerRole" {
		var org reference
		if err := readEntry(m, k, func(r *reader) { r.practitionerRoleOrg(&org) }); err != nil {
			return err
		}
		if v := org.Identifier.Value; v != "" {
			if org.Identifier.System == SystemODSCode && ValidODSCode(v) {
				m.Sender = v
			}
			return nil
		}
		if k = x.resolve([]byte(org.Reference), k); k < 0 {
			return nil
		}
	}
	if m.Entries[k].ResourceType != "Organization" {
		return nil
	}
	var org organization
	if err := readEntry(m, k, func(r *reader) { r.organization(&org) }); err != nil {
		return err
	}
	if j := findIdentifier(org.Identifier, SystemODSCode); j >= 0 && ValidODSCode(org.Identifier[j].Value) {
		m.Sender = org.Identifier[j].Value
	}
	return nil
}
