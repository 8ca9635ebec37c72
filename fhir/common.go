package fhir

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file holds what the decoders of the message kinds share (order.go,
// release.go, task.go, dispense.go, cancel.go, claim.go; the readers of
// the resources they read are in resources.go): the codes and extensions
// several of them read, the facade's and Spine's issue wording, the FHIR
// date forms, readers of contained resources and of the references EPS
// resolves, and the checks of the facade's verifyCommonBundle. Each
// decoder is a pure function that fails with a *Error of KindInvalid
// carrying the EPS code, the FHIR issue type, words and the FHIRPath of the
// offending element; a member of the wrong JSON type is INVALID_VALUE
// structure where it is found.

// Code systems and extensions more than one message kind reads.
const (
	SystemDispenseType       = "https://fhir.nhs.uk/CodeSystem/medicationdispense-type"
	SystemTaskBusinessStatus = "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status"
	ExtTaskBusinessStatus    = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	ExtGroupIdentifier       = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-GroupIdentifier"
	extGroupIDShortForm      = "shortForm"
	extGroupIDUUID           = "UUID"
)

// Codes more than one message kind may state.
var (
	// DispensedItemStatuses are the medicationdispense-type codes a
	// dispenser may state for a line item: fully dispensed, not dispensed,
	// partially dispensed, not dispensed - owing, and cancelled (the NHS
	// examples send 0005 for an item the prescriber cancelled).
	DispensedItemStatuses = []string{"0001", "0002", "0003", "0004", "0005"}
)

// readBody reads the top-level object of a request body whose resourceType
// must be root: it checks the body (checkSyntax, which also refuses any
// member given twice), reads resourceType, and hands each member named in
// members to read, in order.
func readBody(body []byte, root string, members []string, read func(r *reader, key string)) *Error {
	if err := checkSyntax(body, root, "request"); err != nil {
		return err
	}
	var resourceType string
	var rtErr *Error
	r := newReader(body, root)
	r.object(func(key []byte) {
		k := string(key)
		switch {
		case k == "resourceType":
			rtErr = r.capture(func() { resourceType = r.str() })
		case slices.Contains(members, k):
			read(&r, k)
		}
	})
	return firstError(rtErr, requireCode(resourceType, root+".resourceType", root), r.err)
}

// Words of the EPS FHIR facade's issues (models/errors/validation-errors.ts
// and processing-errors.ts of NHSDigital/electronic-prescription-service-api).
const (
	exprAgentPractitioner = `Parameters.parameter("agent").resource.practitioner`
	exprAgentTelecom      = `Parameters.parameter("agent").resource.telecom`
)

// facadeIssue is an issue as the EPS FHIR facade writes it: the FHIR issue
// type, the words and the FHIRPath it gives (where it gives none, the path
// its words name). The facade's validation issues carry no EPS code; the
// broker gives each one: MISSING_VALUE for an element required, otherwise
// INVALID_VALUE.
func facadeIssue(code, issueType, expr, diagnostics string) *Error {
	e := &Error{Kind: KindInvalid, Code: code, IssueType: issueType, Diagnostics: diagnostics}
	if expr != "" {
		e.Expression = []string{expr}
	}
	return e
}

// processingError is the facade's InvalidValueError (processing-errors.ts):
// INVALID_VALUE, issue type invalid, its words and FHIRPath.
func processingError(expr, diagnostics string) *Error {
	return facadeIssue(CodeInvalidValue, "invalid", expr, diagnostics)
}

// referenceNotIdentifier is the facade's fieldIsReferenceButShouldNotBe.
func referenceNotIdentifier(path string) *Error {
	return facadeIssue(CodeInvalidValue, "invalid", path, path+" populated incorrectly. Please populate with Identifier and Display.")
}

// requiredField is the facade's missingRequiredField.
func requiredField(path string) *Error {
	return facadeIssue(CodeMissingValue, "invalid", path, "Required field "+path+" is missing.")
}

// systemed is a Coding or an identifier: a value in a code system.
type systemed interface{ system() string }

func (c Coding) system() string      { return c.System }
func (id identifier) system() string { return id.System }

// inSystem returns the indexes of the codings or identifiers of xs in
// system.
func inSystem[T systemed](xs []T, system string) []int {
	var out []int
	for j, x := range xs {
		if x.system() == system {
			out = append(out, j)
		}
	}
	return out
}

// containedRole finds the contained PractitionerRole that the reference ref
// (at expr) names among cs, as the facade's
// getContainedPractitionerRoleViaReference does.
func containedRole(cs []rawResource, ref, expr string) (*practitionerRole, *Error) {
	c := findContained(cs, ref)
	if c == nil {
		return nil, processingError(expr, "Contained resource with reference "+ref+" not found")
	}
	if c.typ != "PractitionerRole" {
		return nil, processingError(expr, "Contained resource with reference "+ref+" is not of type PractitionerRole")
	}
	var role practitionerRole
	if err := readRaw(c, func(r *reader) { r.practitionerRole(&role) }); err != nil {
		return nil, err
	}
	return &role, nil
}

// onlyPatient is the facade's getPatient (getResourcesOfType.ts): the
// entry of the one Patient of the Bundle, else TooFewValuesError or
// TooManyValuesError at Bundle.entry.
func onlyPatient(m *Message) (int, *Error) {
	p := -1
	for k, e := range m.Entries {
		if e.ResourceType != "Patient" {
			continue
		}
		if p >= 0 {
			return -1, tooManyValues("Bundle.entry", "resource.resourceType == 'Patient'")
		}
		p = k
	}
	if p < 0 {
		return -1, tooFewValues("Bundle.entry", "resource.resourceType == 'Patient'")
	}
	return p, nil
}

// byFullURL is the facade's resolveReference (translation/common/index.ts
// getResourceForFullUrl): the entry whose fullUrl is ref, exactly; none is
// TooFewValuesError, several TooManyValuesError, at Bundle.entry.
func byFullURL(m *Message, ref string) (int, *Error) {
	k, n := -1, 0
	for i := range m.Entries {
		if m.Entries[i].FullURL == ref {
			if k < 0 {
				k = i
			}
			n++
		}
	}
	switch {
	case n == 0:
		return -1, tooFewValues("Bundle.entry", "fullUrl == '"+ref+"'")
	case n > 1:
		return -1, tooManyValues("Bundle.entry", "fullUrl == '"+ref+"'")
	}
	return k, nil
}

// presentIDs is ids, or an empty list when nil (an identifier member that
// is present).
func presentIDs(ids []identifier) []identifier {
	if ids == nil {
		return []identifier{}
	}
	return ids
}

// commonRoleThrows is what verifyCommonBundle's validatePractitionerRole
// (bundle-validator.ts) throws for the PractitionerRole entries of any
// message Bundle, role by role: a practitioner given as a reference must
// resolve by fullUrl (resolveReference), and its Practitioner have at most
// one sds-user-id (verifyPractitionerID); a role with identifiers must have
// exactly one sds-role-profile-id (verifyPractitionerRoleID). What the
// facade throws is answered before what it collects.
func (m *Message) commonRoleThrows() *Error {
	for k, e := range m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var role practitionerRole
		if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return err
		}
		if role.HasPractitioner && role.Practitioner.Reference != "" {
			p, err := byFullURL(m, role.Practitioner.Reference)
			if err != nil {
				return err
			}
			ids, err := practitionerIdentifiers(m, p)
			if err != nil {
				return err
			}
			if len(inSystem(ids, SystemSDSUserID)) > 1 {
				const expr = `Bundle.entry("Practitioner").identifier`
				return facadeIssue(CodeTooManyValues, "invalid", expr,
					"Too many values submitted. Expected at most 1 element where system == '"+SystemSDSUserID+"'.")
			}
		}
		if role.HasIdentifier {
			if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, `Bundle.entry("PractitionerRole").identifier`); err != nil {
				return err
			}
		}
	}
	return nil
}

// commonCollected is what verifyCommonBundle (bundle-validator.ts) collects
// for any message Bundle, in its order: validateMedicationRequests over the
// MedicationRequest entries (none of intent plan or reflex-order,
// createMedicationRequestIncorrectValueIssue; none with both
// medicationCodeableConcept and medicationReference,
// createMedicationFieldIssue: CONFLICTING_VALUES); validateTelecoms (every
// telecom of an Organization, Practitioner or PractitionerRole entry with a
// value and a use); validatePractitionerRole for each PractitionerRole
// entry: its practitioner (when present) a reference, or, for the
// responsible practitioner named by a MedicationRequest's
// Extension-DM-ResponsiblePractitioner, a reference or an identifier but
// not both; its organization and every healthcareService a reference
// (fieldIsNotReferenceButShouldBe). Contained resources are not entries:
// a dispense notification's contained MedicationRequest and
// PractitionerRole are not checked here.
func (m *Message) commonCollected() *Error {
	var both = -1
	var responsible []string
	for k, e := range m.Entries {
		if e.ResourceType != "MedicationRequest" {
			continue
		}
		var mr medicationRequest
		if err := readEntry(m, k, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
			return err
		}
		if mr.Intent == "plan" || mr.Intent == "reflex-order" {
			return incorrectItemValue("intent", "order, original-order or instance-order")
		}
		if both < 0 && mr.HasMedicationConcept && mr.MedicationReference != nil {
			both = k
		}
		if j := findExtensionIndex(mr.Extension, ExtResponsiblePractitioner); j >= 0 && mr.Extension[j].ValueReference != nil {
			responsible = append(responsible, mr.Extension[j].ValueReference.Reference)
		}
	}
	if both >= 0 {
		const d = "MedicationRequest cannot contain both medicationReference and medicationCodeableConcept fields."
		return &Error{Kind: KindInvalid, IssueType: "structure", Code: CodeConflictingValues,
			Display: "Conflicting values have been specified in different fields", Diagnostics: d,
			Expression: []string{entryPath(both, "medication")}}
	}
	if err := (&orderCheck{m: m}).checkTelecoms(); err != nil {
		return err
	}
	for k, e := range m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var role practitionerRole
		if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return err
		}
		if role.HasPractitioner {
			p := role.Practitioner
			isRef, isID := p.Reference != "", p.Identifier != (identifier{})
			if slices.Contains(responsible, e.FullURL) {
				if isRef == isID {
					return facadeIssue(CodeInvalidValue, "invalid", entryPath(k, "practitioner"),
						"Responsible practitioner must be either a reference to a Practitioner resource or an identifier reference.")
				}
			} else if !isRef {
				return notReference("practitionerRole.practitioner", entryPath(k, "practitioner"))
			}
		}
		if role.Organization.Reference == "" {
			return notReference("practitionerRole.organization", entryPath(k, "organization"))
		}
		for i, hs := range role.HealthcareService {
			if hs.Reference == "" {
				field := "practitionerRole.healthcareService[" + strconv.Itoa(i) + "]"
				return notReference(field, entryPath(k, "healthcareService["+strconv.Itoa(i)+"]"))
			}
		}
	}
	return nil
}

// presentList makes ids, about to be read at the cursor, an empty list
// rather than nil when the member is present (not null), so that
// identifierForSystem tells an empty list (too few) from an absent one.
func presentList(r *reader, ids []identifier) []identifier {
	if ids == nil && r.peek() != 'n' {
		return []identifier{}
	}
	return ids
}

// onlyExtension is the facade's getExtensionForUrl: exactly one of exts has
// url, else TooFewValuesError or TooManyValuesError at expr.
func onlyExtension(exts []extension, url, expr string) *Error {
	n := 0
	for _, e := range exts {
		if e.URL == url {
			n++
		}
	}
	switch {
	case n == 0:
		return tooFewValues(expr, "url == '"+url+"'")
	case n > 1:
		return tooManyValues(expr, "url == '"+url+"'")
	}
	return nil
}

// onlyCoding is the facade's getCodeableConceptCodingForSystem over the
// concepts cc at expr: present, and exactly one coding of system among
// them (TooFewValuesError / TooManyValuesError at expr.coding).
func onlyCoding(cc []Concept, system, expr string) *Error {
	if cc == nil {
		return processingError(expr, "Required field missing.")
	}
	n := 0
	for _, c := range cc {
		n += len(inSystem(c.Coding, system))
	}
	switch {
	case n == 0:
		return tooFewValues(expr+".coding", "system == '"+system+"'")
	case n > 1:
		return tooManyValues(expr+".coding", "system == '"+system+"'")
	}
	return nil
}

// facadeDateTime is dateTime.ts convertIsoDateTimeStringToHl7V3DateTime:
// v (nil when absent: the facade tests the text "undefined") must be a
// FHIR dateTime, else InvalidValueError at expr.
func facadeDateTime(v *string, expr string) *Error {
	text := "undefined"
	if v != nil {
		text = *v
	}
	if fhirDateTime.MatchString(text) {
		return nil
	}
	return processingError(expr, "Incorrect format for date time string '"+text+"'.")
}

// containedOrganization checks the organization of a contained
// PractitionerRole as the facade's translations do: when it is a reference
// it must name an Organization contained in the same resource
// (getContainedOrganizationViaReference); when required, it must be a
// reference (InvalidValueError at expr with the words given).
func containedOrganization(cs []rawResource, org reference, required bool, expr, words string) *Error {
	if org.Reference == "" {
		if required {
			return processingError(expr, words)
		}
		return nil
	}
	c := findContained(cs, org.Reference)
	if c == nil {
		return processingError(expr, "Contained resource with reference "+org.Reference+" not found")
	}
	if c.typ != "Organization" {
		return processingError(expr, "Contained resource with reference "+org.Reference+" is not of type Organization")
	}
	return nil
}

// firstError returns the first of errs that is not nil.
func firstError(errs ...*Error) *Error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// pathOf is the fieldPath of the FHIRPath expr.
func pathOf(expr string) fieldPath { return under(expr, "") }

// found is a value read from a request and the FHIRPath where it was found.
type found struct{ v, expr string }

// rawResource is a resource inside a request (a contained resource, a
// Parameters resource) kept as its raw JSON, with its FHIRPath, type and id.
type rawResource struct {
	typ, id string
	b       []byte
	root    string
}

// resource reads the resource at the cursor, whose FHIRPath is root: its
// resourceType and id, and its raw JSON for later reading.
func (r *reader) resource(root string) rawResource {
	switch r.peek() {
	case '{':
	case 'n':
		r.skip()
		return rawResource{}
	default:
		r.mismatch("an object")
		return rawResource{}
	}
	res := rawResource{b: r.raw(), root: root}
	sub := newReader(res.b, root)
	sub.object(func(key []byte) {
		switch string(key) {
		case "resourceType":
			res.typ = sub.str()
		case "id":
			res.id = sub.str()
		}
	})
	r.fail(sub.err)
	return res
}

// containedList reads the array of contained resources at the cursor, whose
// FHIRPath is base.
func (r *reader) containedList(base string) []rawResource {
	var out []rawResource
	r.array(func(i int) {
		out = append(out, r.resource(base+"["+strconv.Itoa(i)+"]"))
	})
	return out
}

// findContained returns the contained resource that the local reference ref
// ("#id") names, or nil.
func findContained(cs []rawResource, ref string) *rawResource {
	if len(ref) < 2 || ref[0] != '#' {
		return nil
	}
	for i := range cs {
		if cs[i].b != nil && cs[i].id == ref[1:] {
			return &cs[i]
		}
	}
	return nil
}

// readRaw reads res with read.
func readRaw(res *rawResource, read func(r *reader)) *Error {
	r := newReader(res.b, res.root)
	read(&r)
	return r.err
}

// practitionerRole holds what the broker reads of a PractitionerRole: what
// the facade's validators check and its translations read (e.g.
// cancellation.ts convertPractitionerRole). Every decoder reads a
// PractitionerRole with practitionerRole or orderRole.
type practitionerRole struct {
	Identifier           []identifier
	HasIdentifier        bool
	Practitioner         reference
	HasPractitioner      bool
	Organization         reference
	HealthcareService    []reference
	HasHealthcareService bool
	Location             []reference
	Telecom              int // how many telecom entries it has
}

// practitionerRole reads all of a PractitionerRole that practitionerRole
// holds.
func (r *reader) practitionerRole(p *practitionerRole) { r.role(p, true) }

// orderRole reads a PractitionerRole of a prescription order: all but its
// location and telecom, which no rule of the order reads from it (the
// order's telecom rule reads every telecom itself, checkTelecoms, after the
// roles' checks), so that a malformed one is refused, or not, as before.
func (r *reader) orderRole(p *practitionerRole) { r.role(p, false) }

// role reads a PractitionerRole, its location and telecom when contact.
func (r *reader) role(p *practitionerRole, contact bool) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			p.HasIdentifier = r.peek() != 'n'
			list(r, &p.Identifier, r.identifier)
		case "practitioner":
			p.HasPractitioner = r.peek() != 'n'
			r.reference(&p.Practitioner)
		case "organization":
			r.reference(&p.Organization)
		case "healthcareService":
			p.HasHealthcareService = r.peek() != 'n'
			list(r, &p.HealthcareService, r.reference)
		case "location":
			if contact {
				list(r, &p.Location, r.reference)
			}
		case "telecom":
			if contact {
				p.Telecom = 0
				r.array(func(int) { r.skip(); p.Telecom++ })
			}
		}
	})
}

// practitionerIdentifiers reads the identifiers of the Practitioner entry k:
// nil when it has none, empty (not nil) when it gives an empty or all-null
// list (presentList).
func practitionerIdentifiers(m *Message, k int) ([]identifier, *Error) {
	var ids []identifier
	err := readEntry(m, k, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) == "identifier" {
				ids = presentList(r, ids)
				list(r, &ids, r.identifier)
			}
		})
	})
	return ids, err
}

// containedODS reads the ODS code of the Organization res.
func containedODS(res *rawResource) (found, *Error) {
	var org organization
	if err := readRaw(res, func(r *reader) { r.organization(&org) }); err != nil {
		return found{}, err
	}
	j := findIdentifier(org.Identifier, SystemODSCode)
	if j < 0 {
		expr := res.root + ".identifier"
		return found{}, missing(expr, "%s has no identifier with system %s (the ODS code)", expr, SystemODSCode)
	}
	return found{org.Identifier[j].Value, res.root + ".identifier[" + strconv.Itoa(j) + "].value"}, nil
}

// sdsIdentifiers are what the facade's validators throw on the SDS
// identifiers of the PractitionerRole of a release, Task or Claim, which
// they compare with the caller's (parameters-validator.ts verifyParameters,
// task-validator.ts verifyTask, claim-validator.ts verifyClaim): a
// practitioner given as an identifier must be of the sds-user-id system,
// and a role with identifiers must have one sds-role-profile-id
// (getIdentifierValueForSystem: TooFewValuesError, TooManyValuesError at
// the FHIRPath they give, under base). A mismatch with the caller is only
// logged.
func sdsIdentifiers(role *practitionerRole, base string) *Error {
	if role.HasPractitioner && role.Practitioner.Reference == "" {
		if _, err := identifierForSystem([]identifier{role.Practitioner.Identifier}, SystemSDSUserID, base+".practitioner.identifier"); err != nil {
			return err
		}
	}
	if role.HasIdentifier {
		if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, base+".identifier"); err != nil {
			return err
		}
	}
	return nil
}

// namedRef is a reference and its FHIRPath.
type namedRef struct {
	expr string
	ref  reference
}

func refAt(expr string, r reference) namedRef { return namedRef{expr, r} }

// dispenserODS finds the ODS code of the dispensing organisation of a Task
// or Claim (root) with contained resources cs: that of the first of refs
// that names one, by an ODS identifier, a contained Organization or a
// contained PractitionerRole's organization; or else that of the only
// contained Organization. It is recorded as sent: its format is not checked.
func dispenserODS(cs []rawResource, root string, refs ...namedRef) (string, *Error) {
	for _, nr := range refs {
		f, err := refODS(nr.ref, nr.expr, cs, true)
		if err != nil {
			return "", err
		}
		if f.expr != "" {
			return f.v, nil
		}
	}
	var only *rawResource
	for i := range cs {
		if cs[i].b == nil || cs[i].typ != "Organization" {
			continue
		}
		if only != nil {
			only = nil
			break
		}
		only = &cs[i]
	}
	if only != nil {
		f, err := containedODS(only)
		return f.v, err
	}
	names := make([]string, len(refs))
	for i, nr := range refs {
		names[i] = nr.expr
	}
	return "", missing(refs[0].expr, "the %s names no dispensing organisation: %s must name it by ODS code or contained Organization",
		root, strings.Join(names, " or "))
}

// refODS reads the ODS code that ref, at expr, names: its ODS identifier,
// the contained Organization it references, or (when viaRole) the
// organization of the contained PractitionerRole it references. f.expr is
// empty when ref names none.
func refODS(ref reference, expr string, cs []rawResource, viaRole bool) (f found, err *Error) {
	if id := ref.Identifier; id.Value != "" && (id.System == "" || id.System == SystemODSCode) {
		return found{id.Value, expr + ".identifier.value"}, nil
	}
	c := findContained(cs, ref.Reference)
	if c == nil {
		return found{}, nil
	}
	switch c.typ {
	case "Organization":
		return containedODS(c)
	case "PractitionerRole":
		if !viaRole {
			return found{}, nil
		}
		var role practitionerRole
		if err := readRaw(c, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return found{}, err
		}
		return refODS(role.Organization, c.root+".organization", cs, false)
	}
	return found{}, nil
}

// findExtensionIndex returns the index of the first of exts with the given
// url, or -1.
func findExtensionIndex(exts []extension, url string) int {
	for i := range exts {
		if exts[i].URL == url {
			return i
		}
	}
	return -1
}

// extCode returns valueCoding.code of the first extension with the given
// url ("" when absent).
func extCode(exts []extension, url string) string {
	if k := findExtensionIndex(exts, url); k >= 0 && exts[k].ValueCoding != nil {
		return exts[k].ValueCoding.Code
	}
	return ""
}

// extCodeIn reads the code of the extension url of the element at base: it
// must be present and one of allowed.
func extCodeIn(exts []extension, url, base string, allowed []string, what string) (found, *Error) {
	k := findExtensionIndex(exts, url)
	if k < 0 || exts[k].ValueCoding == nil || exts[k].ValueCoding.Code == "" {
		expr := base + ".extension('" + url + "').valueCoding.code"
		return found{}, missing(expr, "%s is missing: the %s (one of %s)", expr, what, strings.Join(allowed, ", "))
	}
	expr := base + ".extension[" + strconv.Itoa(k) + "].valueCoding.code"
	code := exts[k].ValueCoding.Code
	if !slices.Contains(allowed, code) {
		return found{}, badValue(expr, "%s %s is not a %s this message may state (%s)", expr, quote(code), what, strings.Join(allowed, ", "))
	}
	return found{code, expr}, nil
}

// groupIdentifierExt reads the Extension-DM-GroupIdentifier of the element
// at base: its shortForm (a valid short-form ID) and its UUID (not checked
// here).
func groupIdentifierExt(exts []extension, base string) (short, long found, err *Error) {
	k := findExtensionIndex(exts, ExtGroupIdentifier)
	if k < 0 {
		expr := base + ".extension('" + ExtGroupIdentifier + "')"
		return short, long, missing(expr, "%s is missing: it names the prescription by its short-form and long-form IDs", expr)
	}
	gbase := base + ".extension[" + strconv.Itoa(k) + "]"
	subs := exts[k].Extension
	s := findExtensionIndex(subs, extGroupIDShortForm)
	if s < 0 || subs[s].ValueIdentifier == nil {
		expr := gbase + ".extension('" + extGroupIDShortForm + "').valueIdentifier.value"
		return short, long, missing(expr, "%s is missing: it must be the short-form prescription ID", expr)
	}
	sexpr := gbase + ".extension[" + strconv.Itoa(s) + "].valueIdentifier"
	if err := checkShortID(*subs[s].ValueIdentifier, sexpr); err != nil {
		return short, long, err
	}
	short = found{subs[s].ValueIdentifier.Value, sexpr + ".value"}
	long.expr = gbase + ".extension('" + extGroupIDUUID + "').valueIdentifier.value"
	if u := findExtensionIndex(subs, extGroupIDUUID); u >= 0 {
		long.expr = gbase + ".extension[" + strconv.Itoa(u) + "].valueIdentifier.value"
		if subs[u].ValueIdentifier != nil {
			long.v = subs[u].ValueIdentifier.Value
		}
	}
	return short, long, nil
}

// checkShortID checks the value of the identifier id, at expr, of a
// short-form prescription ID as Spine does (eps-spine-shared
// validation/common.py check_prescription_id): its form and its check
// character. Its system is not checked: the facade reads the value alone
// (dispense-notification.ts createPrescriptionId, cancellation.ts
// pertinentInformation2, release.ts, dispense-claim.ts createPrescriptionId);
// a Task checks it before (taskGroupIdentifier).
func checkShortID(id identifier, expr string) *Error {
	switch {
	case id.Value == "":
		return missing(expr+".value", "%s.value is missing: it must be the short-form prescription ID", expr)
	case !ShortIDWellFormed(id.Value):
		return badValue(expr+".value",
			"%s.value %s is not a short-form prescription ID (6 hexadecimal characters, the prescriber's ODS code padded to 6, 5 hexadecimal characters and a check character, separated by dashes)",
			expr, quote(id.Value))
	case !ValidShortID(id.Value):
		return checksumError(expr+".value", id.Value)
	}
	return nil
}

// pickCoding returns the index of the coding of cs in system, or else of
// the first coding, or -1 when there is none.
func pickCoding(cs []Coding, system string) int {
	for j, c := range cs {
		if c.System == system {
			return j
		}
	}
	if len(cs) > 0 {
		return 0
	}
	return -1
}

// checkCoding checks the codings cs of the CodeableConcept at base: one, in
// system (or without a system), must have a code among allowed.
func checkCoding(cs []Coding, base, system string, allowed []string, what string) (Coding, *Error) {
	j := pickCoding(cs, system)
	if j < 0 || cs[j].Code == "" {
		expr := base + ".coding"
		return Coding{}, missing(expr, "%s is missing: the %s, a code of %s (%s)", expr, what, system, strings.Join(allowed, ", "))
	}
	c := cs[j]
	expr := base + ".coding[" + strconv.Itoa(j) + "]"
	if c.System != "" && c.System != system {
		return Coding{}, badValue(expr+".system", "%s.system must be %s (the %s), found %s", expr, system, what, quote(c.System))
	}
	if !slices.Contains(allowed, c.Code) {
		return Coding{}, badValue(expr+".code", "%s.code %s is not a %s (%s)", expr, quote(c.Code), what, strings.Join(allowed, ", "))
	}
	return c, nil
}

// checkConcepts is checkCoding over the first of a list of CodeableConcepts
// (at base) that has a coding in system, or else the first.
func checkConcepts(cc []Concept, base, system string, allowed []string, what string) (Coding, *Error) {
	i := 0
	for n, c := range cc {
		if slices.ContainsFunc(c.Coding, func(c Coding) bool { return c.System == system }) {
			i = n
			break
		}
	}
	if len(cc) == 0 {
		return Coding{}, missing(base, "%s is missing: the %s, a code of %s (%s)", base, what, system, strings.Join(allowed, ", "))
	}
	return checkCoding(cc[i].Coding, base+"["+strconv.Itoa(i)+"]", system, allowed, what)
}

// hasCoding reports whether one of cc has a coding in system with a code.
func hasCoding(cc []Concept, system string) bool {
	for _, c := range cc {
		for _, cd := range c.Coding {
			if cd.System == system && cd.Code != "" {
				return true
			}
		}
	}
	return false
}

// spineError is how the facade answers a refusal of Spine's validation
// (eps-spine-shared validation/): FAILURE_TO_PROCESS_MESSAGE, issue type
// processing, "Unable to process message. Information missing or invalid - "
// and Spine's words (as the NHS example 1-Process-Response-Send-400_INVALID_CHECKSUM
// shows), with the FHIRPath of the field Spine's value came from.
func spineError(expr, supp string) *Error {
	d := "Unable to process message. Information missing or invalid - " + supp
	return &Error{Kind: KindInvalid, IssueType: "processing", Code: CodeFailureToProcessMessage, Display: d, Diagnostics: d,
		Expression: []string{expr}}
}

// itemsPath is the FHIRPath the facade gives for a field of every
// MedicationRequest.
const itemsPath = "Bundle.entry.resource.ofType(MedicationRequest)"

// Extensions of a MedicationRequest the order rules name.
const (
	ExtResponsiblePractitioner = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ResponsiblePractitioner"
)

func longID(r *medicationRequest) string {
	return extensionIdentifier(r.GroupIdentifier.Extension, ExtPrescriptionLongID)
}

// incorrectItemValue is the facade's createMedicationRequestIncorrectValueIssue:
// INVALID_VALUE, issue type value.
func incorrectItemValue(field, want string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
		Diagnostics: "MedicationRequest." + field + " must be " + want + ".",
		Expression:  []string{itemsPath + "." + field}}
}

// identifierForSystem is the facade's getIdentifierValueForSystem
// (nhs-eps-api translation/common/index.ts): the one identifier of ids with
// the system, at expr; none is TOO_FEW_VALUES_SUBMITTED, several
// TOO_MANY_VALUES_SUBMITTED, and no identifier at all INVALID_VALUE
// "Required field missing.".
func identifierForSystem(ids []identifier, system, expr string) (int, *Error) {
	if ids == nil {
		return -1, processingError(expr, "Required field missing.")
	}
	found := -1
	for j, id := range ids {
		if id.System != system {
			continue
		}
		if found >= 0 {
			return -1, tooManyValues(expr, "system == '"+system+"'")
		}
		found = j
	}
	if found < 0 {
		return -1, tooFewValues(expr, "system == '"+system+"'")
	}
	return found, nil
}

// displayInvalidChecksum is the NHS EPS API's words for a wrong check
// character (1-Process-Response-Send-400_INVALID_CHECKSUM).
const displayInvalidChecksum = "Unable to process message. Information missing or invalid - prescriptionID has invalid checksum"

// checksumError is INVALID_CHECKSUM (EPS-IssueCode, issue type processing as
// the NHS answer has it), with the
// FAILURE_TO_PROCESS_MESSAGE coding the NHS EPS API answers with
// (1-Process-Response-Send-400_INVALID_CHECKSUM).
func checksumError(expr, id string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "processing", Code: CodeInvalidChecksum, CodeSystem: SystemEPSIssueCode,
		Display:     "Invalid checksum",
		Diagnostics: fmt.Sprintf("%s %s has a wrong check character (ISO 7064 MOD 37-2)", expr, quote(id)),
		Expression:  []string{expr},
		Codings:     []Coding{{System: SystemSpineErrorOrWarningCode, Code: CodeFailureToProcessMessage, Display: displayInvalidChecksum}}}
}

// The FHIR date and dateTime forms the facade accepts (nhs-eps-api
// translation/common/dateTime.ts FHIR_DATE_REGEX, FHIR_DATE_TIME_REGEX).
var (
	fhirDate     = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$`)
	fhirDateTime = regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|([+-])((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$`)
)

// undefinedIfEmpty is s, or "undefined" (as the facade writes an absent
// value) when s is empty.
func undefinedIfEmpty(s string) string {
	if s == "" {
		return "undefined"
	}
	return s
}

// dateTimeAt is the facade's convertIsoDateTimeStringToMoment
// (nhs-eps-api translation/common/dateTime.ts): s must be a FHIR dateTime
// (or date), else INVALID_VALUE "Incorrect format for date time string"
// at expr. It returns the first instant s designates.
func dateTimeAt(s, expr string) (time.Time, *Error) {
	if !fhirDateTime.MatchString(s) {
		return time.Time{}, processingError(expr, "Incorrect format for date time string '"+undefinedIfEmpty(s)+"'.")
	}
	t, _, ok := parseFHIRDate(s)
	if !ok { // a dateTime with a leap second, which Go does not parse
		return time.Time{}, processingError(expr, "Incorrect format for date time string '"+s+"'.")
	}
	return t, nil
}

// notReference is the facade's fieldIsNotReferenceButShouldBe
// (bundle-validator.ts): issue type invalid, no EPS code there
// (INVALID_VALUE here).
func notReference(field, expr string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
		Diagnostics: field + " populated incorrectly. Please populate with Reference to resource within Bundle.",
		Expression:  []string{expr}}
}

// parseFHIRDate parses a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) or dateTime
// (YYYY-MM-DDThh:mm:ss[.fff] with Z or an offset) and returns, in UTC, the
// first and the last instant it designates.
func parseFHIRDate(s string) (first, last time.Time, ok bool) {
	var layout string
	var next func(time.Time) time.Time
	switch len(s) {
	case 4:
		layout, next = "2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }
	case 7:
		layout, next = "2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }
	case 10:
		layout, next = time.DateOnly, func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }
	default:
		if len(s) < len("2006-01-02T15:04:05Z") || s[10] != 'T' {
			return first, last, false
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return first, last, false
		}
		return t.UTC(), t.UTC(), true
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return first, last, false
	}
	return t, next(t).Add(-time.Nanosecond), true
}

// distinct returns the distinct values of vs (compared as compact JSON), in
// the order first seen.
func distinct(vs [][]byte) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	for _, v := range vs {
		k := compactJSON(v)
		if !seen[k] {
			seen[k] = true
			out = append(out, v)
		}
	}
	return out
}
