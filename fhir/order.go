package fhir

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// maxItems is the number of line items Spine accepts in one prescription.
const maxItems = 4

// Order validates a prescription-order message and returns the order it
// carries. The checks run in this order, so that a message with several
// faults fails for the first; each failure is a *Error of KindInvalid (code,
// FHIR issue type):
//
//	1 to 4 MedicationRequests                         MISSING_VALUE required, INVALID_VALUE invalid
//	groupIdentifier, performer, validityPeriod,
//	  performer site type and prescription type
//	  equal on every MedicationRequest                INVALID_VALUE invalid
//	status active                                     MISSING_VALUE required, INVALID_VALUE value
//	intent order, original-order or instance-order   INVALID_VALUE value
//	courseOfTherapyType equal on every item, or
//	  a mix of acute and continuous                   INVALID_VALUE invalid (or value: unknown code)
//	line item ids present, UUIDs, unique              MISSING_VALUE, INVALID_VALUE value / duplicate
//	short prescription ID well formed                 MISSING_VALUE, INVALID_VALUE value
//	short prescription ID check character             INVALID_CHECKSUM value (+ FAILURE_TO_PROCESS_MESSAGE)
//	long prescription ID present, a UUID, equal       MISSING_VALUE, INVALID_VALUE value / invalid
//	one subject, a Patient with a valid NHS number    MISSING_VALUE, INVALID_VALUE value / invalid
//	ODS codes well formed: performer, sender,
//	  receiver, Organization and partOf, the GP       MISSING_VALUE, INVALID_VALUE value
//	a Provenance signature with data                  MISSING_DIGITAL_SIGNATURE required
//	validityPeriod and authoredOn FHIR dates          INVALID_VALUE value / invalid (end before start)
//	numberOfRepeatsAllowed, expectedSupplyDuration    MISSING_VALUE, INVALID_VALUE value
//
// The intent and course-of-therapy failures answer as the NHS EPS API does.
func (m *Message) Order() (*Order, error) {
	o, err := m.order()
	if err != nil {
		err.Op = "validate prescription-order"
		return nil, err
	}
	return o, nil
}

func (m *Message) order() (*Order, *Error) {
	if m.Event != EventPrescriptionOrder {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order message holds an order", quote(m.Event))
	}
	refs, err := newRefIndex(m.Entries)
	if err != nil {
		return nil, err
	}
	c := &orderCheck{m: m, refs: refs, o: Order{BundleID: m.BundleID, Sender: m.Sender, Receiver: m.Receiver}}
	for _, step := range orderSteps {
		if err := step(c); err != nil {
			return nil, err
		}
	}
	return &c.o, nil
}

// orderSteps are the checks of Order, in order.
var orderSteps = [...]func(*orderCheck) *Error{
	(*orderCheck).decodeItems,
	(*orderCheck).checkSameOnEveryItem,
	(*orderCheck).checkStatus,
	(*orderCheck).checkIntent,
	(*orderCheck).checkTherapy,
	(*orderCheck).checkItemIDs,
	(*orderCheck).checkPrescriptionID,
	(*orderCheck).checkPatient,
	(*orderCheck).checkODSCodes,
	(*orderCheck).readPrescriberOrg,
	(*orderCheck).checkSignature,
	(*orderCheck).readDates,
	(*orderCheck).readSupply,
	(*orderCheck).checkRepeatDispensing,
}

// Repeat dispensing limits of EPS-DOMAIN.md.
const (
	MaxRepeatIssues       = 99  // issues of one repeat dispensing prescription
	MaxSupplyDays         = 366 // days supply of one issue
	DefaultSupplyDays     = 28  // days supply when the order states none
	MaxRepeatCourseInDays = 366 // the course reaches at most 12 months ahead
)

// checkRepeatDispensing applies the rules of electronic repeat dispensing:
// at most 99 issues, a days supply of at most 366, the whole course within
// 12 months, and no Schedule 2 or 3 controlled drugs.
func (c *orderCheck) checkRepeatDispensing() *Error {
	o := &c.o
	if o.TherapyType != TherapyRepeatDispensing {
		return nil
	}
	const items = "Bundle.entry.resource.ofType(MedicationRequest)"
	if len(o.ControlledDrug) >= 3 && (o.ControlledDrug[2] == '2' || o.ControlledDrug[2] == '3') {
		return Invalid(CodeInvalidValue, "business-rule", items+".extension('"+ExtControlledDrug+"')",
			"a Schedule %c controlled drug (%s) cannot be prescribed for repeat dispensing", o.ControlledDrug[2], o.ControlledDrug)
	}
	issues := o.RepeatsAllowed + 1
	if issues > MaxRepeatIssues {
		return Invalid(CodeInvalidValue, "value", items+".dispenseRequest.numberOfRepeatsAllowed",
			"numberOfRepeatsAllowed %d means %d issues; repeat dispensing allows at most %d", o.RepeatsAllowed, issues, MaxRepeatIssues)
	}
	days := o.SupplyDays
	if days == 0 {
		days = DefaultSupplyDays
	}
	if days > MaxSupplyDays {
		return Invalid(CodeInvalidValue, "value", items+".dispenseRequest.expectedSupplyDuration",
			"a days supply of %d is more than the %d days allowed", days, MaxSupplyDays)
	}
	if issues*days > MaxRepeatCourseInDays {
		return Invalid(CodeInvalidValue, "value", items+".dispenseRequest.numberOfRepeatsAllowed",
			"%d issues of %d days reach %d days ahead; a repeat dispensing course may reach at most 12 months", issues, days, issues*days)
	}
	return nil
}

// orderCheck is the state of one Order validation.
type orderCheck struct {
	m        *Message
	refs     *refIndex
	items    []orderItem
	patient  patient
	patientK int      // entry index of the Patient
	orgs     []orgODS // each Organization entry's ODS code
	o        Order
}

// orderItem is a decoded MedicationRequest and its entry index.
type orderItem struct {
	k  int
	mr medicationRequest
}

// orgODS is the ODS code of the Organization in entry k.
type orgODS struct {
	k   int
	ods string
}

// medicationRequest holds what the broker reads of a MedicationRequest.
type medicationRequest struct {
	Extension                 []extension
	Identifier                []identifier
	Status                    string
	Intent                    string
	MedicationCodeableConcept Concept
	Subject                   reference
	Requester                 reference
	AuthoredOn                string
	GroupIdentifier           groupIdentifier
	CourseOfTherapyType       Concept
	Dosage                    string // dosageInstruction[0].text
	DispenseRequest           dispenseRequest
}

type groupIdentifier struct {
	identifier
	Extension []extension
}

type dispenseRequest struct {
	Extension              []extension
	ValidityPeriod         period
	Quantity               quantity
	ExpectedSupplyDuration *quantity
	NumberOfRepeatsAllowed *int
	Performer              reference
}

func (r *reader) medicationRequest(mr *medicationRequest) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &mr.Extension, r.extension)
		case "identifier":
			list(r, &mr.Identifier, r.identifier)
		case "status":
			mr.Status = r.str()
		case "intent":
			mr.Intent = r.str()
		case "medicationCodeableConcept":
			r.concept(&mr.MedicationCodeableConcept)
		case "subject":
			r.reference(&mr.Subject)
		case "requester":
			r.reference(&mr.Requester)
		case "authoredOn":
			mr.AuthoredOn = r.str()
		case "groupIdentifier":
			r.groupIdentifier(&mr.GroupIdentifier)
		case "courseOfTherapyType":
			r.concept(&mr.CourseOfTherapyType)
		case "dosageInstruction":
			mr.Dosage = ""
			r.array(func(i int) {
				r.object(func(key []byte) {
					if i == 0 && string(key) == "text" {
						mr.Dosage = r.str()
					}
				})
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
			list(r, &g.Extension, r.extension)
		}
	})
}

func (r *reader) dispenseRequest(d *dispenseRequest) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &d.Extension, r.extension)
		case "validityPeriod":
			r.period(&d.ValidityPeriod)
		case "quantity":
			r.quantity(&d.Quantity)
		case "expectedSupplyDuration":
			d.ExpectedSupplyDuration = new(quantity)
			r.quantity(d.ExpectedSupplyDuration)
		case "numberOfRepeatsAllowed":
			if n, ok := r.integer(); ok {
				d.NumberOfRepeatsAllowed = &n
			}
		case "performer":
			r.reference(&d.Performer)
		}
	})
}

type patient struct {
	Identifier          []identifier
	GeneralPractitioner []reference
}

func (r *reader) patient(p *patient) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			list(r, &p.Identifier, r.identifier)
		case "generalPractitioner":
			list(r, &p.GeneralPractitioner, r.reference)
		}
	})
}

type organization struct {
	Identifier []identifier
	PartOf     reference
}

func (r *reader) organization(o *organization) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			list(r, &o.Identifier, r.identifier)
		case "partOf":
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

// decodeItems counts and decodes the MedicationRequests.
func (c *orderCheck) decodeItems() *Error {
	const expr = "Bundle.entry.resource.ofType(MedicationRequest)"
	n := 0
	for _, e := range c.m.Entries {
		if e.ResourceType == "MedicationRequest" {
			n++
		}
	}
	switch {
	case n == 0:
		return missing(expr, "a prescription-order needs at least one MedicationRequest; the Bundle has none")
	case n > maxItems:
		return Invalid(CodeInvalidValue, "invalid", expr,
			"a prescription-order holds at most %d MedicationRequests (line items); the Bundle has %d", maxItems, n)
	}
	c.items = make([]orderItem, 0, n)
	for k, e := range c.m.Entries {
		if e.ResourceType != "MedicationRequest" {
			continue
		}
		c.items = append(c.items, orderItem{k: k})
		mr := &c.items[len(c.items)-1].mr
		if err := readEntry(c.m, k, func(r *reader) { r.medicationRequest(mr) }); err != nil {
			return err
		}
	}
	return nil
}

// sameOnEveryItem lists the elements that must be equal on every
// MedicationRequest of an order: the FHIRPath under the MedicationRequest and
// a function reading the element.
var sameOnEveryItem = [...]struct {
	path string
	get  func(*medicationRequest) string
}{
	{"groupIdentifier.value", func(r *medicationRequest) string { return r.GroupIdentifier.Value }},
	{"dispenseRequest.performer.identifier.value", func(r *medicationRequest) string { return r.DispenseRequest.Performer.Identifier.Value }},
	{"dispenseRequest.validityPeriod.start", func(r *medicationRequest) string { return r.DispenseRequest.ValidityPeriod.Start }},
	{"dispenseRequest.validityPeriod.end", func(r *medicationRequest) string { return r.DispenseRequest.ValidityPeriod.End }},
	{"dispenseRequest.extension('" + ExtPerformerSiteType + "').valueCoding.code", siteType},
	{"extension('" + ExtPrescriptionType + "').valueCoding.code", prescriptionType},
}

func siteType(r *medicationRequest) string {
	return extensionCode(r.DispenseRequest.Extension, ExtPerformerSiteType)
}

// ExtControlledDrug is the controlled drug extension of a MedicationRequest:
// its part "schedule" codes CD1..CD5.
const ExtControlledDrug = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"

// controlledDrugSchedule is an item's controlled drug schedule, "" if none.
func controlledDrugSchedule(r *medicationRequest) string {
	if e := findExtension(r.Extension, ExtControlledDrug); e != nil {
		return extensionCode(e.Extension, "schedule")
	}
	return ""
}

// cdRank orders schedules from the most controlled (CD1) down.
func cdRank(cd string) byte {
	if len(cd) >= 3 {
		return cd[2]
	}
	return '9'
}

func prescriptionType(r *medicationRequest) string {
	return extensionCode(r.Extension, ExtPrescriptionType)
}

func longID(r *medicationRequest) string {
	return extensionIdentifier(r.GroupIdentifier.Extension, ExtPrescriptionLongID)
}

func subject(r *medicationRequest) string { return r.Subject.Reference }

func (c *orderCheck) checkSameOnEveryItem() *Error {
	for _, f := range sameOnEveryItem {
		if err := c.same(f.path, f.get); err != nil {
			return err
		}
	}
	first := &c.items[0].mr
	c.o.SiteType = siteType(first)
	c.o.PrescriptionType = prescriptionType(first)
	for _, it := range c.items {
		if cd := controlledDrugSchedule(&it.mr); cd != "" && (c.o.ControlledDrug == "" || cdRank(cd) < cdRank(c.o.ControlledDrug)) {
			c.o.ControlledDrug = cd
		}
	}
	return nil
}

// same checks that get reads the same value, at path, on every item.
func (c *orderCheck) same(path string, get func(*medicationRequest) string) *Error {
	first := &c.items[0]
	want := get(&first.mr)
	for i := 1; i < len(c.items); i++ {
		it := &c.items[i]
		if got := get(&it.mr); got != want {
			return inconsistent(entryPath(it.k, path),
				"MedicationRequest.%s must be the same on every MedicationRequest: it is %s in Bundle.entry[%d] and %s in Bundle.entry[%d]",
				path, quote(want), first.k, quote(got), it.k)
		}
	}
	return nil
}

func (c *orderCheck) checkStatus() *Error {
	for _, it := range c.items {
		switch it.mr.Status {
		case "active":
			continue
		case "":
			expr := entryPath(it.k, "status")
			return missing(expr, "%s is missing: it must be active", expr)
		}
		expr := entryPath(it.k, "status")
		return badValue(expr, "%s must be active in a prescription-order, found %s", expr, quote(it.mr.Status))
	}
	return nil
}

// checkIntent answers as the NHS EPS API does (4-Process-Response-Send-400_invalid_intent).
func (c *orderCheck) checkIntent() *Error {
	for _, it := range c.items {
		switch it.mr.Intent {
		case "order", "original-order", "instance-order":
			continue
		}
		return badValue("Bundle.entry.resource.ofType(MedicationRequest).intent",
			"MedicationRequest.intent must be order, original-order or instance-order.")
	}
	return nil
}

// therapyCode returns the course of therapy code of r: that of the coding in
// the HL7 code system, or else of the first coding.
func therapyCode(r *medicationRequest) string {
	cs := r.CourseOfTherapyType.Coding
	for _, c := range cs {
		if c.System == SystemCourseOfTherapy {
			return c.Code
		}
	}
	if len(cs) > 0 {
		return cs[0].Code
	}
	return ""
}

// displayTherapyMix is the NHS EPS API's words for a forbidden mix
// (2-Process-Response-Send-400_Invalid_Course_of_Therapy_mixed).
const displayTherapyMix = "Course of therapy type must either match for all MedicationRequests or be a mixture of 'acute' and 'continuous'."

func (c *orderCheck) checkTherapy() *Error {
	for _, it := range c.items {
		switch code := therapyCode(&it.mr); code {
		case TherapyAcute, TherapyContinuous, TherapyRepeatDispensing:
		case "":
			expr := entryPath(it.k, "courseOfTherapyType.coding")
			return missing(expr, "%s is missing: it must be acute, continuous or continuous-repeat-dispensing", expr)
		default:
			expr := entryPath(it.k, "courseOfTherapyType.coding")
			return badValue(expr, "%s %s is not a course of therapy (acute, continuous or continuous-repeat-dispensing)", expr, quote(code))
		}
	}
	first := therapyCode(&c.items[0].mr)
	c.o.TherapyType = first
	for _, it := range c.items[1:] {
		code := therapyCode(&it.mr)
		switch {
		case code == first:
		case isAcuteOrContinuous(code) && isAcuteOrContinuous(first):
			c.o.TherapyType = TherapyContinuous
		default:
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue, Display: displayTherapyMix,
				Diagnostics: fmt.Sprintf("%s It is %s in Bundle.entry[%d] and %s in Bundle.entry[%d].",
					displayTherapyMix, quote(first), c.items[0].k, quote(code), it.k),
				Expression: []string{"MedicationRequest.courseOfTherapyType.coding"}}
		}
	}
	return nil
}

func isAcuteOrContinuous(code string) bool {
	return code == TherapyAcute || code == TherapyContinuous
}

// checkItemIDs checks the line item ids and fills c.o.Items.
func (c *orderCheck) checkItemIDs() *Error {
	c.o.Items = make([]OrderItem, 0, len(c.items))
	for _, it := range c.items {
		j := findIdentifier(it.mr.Identifier, SystemLineItemID)
		if j < 0 {
			expr := entryPath(it.k, "identifier")
			return missing(expr, "%s has no identifier with system %s (the line item id)", expr, SystemLineItemID)
		}
		id := it.mr.Identifier[j].Value
		p := inEntry(it.k, "identifier").at(j, ".value")
		if err := requireUUID(id, p); err != nil {
			return err
		}
		for _, prev := range c.o.Items {
			if strings.EqualFold(prev.ID, id) {
				expr := p.String()
				return Invalid(CodeInvalidValue, "duplicate", expr,
					"%s %s is the id of another line item too: line item ids must be unique", expr, quote(id))
			}
		}
		if err := checkMedicationCode(&it.mr, it.k); err != nil {
			return err
		}
		c.o.Items = append(c.o.Items, newOrderItem(id, &it.mr))
	}
	return nil
}

// checkMedicationCode checks that an item names its medication by a dm+d
// (SNOMED CT) concept id: 6 to 18 digits.
func checkMedicationCode(r *medicationRequest, k int) *Error {
	expr := entryPath(k, "medicationCodeableConcept.coding[0].code")
	cs := r.MedicationCodeableConcept.Coding
	if len(cs) == 0 || cs[0].Code == "" {
		return missing(expr, "%s is missing: every line item names its medication by a dm+d (SNOMED CT) code", expr)
	}
	code := cs[0].Code
	ok := len(code) >= 6 && len(code) <= 18
	for i := 0; ok && i < len(code); i++ {
		ok = code[i] >= '0' && code[i] <= '9'
	}
	if !ok {
		return badValue(expr, "%s %s is not a dm+d (SNOMED CT) concept id (6 to 18 digits)", expr, quote(code))
	}
	return nil
}

// newOrderItem is the line item id and r's medication, quantity and dosage.
func newOrderItem(id string, r *medicationRequest) OrderItem {
	item := OrderItem{ID: id, QuantityUnit: r.DispenseRequest.Quantity.Unit}
	if cs := r.MedicationCodeableConcept.Coding; len(cs) > 0 {
		item.MedicationCode, item.MedicationDisplay = cs[0].Code, cs[0].Display
	}
	item.Quantity = r.DispenseRequest.Quantity.Value
	item.Dosage = r.Dosage
	return item
}

// checkPrescriptionID checks the short-form ID (the same on every item, as
// checked before) and the long-form ID of every item.
func (c *orderCheck) checkPrescriptionID() *Error {
	first := &c.items[0]
	gi := &first.mr.GroupIdentifier
	expr := entryPath(first.k, "groupIdentifier")
	switch {
	case gi.Value == "":
		return missing(expr+".value", "%s.value is missing: it must be the short-form prescription ID", expr)
	case gi.System != SystemPrescriptionID:
		return badValue(expr+".system", "%s.system must be %s, found %s", expr, SystemPrescriptionID, quote(gi.System))
	case !ShortIDWellFormed(gi.Value):
		return badValue(expr+".value",
			"%s.value %s is not a short-form prescription ID (6 hexadecimal characters, the prescriber's ODS code padded to 6, 5 hexadecimal characters and a check character, separated by dashes)",
			expr, quote(gi.Value))
	case !ValidShortID(gi.Value):
		return checksumError(expr+".value", gi.Value)
	}
	c.o.PrescriptionID = gi.Value

	const longPath = "groupIdentifier.extension('" + ExtPrescriptionLongID + "').valueIdentifier.value"
	for _, it := range c.items {
		if err := requireUUID(longID(&it.mr), inEntry(it.k, longPath)); err != nil {
			return err
		}
	}
	if err := c.same(longPath, longID); err != nil {
		return err
	}
	c.o.LongID = longID(&first.mr)
	return nil
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

// resolveRef resolves ref, at expr in the resource of entry holder, to an
// entry whose resource is a want, or reports why it cannot.
func (c *orderCheck) resolveRef(ref string, holder int, expr, want string) (int, *Error) {
	k := c.refs.resolve([]byte(ref), holder)
	switch {
	case k < 0:
		return -1, inconsistent(expr, "%s %s does not resolve to a resource in the Bundle", expr, quote(ref))
	case c.m.Entries[k].ResourceType != want:
		return -1, inconsistent(expr, "%s must reference a %s, it references a %s", expr, want, quote(c.m.Entries[k].ResourceType))
	}
	return k, nil
}

// checkPatient checks that every item names the same subject, a Patient
// with a valid NHS number.
func (c *orderCheck) checkPatient() *Error {
	if err := c.same("subject.reference", subject); err != nil {
		return err
	}
	first := &c.items[0]
	expr := entryPath(first.k, "subject.reference")
	if first.mr.Subject.Reference == "" {
		return missing(expr, "%s is missing: the order must name its Patient", expr)
	}
	p, err := c.resolveRef(first.mr.Subject.Reference, first.k, expr, "Patient")
	if err != nil {
		return err
	}
	if err := readEntry(c.m, p, func(r *reader) { r.patient(&c.patient) }); err != nil {
		return err
	}
	c.patientK = p
	j := findIdentifier(c.patient.Identifier, SystemNHSNumber)
	if j < 0 {
		expr := entryPath(p, "identifier")
		return missing(expr, "%s has no identifier with system %s (the NHS number)", expr, SystemNHSNumber)
	}
	nhs := c.patient.Identifier[j].Value
	if err := requireNHSNumber(nhs, inEntry(p, "identifier").at(j, ".value")); err != nil {
		return err
	}
	c.o.NHSNumber = nhs
	return nil
}

// checkODSCodes checks every ODS code the order names and records each
// Organization's.
func (c *orderCheck) checkODSCodes() *Error {
	first := &c.items[0]
	c.o.Performer = first.mr.DispenseRequest.Performer.Identifier.Value
	if err := optionalODS(c.o.Performer, inEntry(first.k, "dispenseRequest.performer.identifier.value")); err != nil {
		return err
	}
	if err := requireODS(c.m.Sender, under("MessageHeader", "sender.identifier.value")); err != nil {
		return err
	}
	if err := optionalODS(c.m.Receiver, under("MessageHeader", "destination").at(0, ".receiver.identifier.value")); err != nil {
		return err
	}
	for i, gp := range c.patient.GeneralPractitioner {
		if err := checkODSIdentifier(gp.Identifier, inEntry(c.patientK, "generalPractitioner").at(i, ".identifier.value")); err != nil {
			return err
		}
	}
	for k, e := range c.m.Entries {
		if e.ResourceType != "Organization" {
			continue
		}
		var org organization
		if err := readEntry(c.m, k, func(r *reader) { r.organization(&org) }); err != nil {
			return err
		}
		for j, id := range org.Identifier {
			if err := checkODSIdentifier(id, inEntry(k, "identifier").at(j, ".value")); err != nil {
				return err
			}
		}
		if err := checkODSIdentifier(org.PartOf.Identifier, inEntry(k, "partOf.identifier.value")); err != nil {
			return err
		}
		if j := findIdentifier(org.Identifier, SystemODSCode); j >= 0 {
			c.orgs = append(c.orgs, orgODS{k: k, ods: org.Identifier[j].Value})
		}
	}
	return nil
}

// checkODSIdentifier checks the value, at p, of an identifier in the ODS
// code system; identifiers of other systems are not ODS codes.
func checkODSIdentifier(id identifier, p fieldPath) *Error {
	if id.System != SystemODSCode {
		return nil
	}
	return requireODS(id.Value, p)
}

// readPrescriberOrg finds the ODS code of the organisation of the first
// item's requester, when the requester is a PractitionerRole whose
// organization is an ODS identifier or resolves to an Organization of the
// Bundle.
func (c *orderCheck) readPrescriberOrg() *Error {
	first := &c.items[0]
	role := c.refs.resolve([]byte(first.mr.Requester.Reference), first.k)
	if role < 0 || c.m.Entries[role].ResourceType != "PractitionerRole" {
		return nil
	}
	var org reference
	if err := readEntry(c.m, role, func(r *reader) { r.practitionerRoleOrg(&org) }); err != nil {
		return err
	}
	if id := org.Identifier; id.Value != "" {
		if err := checkODSIdentifier(id, inEntry(role, "organization.identifier.value")); err != nil {
			return err
		}
		c.o.PrescriberOrg = id.Value
		return nil
	}
	k := c.refs.resolve([]byte(org.Reference), role)
	for _, o := range c.orgs {
		if o.k == k {
			c.o.PrescriberOrg = o.ods
		}
	}
	return nil
}

// checkSignature checks that a Provenance carries a signature with data.
func (c *orderCheck) checkSignature() *Error {
	for _, e := range c.m.Entries {
		if e.ResourceType == "Provenance" && hasSignatureData(e.Resource) {
			return nil
		}
	}
	return &Error{Kind: KindInvalid, IssueType: "required", Code: CodeMissingDigitalSignature,
		Diagnostics: "the prescription-order is not signed: no Provenance in the Bundle has a signature with data",
		Expression:  []string{"Bundle.entry.resource.ofType(Provenance).signature"}}
}

// hasSignatureData reports whether the Provenance res has a signature whose
// data is a non-empty string.
func hasSignatureData(res []byte) bool {
	found := false
	r := newReader(res, "")
	r.object(func(key []byte) {
		if string(key) != "signature" {
			return
		}
		r.array(func(int) {
			r.object(func(key []byte) {
				if string(key) == "data" && len(r.bytes()) > 0 {
					found = true
				}
			})
		})
	})
	return found
}

// readDates parses the validity period and the authoring date.
func (c *orderCheck) readDates() *Error {
	first := &c.items[0]
	vp := first.mr.DispenseRequest.ValidityPeriod
	end := inEntry(first.k, "dispenseRequest.validityPeriod.end")
	var err *Error
	if c.o.ValidityStart, _, err = dateField(vp.Start, inEntry(first.k, "dispenseRequest.validityPeriod.start")); err != nil {
		return err
	}
	if _, c.o.ValidityEnd, err = dateField(vp.End, end); err != nil {
		return err
	}
	if !c.o.ValidityStart.IsZero() && !c.o.ValidityEnd.IsZero() && c.o.ValidityEnd.Before(c.o.ValidityStart) {
		return inconsistent(end.String(), "%s %s is before the start of the validity period %s", end, quote(vp.End), quote(vp.Start))
	}
	for _, it := range c.items {
		t, _, err := dateField(it.mr.AuthoredOn, inEntry(it.k, "authoredOn"))
		if err != nil {
			return err
		}
		if c.o.AuthoredOn.IsZero() {
			c.o.AuthoredOn = t
		}
	}
	return nil
}

// dateField parses the FHIR date or dateTime s at p: it returns the first
// and the last instant it designates (the same for a dateTime; for a date,
// its first and last nanosecond), or zero times when s is empty.
func dateField(s string, p fieldPath) (first, last time.Time, err *Error) {
	if s == "" {
		return first, last, nil
	}
	first, last, ok := parseFHIRDate(s)
	if !ok {
		return first, last, badValue(p.String(), "%s %s is not a FHIR date or dateTime (YYYY-MM-DD, or YYYY-MM-DDThh:mm:ss with a time zone)", p, quote(s))
	}
	return first, last, nil
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

// readSupply reads the number of repeats and the days of supply: the largest
// of the items'.
func (c *orderCheck) readSupply() *Error {
	for _, it := range c.items {
		dr := &it.mr.DispenseRequest
		if n := dr.NumberOfRepeatsAllowed; n != nil {
			if *n < 0 {
				expr := entryPath(it.k, "dispenseRequest.numberOfRepeatsAllowed")
				return badValue(expr, "%s must not be negative, found %d", expr, *n)
			}
			c.o.RepeatsAllowed = max(c.o.RepeatsAllowed, *n)
		}
		if q := dr.ExpectedSupplyDuration; q != nil {
			days, err := supplyDays(q, inEntry(it.k, "dispenseRequest.expectedSupplyDuration"))
			if err != nil {
				return err
			}
			c.o.SupplyDays = max(c.o.SupplyDays, days)
		}
	}
	return nil
}

// supplyDays reads a duration, at p, that must be a whole number of days
// (UCUM code d, or unit d, day or days without a code).
func supplyDays(q *quantity, p fieldPath) (int, *Error) {
	inDays := q.Code == "d" || q.Code == "" && (q.Unit == "d" || q.Unit == "day" || q.Unit == "days")
	if !inDays {
		return 0, badValue(p.String()+".code", "%s must be in days (code d), found code %s unit %s", p, quote(q.Code), quote(q.Unit))
	}
	if !q.HasValue {
		return 0, missing(p.String()+".value", "%s.value is missing", p)
	}
	if v := q.Value; v < 0 || v != math.Trunc(v) || v > math.MaxInt32 {
		return 0, badValue(p.String()+".value", "%s.value must be a whole number of days, found %v", p, v)
	}
	return int(q.Value), nil
}
