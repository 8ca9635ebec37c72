package fhir

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// maxItems is the number of line items Spine accepts in one prescription.
const maxItems = 4

// Order validates a prescription-order message as the EPS FHIR facade and
// Spine do at now (eRD validity, review and birth dates are checked against
// it), and returns the order it carries. The checks run in this order, so
// that a message with several faults fails for the first; each failure is a
// *Error of KindInvalid. Each rule follows the reference named at its
// function (nhs-eps-api: the facade's bundle-validator.ts and translation;
// eps-spine-shared: Spine's validation/create.py and common.py). A refusal of
// Spine's is answered as the facade relays it: FAILURE_TO_PROCESS_MESSAGE,
// "Unable to process message. Information missing or invalid - " and
// Spine's words (spineError).
//
//	1 to 4 MedicationRequests (more: Spine's lineItems max count)
//	the same on every item: groupIdentifier, category, authoredOn, subject,
//	  requester, performer, validityPeriod, expectedSupplyDuration, performer
//	  site type, prescription type, responsible practitioner
//	the prescription type and performer site type extensions present
//	status active; intent not plan or reflex-order
//	not both medicationCodeableConcept and medicationReference
//	course of therapy (every coding of every item; acute and continuous
//	  make acute); line item ids (GUIDs, unique as sent)
//	exactly one SNOMED CT coding (in the item or its Medication)
//	dosageInstruction present, each with a sequence when several
//	the prescription IDs (groupIdentifier.value whatever its system)
//	the one Patient: NHS number, birth date (a date, not in the future)
//	every PractitionerRole: practitioner, organization, healthcareService
//	  references; the requester's role, Practitioner (one professional code,
//	  no gmp-number), Organization (primary care: partOf, no
//	  healthcareService; ODS code and name; Spine's agentOrganization and
//	  hcplOrgCode formats); the responsible party; CommunicationRequest lists
//	the nominated performer (Spine: ODS format, site type P1, P2 or P3)
//	telecoms with value and use
//	the requester's signature (MISSING_DIGITAL_SIGNATURE; its when and data)
//	the UK Core authorisationExpiryDate in the future
//	dates; supply; repeat dispensing
//
// References are resolved where EPS reads them, by fullUrl only
// (resolveRef); others are not resolved. The ODS codes EPS does not check
// (MessageHeader sender and receivers, Patient.generalPractitioner, other
// Organizations) are not checked.
func (m *Message) Order(now time.Time) (*Order, error) {
	o, err := m.order(now, false)
	if err != nil {
		err.Op = "validate prescription-order"
		return nil, err
	}
	return o, nil
}

// OrderBeforeSigning is Order for an order that may not be signed yet: the
// same checks, except that an order with no signature of its requester is
// not MISSING_DIGITAL_SIGNATURE (a signature it has is still checked). It is
// what $validate runs: prescribing systems validate an order before they
// sign it (the EPS API's $prepare, sign, $process-message), and EPS's
// $validate accepts it unsigned.
func (m *Message) OrderBeforeSigning(now time.Time) (*Order, error) {
	o, err := m.order(now, true)
	if err != nil {
		err.Op = "validate prescription-order"
		return nil, err
	}
	return o, nil
}

func (m *Message) order(now time.Time, unsigned bool) (*Order, *Error) {
	if m.Event != EventPrescriptionOrder {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order message holds an order", quote(m.Event))
	}
	refs, err := newRefIndex(m.Entries)
	if err != nil {
		return nil, err
	}
	c := &orderCheck{m: m, refs: refs, now: now.UTC(), role: -1, unsigned: unsigned,
		o: Order{BundleID: m.BundleID, Sender: m.Sender, Receiver: m.Receiver}}
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
	(*orderCheck).checkPrescriptionType,
	(*orderCheck).checkSiteTypeExtension,
	(*orderCheck).checkStatus,
	(*orderCheck).checkIntent,
	(*orderCheck).checkMedicationFields,
	(*orderCheck).checkTherapy,
	(*orderCheck).checkItemIDs,
	(*orderCheck).checkDosage,
	(*orderCheck).checkPrescriptionID,
	(*orderCheck).checkPatient,
	(*orderCheck).checkPractitionerRoles,
	(*orderCheck).checkRequester,
	(*orderCheck).checkResponsibleParty,
	(*orderCheck).checkCommunicationRequests,
	(*orderCheck).checkNominatedPerformer,
	(*orderCheck).checkTelecoms,
	(*orderCheck).checkSignature,
	(*orderCheck).checkReviewDate,
	(*orderCheck).readDates,
	(*orderCheck).readSupply,
	(*orderCheck).checkRepeatDispensing,
	(*orderCheck).checkAmounts,
}

// checkRepeatDispensing applies the rules of electronic repeat dispensing
// (eRD), in the order EPS applies them:
//
//   - the facade (nhs-eps-api bundle-validator.ts
//     verifyRepeatDispensingPrescription): numberOfRepeatsAllowed (and the
//     UK Core repeat information, when the first item has it) the same on
//     every item, validityPeriod and expectedSupplyDuration present;
//   - its translation (translation/request/prescription.ts
//     extractRepeatNumberHighValue, convertPrescriptionComponent1):
//     numberOfRepeatsAllowed present, expectedSupplyDuration in days;
//   - the broker's own rule, stricter than EPS for a regulatory reason: no
//     Schedule 2 or 3 controlled drug (they may not be repeat dispensed);
//   - Spine (eps-spine-shared validation/create.py
//     check_repeat_dispense_instances, check_days_supply,
//     check_repeat_dispense_window): at most 99 issues, a days supply of 0 to
//     366, a validity period with start and end, the end not in the past
//     nor more than 12 months ahead of now, the start not after the end.
func (c *orderCheck) checkRepeatDispensing() *Error {
	o := &c.o
	if o.TherapyType != TherapyRepeatDispensing {
		return nil
	}
	if err := c.sameRaw("dispenseRequest.numberOfRepeatsAllowed", func(r *medicationRequest) []byte { return r.DispenseRequest.RepeatsRaw }); err != nil {
		return err
	}
	first := &c.items[0]
	if e := findExtension(first.mr.Extension, ExtUKCoreRepeatInformation); e != nil && len(e.Extension) > 0 {
		if err := c.sameRaw(`extension("`+ExtUKCoreRepeatInformation+`")`, func(r *medicationRequest) []byte { return extensionRaw(r.Extension, ExtUKCoreRepeatInformation) }); err != nil {
			return err
		}
	}
	dr := &first.mr.DispenseRequest
	if dr.ValidityRaw == nil {
		return missingItemValue("dispenseRequest.validityPeriod")
	}
	if dr.ExpectedSupplyDuration == nil {
		return missingItemValue("dispenseRequest.expectedSupplyDuration")
	}
	if dr.RepeatsRaw == nil {
		return processingError("MedicationRequest.dispenseRequest.numberOfRepeatsAllowed", "Number of repeats allowed is required.")
	}
	if _, err := dateTimeAt(dr.ValidityPeriod.Start, "MedicationRequest.dispenseRequest.validityPeriod.start"); err != nil {
		return err
	}
	if _, err := dateTimeAt(dr.ValidityPeriod.End, "MedicationRequest.dispenseRequest.validityPeriod.end"); err != nil {
		return err
	}
	if dr.ExpectedSupplyDuration.Code != "d" {
		return processingError("MedicationRequest.dispenseRequest.expectedSupplyDuration.code", "Expected supply duration must be specified in days.")
	}
	if len(o.ControlledDrug) >= 3 && (o.ControlledDrug[2] == '2' || o.ControlledDrug[2] == '3') {
		return Invalid(CodeInvalidValue, "business-rule", itemsPath+".extension('"+ExtControlledDrug+"')",
			"a Schedule %c controlled drug (%s) cannot be prescribed for repeat dispensing", o.ControlledDrug[2], o.ControlledDrug)
	}
	repeats := inEntry(first.k, "dispenseRequest.numberOfRepeatsAllowed").String()
	n, ok := parseRepeats(dr.RepeatsRaw)
	switch {
	case !ok:
		return spineError(repeats, "prescriptionRepeatHigh is not an integer")
	case n+1 < 0:
		return spineError(repeats, "prescriptionRepeatHigh is not an integer")
	case n+1 < 1:
		return spineError(repeats, "prescriptionRepeatLow is greater than prescriptionRepeatHigh")
	case n+1 > MaxRepeatIssues:
		return spineError(repeats, fmt.Sprintf("prescriptionRepeatHigh must not be over configured maximum of %d", MaxRepeatIssues))
	}
	o.RepeatsAllowed = n
	supply := inEntry(first.k, "dispenseRequest.expectedSupplyDuration.value").String()
	q := dr.ExpectedSupplyDuration
	switch {
	case !q.HasValue:
		o.SupplyDays = rx.DefaultSupplyDays
	case q.Value != math.Trunc(q.Value) || q.Value < 0:
		// REGEX_INTEGER12: digits only, so a negative number is not an integer
		return spineError(supply, "daysSupply is not an integer")
	case q.Value > MaxSupplyDays:
		return spineError(supply, fmt.Sprintf("daysSupply cannot exceed %d", MaxSupplyDays))
	case q.Value == 0:
		o.SupplyDays = rx.DefaultSupplyDays
	default:
		o.SupplyDays = int(q.Value)
	}
	vp := dr.ValidityPeriod
	window := inEntry(first.k, "dispenseRequest.validityPeriod")
	low, high := writtenDate(vp.Start), writtenDate(vp.End)
	today := c.now.Format("20060102")
	maxHigh := c.now.AddDate(0, MaxFutureSupplyMonths, 0).Format("20060102")
	switch {
	case high > maxHigh:
		return spineError(window.String()+".end", fmt.Sprintf("daysSupplyValidHigh is more than %d months beyond current day", MaxFutureSupplyMonths))
	case high < today:
		return spineError(window.String()+".end", "daysSupplyValidHigh is in the past")
	case low > high:
		return spineError(window.String()+".start", "daysSupplyValid low is after daysSupplyValidHigh")
	}
	return nil
}

// writtenDate is the date of a FHIR date or dateTime as written (its first
// ten characters), as YYYYMMDD: the date Spine compares.
func writtenDate(s string) string {
	if len(s) < 10 {
		return strings.ReplaceAll(s, "-", "")
	}
	return strings.ReplaceAll(s[:10], "-", "")
}

// missingItemValue is the facade's createMedicationRequestMissingValueIssue
// (nhs-eps-api models/errors/validation-errors.ts): issue type value, no EPS
// code there (MISSING_VALUE here).
func missingItemValue(field string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeMissingValue,
		Diagnostics: "Expected MedicationRequest to have a value for " + field + ".",
		Expression:  []string{itemsPath + "." + field}}
}

// parseRepeats reads numberOfRepeatsAllowed as EPS does (translation
// parseNumberOfRepeatsAllowed, with lossless-json): a JSON integer, or a
// string of digits ("6").
func parseRepeats(raw []byte) (int, bool) {
	s := string(raw)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	if s == "" || len(s) > 9 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// orderCheck is the state of one Order validation.
type orderCheck struct {
	m        *Message
	refs     *refIndex
	now      time.Time
	items    []orderItem
	patient  patient
	patientK int                      // entry index of the Patient
	roles    map[int]practitionerRole // each PractitionerRole, by entry index
	role     int                      // entry index of the requester's PractitionerRole
	unsigned bool                     // the order may not be signed yet (OrderBeforeSigning)
	o        Order
}

// orderItem is a decoded MedicationRequest and its entry index.
type orderItem struct {
	k  int
	mr medicationRequest
}

// isIdentifierReference is the facade's isIdentifierReference: the
// reference has an identifier.
func isIdentifierReference(ref reference) bool {
	return ref.Identifier != identifier{}
}

// decodeItems counts and decodes the MedicationRequests.
func (c *orderCheck) decodeItems() *Error {
	n := 0
	for _, e := range c.m.Entries {
		if e.ResourceType == "MedicationRequest" {
			n++
		}
	}
	switch {
	case n == 0:
		return missing(itemsPath, "a prescription-order needs at least one MedicationRequest; the Bundle has none")
	case n > maxItems:
		// Spine validate_line_items (MAX_LINEITEMS)
		return spineError(itemsPath, fmt.Sprintf("lineItems over expected max count of %d", maxItems))
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

// Extensions of a MedicationRequest the order rules name.
const (
	// ExtControlledDrug is the controlled drug extension: its part
	// "schedule" codes CD1..CD5.
	ExtControlledDrug = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"
)

// sameOnEveryItem lists the elements that must be the same on every
// MedicationRequest, as the facade names them (nhs-eps-api
// bundle-validator.ts verifyPrescriptionBundle), with a function returning
// the element's JSON (nil when absent).
var sameOnEveryItem = [...]struct {
	path string
	get  func(*medicationRequest) []byte
}{
	{"groupIdentifier", func(r *medicationRequest) []byte { return r.GroupIdentifierRaw }},
	{"category", func(r *medicationRequest) []byte { return r.CategoryRaw }},
	{"authoredOn", func(r *medicationRequest) []byte { return r.AuthoredOnRaw }},
	{"subject", func(r *medicationRequest) []byte { return r.SubjectRaw }},
	{"requester", func(r *medicationRequest) []byte { return r.RequesterRaw }},
	{"dispenseRequest.performer", func(r *medicationRequest) []byte { return r.DispenseRequest.PerformerRaw }},
	{"dispenseRequest.validityPeriod", func(r *medicationRequest) []byte { return r.DispenseRequest.ValidityRaw }},
	{"dispenseRequest.expectedSupplyDuration", func(r *medicationRequest) []byte { return r.DispenseRequest.SupplyRaw }},
	{`dispenseRequest.extension("` + ExtPerformerSiteType + `")`, func(r *medicationRequest) []byte {
		return extensionRaw(r.DispenseRequest.Extension, ExtPerformerSiteType)
	}},
	{`extension("` + ExtPrescriptionType + `")`, func(r *medicationRequest) []byte { return extensionRaw(r.Extension, ExtPrescriptionType) }},
	{`extension("` + ExtResponsiblePractitioner + `")`, func(r *medicationRequest) []byte {
		return extensionRaw(r.Extension, ExtResponsiblePractitioner)
	}},
}

// extensionRaw is the JSON of the extension with the given url, nil if none.
func extensionRaw(exts []extension, url string) []byte {
	if e := findExtension(exts, url); e != nil {
		return e.raw
	}
	return nil
}

func siteType(r *medicationRequest) string {
	return extensionCode(r.DispenseRequest.Extension, ExtPerformerSiteType)
}

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

func (c *orderCheck) checkSameOnEveryItem() *Error {
	for _, f := range sameOnEveryItem {
		if err := c.sameRaw(f.path, f.get); err != nil {
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

// sameRaw checks that get reads the same value on every item, compared as
// the facade compares them (getUniqueValues: isDeepStrictEqual, so the order
// of an object's members and white space do not matter), and answers as the
// facade does otherwise (createMedicationRequestInconsistentValueIssue:
// INVALID_VALUE, issue type value, the distinct values received, an absent
// one as null).
func (c *orderCheck) sameRaw(path string, get func(*medicationRequest) []byte) *Error {
	first := get(&c.items[0].mr)
	differ := false
	for i := 1; i < len(c.items) && !differ; i++ {
		differ = !bytes.Equal(get(&c.items[i].mr), first) || (first == nil) != (get(&c.items[i].mr) == nil)
	}
	if !differ {
		return nil
	}
	var distinct []string
	for i := range c.items {
		v := canonicalJSON(get(&c.items[i].mr))
		if !slices.Contains(distinct, v) {
			distinct = append(distinct, v)
		}
	}
	if len(distinct) < 2 {
		return nil
	}
	return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
		Diagnostics: "Expected all MedicationRequests to have the same value for " + path + ". Received [" + clip(strings.Join(distinct, ",")) + "].",
		Expression:  []string{itemsPath + "." + path}}
}

// canonicalJSON is raw (a valid JSON value) with its objects' members
// sorted and no white space; "null" for nil.
func canonicalJSON(raw []byte) string {
	if raw == nil {
		return "null"
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return string(raw)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return string(raw)
	}
	return string(b)
}

// checkPrescriptionType checks that the first item has the prescription
// type extension, as the facade reads it (bundle-validator.ts
// verifyPrescriptionBundle; translation getExtensionForUrl: TooFewValuesError).
func (c *orderCheck) checkPrescriptionType() *Error {
	if e := findExtension(c.items[0].mr.Extension, ExtPrescriptionType); e != nil && e.ValueCoding != nil && e.ValueCoding.Code != "" {
		return nil
	}
	return tooFewValues("MedicationRequest.extension", "url == '"+ExtPrescriptionType+"'")
}

// checkSiteTypeExtension checks that the first item has the performer site
// type extension, as EPS reads it (nhs-eps-api
// translation/request/prescription.ts convertDispensingSitePreference,
// getExtensionForUrl: TooFewValuesError, TooManyValuesError; no extension
// array at all: onlyElement's InvalidValueError "Required field missing.").
func (c *orderCheck) checkSiteTypeExtension() *Error {
	const expr = "MedicationRequest.dispenseRequest.extension"
	if !c.items[0].mr.DispenseRequest.HasExtension {
		return processingError(expr, "Required field missing.")
	}
	return onlyExtension(c.items[0].mr.DispenseRequest.Extension, ExtPerformerSiteType, expr)
}

// checkStatus: every item active (bundle-validator.ts verifyPrescriptionBundle,
// createMedicationRequestIncorrectValueIssue).
func (c *orderCheck) checkStatus() *Error {
	for _, it := range c.items {
		if it.mr.Status != "active" {
			return incorrectItemValue("status", "active")
		}
	}
	return nil
}

// checkIntent refuses what the facade refuses (bundle-validator.ts
// verifyCommonBundle validateMedicationRequests isPlanOrReflex: plan and
// reflex-order, as the NHS example 4-Process-Response-Send-400_invalid_intent
// answers), and only that: neither the facade nor Spine reads a
// prescription-order's intent otherwise, so any other code, or none, is
// accepted.
func (c *orderCheck) checkIntent() *Error {
	for _, it := range c.items {
		if in := it.mr.Intent; in == "plan" || in == "reflex-order" {
			return incorrectItemValue("intent", "order, original-order or instance-order")
		}
	}
	return nil
}

// checkMedicationFields refuses an item with both medicationCodeableConcept
// and medicationReference (bundle-validator.ts validateMedicationRequests,
// createMedicationFieldIssue).
func (c *orderCheck) checkMedicationFields() *Error {
	for _, it := range c.items {
		if it.mr.HasMedicationConcept && it.mr.MedicationReference != nil {
			const d = "MedicationRequest cannot contain both medicationReference and medicationCodeableConcept fields."
			return &Error{Kind: KindInvalid, IssueType: "structure", Code: CodeConflictingValues,
				Display: "Conflicting values have been specified in different fields", Diagnostics: d,
				Expression: []string{entryPath(it.k, "medication")}}
		}
	}
	return nil
}

// displayTherapyMix is the NHS EPS API's words for a forbidden mix
// (2-Process-Response-Send-400_Invalid_Course_of_Therapy_mixed).
const displayTherapyMix = "Course of therapy type must either match for all MedicationRequests or be a mixture of 'acute' and 'continuous'."

// checkTherapy reads the course of therapy as EPS does (nhs-eps-api
// translation/request/course-of-therapy-type.ts getCourseOfTherapyTypeCode):
// the codes of every coding of every item, whatever their system, as a set.
// One code is the prescription's; exactly acute and continuous make it
// acute; anything else (no code at all, or another mix) is INVALID_VALUE.
// The one code must then be a course of therapy EPS translates
// (prescription.ts convertCourseOfTherapyTypeCode).
func (c *orderCheck) checkTherapy() *Error {
	var codes []string
	for _, it := range c.items {
		for _, cd := range it.mr.CourseOfTherapyType.Coding {
			if code := cd.Code; !slices.Contains(codes, code) {
				codes = append(codes, code)
			}
		}
	}
	switch {
	case len(codes) == 1:
		c.o.TherapyType = codes[0]
	case len(codes) == 2 && slices.Contains(codes, TherapyAcute) && slices.Contains(codes, TherapyContinuous):
		c.o.TherapyType = TherapyAcute
	default:
		return processingError("MedicationRequest.courseOfTherapyType.coding", displayTherapyMix)
	}
	switch code := c.o.TherapyType; code {
	case TherapyAcute, TherapyContinuous, TherapyRepeatDispensing:
		return nil
	case "":
		return processingError("MedicationRequest.courseOfTherapyType.coding.code", "Unhandled course of therapy type code 'undefined'.")
	default:
		return processingError("MedicationRequest.courseOfTherapyType.coding.code", "Unhandled course of therapy type code '"+code+"'.")
	}
}

// checkItemIDs checks the line item ids and the medication codes, and fills
// c.o.Items.
func (c *orderCheck) checkItemIDs() *Error {
	c.o.Items = make([]OrderItem, 0, len(c.items))
	for _, it := range c.items {
		// line-item.ts convertMedicationRequestToLineItem
		// (getIdentifierValueForSystem); Spine create.py validate_line_item.
		j, err := identifierForSystem(it.mr.Identifier, SystemLineItemID, "MedicationRequest.identifier")
		if err != nil {
			return err
		}
		id := it.mr.Identifier[j].Value
		if !ValidUUID(id) {
			return spineError(entryPath(it.k, fmt.Sprintf("identifier[%d].value", j)), id+" is not a valid GUID format")
		}
		for _, prev := range c.o.Items {
			// isDeepStrictEqual: compared as sent, case and all.
			if prev.ID == id {
				// bundle-validator.ts medicationRequestDuplicateIdentifierIssue
				return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
					Diagnostics: "Expected all MedicationRequests to have a different value for identifier.",
					Expression:  []string{itemsPath + ".identifier"}}
			}
		}
		med, err := c.medicationCoding(&it)
		if err != nil {
			return err
		}
		item := OrderItem{ID: id, MedicationCode: med.Code, MedicationDisplay: med.Display,
			Quantity: it.mr.DispenseRequest.Quantity.Value, QuantityUnit: it.mr.DispenseRequest.Quantity.Unit, Dosage: it.mr.Dosage}
		c.o.Items = append(c.o.Items, item)
	}
	return nil
}

// medicationCoding returns the item's dm+d coding as EPS reads it
// (nhs-eps-api translation/common/index.ts getMedicationCoding): the one
// coding whose system is SNOMED CT, wherever it stands, of
// medicationCodeableConcept or else of the code of the Medication that
// medicationReference names; none or several: TooFewValuesError or
// TooManyValuesError.
func (c *orderCheck) medicationCoding(it *orderItem) (Coding, *Error) {
	codings, expr := it.mr.MedicationCodeableConcept.Coding, "MedicationRequest.medicationCodeableConcept.coding"
	medK := -1
	switch ref := it.mr.MedicationReference; {
	case it.mr.HasMedicationConcept:
	case ref != nil:
		p := entryPath(it.k, "medicationReference.reference")
		if ref.Reference == "" {
			return Coding{}, missing(p, "%s is missing: it must reference the Medication entry", p)
		}
		k, err := c.resolveRef(ref.Reference, p, "Medication")
		if err != nil {
			return Coding{}, err
		}
		var code Concept
		if err := readEntry(c.m, k, func(r *reader) { r.medicationCode(&code) }); err != nil {
			return Coding{}, err
		}
		codings, expr, medK = code.Coding, "Medication.code.coding", k
	default:
		p := entryPath(it.k, "medicationCodeableConcept")
		return Coding{}, missing(p, "%s is missing: every line item names its medication (medicationCodeableConcept or medicationReference)", p)
	}
	found := -1
	for i, cd := range codings {
		if cd.System != SystemSNOMED {
			continue
		}
		if found >= 0 {
			return Coding{}, tooManyValues(expr, "system == '"+SystemSNOMED+"'")
		}
		found = i
	}
	if found < 0 {
		return Coding{}, tooFewValues(expr, "system == '"+SystemSNOMED+"'")
	}
	if codings[found].Code == "" {
		p := entryPath(it.k, fmt.Sprintf("medicationCodeableConcept.coding[%d].code", found))
		if !it.mr.HasMedicationConcept {
			p = entryPath(medK, fmt.Sprintf("code.coding[%d].code", found))
		}
		return Coding{}, missing(p, "%s is missing: every line item names its medication by a dm+d (SNOMED CT) code", p)
	}
	return codings[found], nil
}

// checkDosage: every item has a dosageInstruction, and when it has several
// each has a sequence (bundle-validator.ts verifyPrescriptionBundle:
// missingRequiredField, createMissingDosageSequenceInstructions).
func (c *orderCheck) checkDosage() *Error {
	for _, it := range c.items {
		switch n := it.mr.Dosages; {
		case n <= 0:
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeMissingValue,
				Diagnostics: "Required field dosageInstructions is missing.",
				Expression:  []string{entryPath(it.k, "dosageInstruction")}}
		case n > 1 && it.mr.DosagesWithoutSequence > 0:
			const d = "The request contains multiple dosage instruction lines but no corresponding dosage sequence number."
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeMissingValue, Display: d, Diagnostics: d,
				Expression: []string{entryPath(it.k, "dosageInstruction.sequence")}}
		}
	}
	return nil
}

// checkPrescriptionID reads the prescription IDs as EPS does (nhs-eps-api
// translation/request/prescription.ts convertPrescriptionIds: the first
// item's groupIdentifier.value, whatever its system, and its
// Extension-DM-PrescriptionId, by getExtensionForUrl), and checks the short
// form as Spine does (eps-spine-shared validation/common.py
// check_prescription_id: format, then check character). Both are the same on
// every item (checkSameOnEveryItem compared the groupIdentifiers).
func (c *orderCheck) checkPrescriptionID() *Error {
	first := &c.items[0]
	gi := &first.mr.GroupIdentifier
	if findExtension(gi.Extension, ExtPrescriptionLongID) == nil {
		return tooFewValues("MedicationRequest.groupIdentifier.extension", "url == '"+ExtPrescriptionLongID+"'")
	}
	expr := entryPath(first.k, "groupIdentifier.value")
	switch {
	case !ShortIDWellFormed(gi.Value):
		return spineError(expr, "prescriptionID has invalid format")
	case !ValidShortID(gi.Value):
		return checksumError(expr, gi.Value)
	}
	c.o.PrescriptionID = gi.Value

	const longPath = "groupIdentifier.extension('" + ExtPrescriptionLongID + "').valueIdentifier.value"
	for _, it := range c.items {
		if err := requireUUID(longID(&it.mr), inEntry(it.k, longPath)); err != nil {
			return err
		}
	}
	c.o.LongID = longID(&first.mr)
	return nil
}

// resolveRef resolves ref as EPS does (nhs-eps-api translation/common/index.ts
// resolveReference, getResourceForFullUrl): the one entry whose fullUrl is
// ref, whatever the form of ref (a relative "Type/id" resolves only to an
// entry with that very fullUrl); none is TOO_FEW_VALUES_SUBMITTED at
// Bundle.entry. The entry must be a want (expr names the reference).
func (c *orderCheck) resolveRef(ref, expr, want string) (int, *Error) {
	k, ok := c.refs.fullURL[ref]
	switch {
	case !ok:
		return -1, tooFewValues("Bundle.entry", "fullUrl == '"+ref+"'")
	case c.m.Entries[k].ResourceType != want:
		return -1, inconsistent(expr, "%s must reference a %s, it references a %s", expr, want, quote(c.m.Entries[k].ResourceType))
	}
	return k, nil
}

// checkPatient checks the Patient as EPS reads it: the one Patient of the
// Bundle (nhs-eps-api translation/common/getResourcesOfType.ts getPatient,
// not the items' subject), its NHS number (translation/request/patient.ts
// convertPatient getIdentifierValueForSystem; Spine validation/common.py
// check_nhs_number), its birth date in date form (patient.ts
// convertIsoDateStringToHl7V3Date) and not in the future (Spine
// validation/create.py check_birth_date).
func (c *orderCheck) checkPatient() *Error {
	p := -1
	for k, e := range c.m.Entries {
		if e.ResourceType != "Patient" {
			continue
		}
		if p >= 0 {
			return tooManyValues("Bundle.entry", "resource.resourceType == 'Patient'")
		}
		p = k
	}
	if p < 0 {
		return tooFewValues("Bundle.entry", "resource.resourceType == 'Patient'")
	}
	if err := readEntry(c.m, p, func(r *reader) { r.patient(&c.patient) }); err != nil {
		return err
	}
	c.patientK = p
	j, err := identifierForSystem(c.patient.Identifier, SystemNHSNumber, "Patient.identifier")
	if err != nil {
		return err
	}
	nhs := c.patient.Identifier[j].Value
	bd := c.patient.BirthDate
	if !fhirDate.MatchString(bd) {
		return processingError("Patient.birthDate", "Incorrect format for date string '"+undefinedIfEmpty(bd)+"'.")
	}
	if !ValidNHSNumber(nhs) {
		return spineError(entryPath(p, fmt.Sprintf("identifier[%d].value", j)), "nhsNumber is not valid")
	}
	c.o.NHSNumber = nhs
	if writtenDate(bd) > c.now.Format("20060102") {
		return spineError(entryPath(p, "birthDate"), "birthTime is in the future")
	}
	return nil
}

// checkNominatedPerformer applies Spine's rules on the nominated performer
// (eps-spine-shared validation/common.py check_nominated_performer): a
// performer given with a site type has an ODS code of 1 to 8 letters, digits
// and '-' and a site type P1, P2 or P3; a performer given without a value
// is refused. The performer is dispenseRequest.performer.identifier.value
// (nhs-eps-api translation/request/prescription.ts convertPerformer).
func (c *orderCheck) checkNominatedPerformer() *Error {
	first := &c.items[0]
	c.o.Performer = first.mr.DispenseRequest.Performer.Identifier.Value
	expr := entryPath(first.k, "dispenseRequest.performer.identifier.value")
	switch {
	case c.o.Performer == "" && first.mr.DispenseRequest.PerformerRaw != nil:
		return spineError(expr, "nominatedPerformer is present but empty")
	case c.o.Performer == "" || c.o.SiteType == "":
		return nil
	case !ValidODSCode(c.o.Performer):
		return spineError(expr, "nominatedPerformer has invalid format")
	}
	switch c.o.SiteType {
	case "P1", "P2", "P3":
		return nil
	}
	return spineError(entryPath(first.k, "dispenseRequest.extension('"+ExtPerformerSiteType+"').valueCoding.code"),
		"nominatedPerformer has invalid type")
}

// checkODSIdentifier checks the value, at p, of an identifier in the ODS
// code system; identifiers of other systems are not ODS codes.
func checkODSIdentifier(id identifier, p fieldPath) *Error {
	if id.System != SystemODSCode {
		return nil
	}
	return requireODS(id.Value, p)
}

// SystemGMPNumber identifies a GP by a GMP number, which EPS refuses as the
// prescriber's professional code.
const SystemGMPNumber = "https://fhir.hl7.org.uk/Id/gmp-number"

// checkPractitionerRoles applies the facade's rules on every
// PractitionerRole (nhs-eps-api bundle-validator.ts verifyCommonBundle
// validatePractitionerRole): its practitioner a reference (for the
// responsible practitioner's role: a reference or an identifier, not both),
// its organization and each healthcareService a reference; a practitioner
// reference must resolve (resolveReference).
func (c *orderCheck) checkPractitionerRoles() *Error {
	var responsible []string
	for _, it := range c.items {
		if e := findExtension(it.mr.Extension, ExtResponsiblePractitioner); e != nil && e.ValueReference != nil {
			responsible = append(responsible, e.ValueReference.Reference)
		}
	}
	c.roles = map[int]practitionerRole{}
	for k, e := range c.m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var pr practitionerRole
		if err := readEntry(c.m, k, func(r *reader) { r.orderRole(&pr) }); err != nil {
			return err
		}
		c.roles[k] = pr
		isRef := pr.Practitioner.Reference != ""
		switch {
		case !pr.HasPractitioner:
		case !slices.Contains(responsible, e.FullURL) && !isRef:
			return notReference("practitionerRole.practitioner", entryPath(k, "practitioner"))
		case slices.Contains(responsible, e.FullURL) && isRef == isIdentifierReference(pr.Practitioner):
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: "Responsible practitioner must be either a reference to a Practitioner resource or an identifier reference.",
				Expression:  []string{entryPath(k, "practitioner")}}
		}
		if pr.Organization.Reference == "" {
			return notReference("practitionerRole.organization", entryPath(k, "organization"))
		}
		for i, hs := range pr.HealthcareService {
			if hs.Reference == "" {
				p := fmt.Sprintf("practitionerRole.healthcareService[%d]", i)
				return notReference(p, entryPath(k, fmt.Sprintf("healthcareService[%d]", i)))
			}
		}
		if isRef {
			if _, err := c.resolveRef(pr.Practitioner.Reference, entryPath(k, "practitioner.reference"), "Practitioner"); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRequester applies the facade's rules on the prescriber
// (nhs-eps-api bundle-validator.ts verifyPrescriptionBundle, and the
// translation of the author, translation/request/practitioner.ts
// convertAuthor, organization.ts): the requester resolves to a
// PractitionerRole; for primary care (prescription type 01xx) that role has
// no healthcareService and its Organization a partOf
// (checkPrimaryCarePrescriptionResources); its Practitioner has no
// gmp-number (createInvalidIdentifierIssue) and exactly one professional
// code (getAgentPersonPersonIdForAuthor); the represented organisation (the
// role's HealthcareService, else its Organization) and the licensing one
// (the Organization's partOf, else itself) have an ODS code and a name
// (convertCommonOrganizationDetails); Spine then checks both ODS codes'
// format (eps-spine-shared validation/common.py check_organisation_and_roles:
// agentOrganization; create.py check_hcpl_org: hcplOrgCode). It records the
// prescriber's organisation (the Organization's ODS code).
func (c *orderCheck) checkRequester() *Error {
	first := &c.items[0]
	expr := entryPath(first.k, "requester.reference")
	if first.mr.Requester.Reference == "" {
		return missing(expr, "%s is missing: the order must name its prescriber's PractitionerRole", expr)
	}
	role, err := c.resolveRef(first.mr.Requester.Reference, expr, "PractitionerRole")
	if err != nil {
		return err
	}
	c.role = role
	pr := c.roles[role]
	orgK, err := c.resolveRef(pr.Organization.Reference, entryPath(role, "organization.reference"), "Organization")
	if err != nil {
		return err
	}
	var org organization
	if err := readEntry(c.m, orgK, func(r *reader) { r.organization(&org) }); err != nil {
		return err
	}
	if strings.HasPrefix(c.o.PrescriptionType, "01") {
		if pr.HasHealthcareService {
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: "Unexpected field of practitionerRole.healthcareService.",
				Expression:  []string{entryPath(role, "healthcareService")}}
		}
		if !org.HasPartOf {
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeMissingValue,
				Diagnostics: "Required field organization.partOf is missing.",
				Expression:  []string{entryPath(orgK, "partOf")}}
		}
	}
	if err := c.checkPractitioner(pr, role); err != nil {
		return err
	}

	// The represented organisation and the licensing one.
	represented, repType := org, "Organization"
	if len(pr.HealthcareService) > 0 {
		hsK, err := c.resolveRef(pr.HealthcareService[0].Reference, entryPath(role, "healthcareService[0].reference"), "HealthcareService")
		if err != nil {
			return err
		}
		represented, repType = organization{}, "HealthcareService"
		if err := readEntry(c.m, hsK, func(r *reader) { r.organization(&represented) }); err != nil {
			return err
		}
	}
	agentOrg, err := costCentre(represented, repType)
	if err != nil {
		return err
	}
	licensing := org
	switch {
	case org.PartOf.Reference != "":
		k, err := c.resolveRef(org.PartOf.Reference, entryPath(orgK, "partOf.reference"), "Organization")
		if err != nil {
			return err
		}
		licensing = organization{}
		if err := readEntry(c.m, k, func(r *reader) { r.organization(&licensing) }); err != nil {
			return err
		}
	case org.HasPartOf:
		licensing = organization{Identifier: []identifier{org.PartOf.Identifier}, HasIdentifier: true, Name: org.PartOf.Display}
	}
	hcplOrg, err := costCentre(licensing, "Organization")
	if err != nil {
		return err
	}
	if j := findIdentifier(org.Identifier, SystemODSCode); j >= 0 {
		c.o.PrescriberOrg = org.Identifier[j].Value
	}
	if !ValidODSCode(agentOrg) {
		return spineError(repType+".identifier", "agentOrganization has invalid format")
	}
	if !ValidODSCode(hcplOrg) {
		return spineError("Organization.identifier", "hcplOrgCode has invalid format")
	}
	return nil
}

// costCentre is the facade's convertCommonOrganizationDetails
// (nhs-eps-api translation/request/organization.ts): the ODS code of an
// Organization or HealthcareService (getIdentifierValueForSystem), which
// must also have a name ("Name must be provided.", at its address, as the
// facade says).
func costCentre(o organization, typ string) (string, *Error) {
	ids := o.Identifier
	if !o.HasIdentifier {
		ids = nil
	} else if ids == nil {
		ids = []identifier{}
	}
	j, err := identifierForSystem(ids, SystemODSCode, typ+".identifier")
	if err != nil {
		return "", err
	}
	if o.Name == "" {
		return "", processingError(typ+".address", "Name must be provided.")
	}
	return ids[j].Value, nil
}

// Professional code systems of a prescriber (nhs-eps-api
// translation/request/practitioner.ts getAgentPersonPersonIdForAuthor).
var professionalCodeSystems = [...]string{
	"https://fhir.hl7.org.uk/Id/gmc-number",
	SystemGMPNumber,
	"https://fhir.hl7.org.uk/Id/nmc-number",
	"https://fhir.hl7.org.uk/Id/gphc-number",
	"https://fhir.hl7.org.uk/Id/hcpc-number",
	"https://fhir.hl7.org.uk/Id/professional-code",
}

// checkPractitioner checks the requester's Practitioner (a reference
// resolved by checkPractitionerRoles, or an identifier): no gmp-number
// (bundle-validator.ts verifyPrescriptionBundle createInvalidIdentifierIssue),
// then exactly one professional code (practitioner.ts
// getAgentPersonPersonIdForAuthor).
func (c *orderCheck) checkPractitioner(pr practitionerRole, role int) *Error {
	if !pr.HasPractitioner {
		return nil
	}
	ids, where, err := c.practitionerIDs(pr, role)
	if err != nil {
		return err
	}
	if j := findIdentifier(ids, SystemGMPNumber); j >= 0 && ids[j].Value != "" {
		return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
			Diagnostics: "Bundle resource Practitioner.identifier expected exactly one professional code from GMC|NMC|GPhC|HCPC|professional-code.",
			Expression:  []string{where}}
	}
	return professionalCode(ids)
}

// practitionerIDs are the identifiers of the Practitioner of the role in
// entry role, as the facade resolves it (translation/common/index.ts
// resolvePractitioner: the referenced entry, or the identifier given), and
// where they are.
func (c *orderCheck) practitionerIDs(pr practitionerRole, role int) ([]identifier, string, *Error) {
	ref := pr.Practitioner.Reference
	if ref == "" {
		return []identifier{pr.Practitioner.Identifier}, entryPath(role, "practitioner.identifier"), nil
	}
	k, err := c.resolveRef(ref, entryPath(role, "practitioner.reference"), "Practitioner")
	if err != nil {
		return nil, "", err
	}
	ids, err := practitionerIdentifiers(c.m, k)
	if err != nil {
		return nil, "", err
	}
	return ids, entryPath(k, "identifier"), nil
}

// professionalCode: exactly one professional code among ids, each system
// at most once (practitioner.ts getAgentPersonPersonIdForAuthor,
// getIdentifierValueOrNullForSystem).
func professionalCode(ids []identifier) *Error {
	var codes []string
	for _, system := range professionalCodeSystems {
		j := -1
		for i, id := range ids {
			if id.System != system {
				continue
			}
			if j >= 0 {
				d := "Too many values submitted. Expected at most 1 element where system == '" + system + "'."
				return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeTooManyValues, Display: d, Diagnostics: d,
					Expression: []string{"Practitioner.identifier"}}
			}
			j = i
		}
		if j >= 0 && ids[j].Value != "" {
			codes = append(codes, ids[j].Value)
		}
	}
	if len(codes) == 1 {
		return nil
	}
	d := "Expected exactly one professional code. One of GMC|GMP|NMC|GPhC|HCPC|unknown. "
	if len(codes) > 0 {
		d += "But got: " + strings.Join(codes, ", ")
	}
	code := CodeTooFewValues
	if len(codes) > 1 {
		code = CodeTooManyValues
	}
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: code, Display: d, Diagnostics: d, Expression: []string{"Practitioner.identifier"}}
}

// Identifier systems that name a responsible party without a professional
// code (practitioner.ts getAgentPersonPersonIdForResponsibleParty).
const (
	systemSpuriousCode = "https://fhir.hl7.org.uk/Id/nhsbsa-spurious-code"
	systemDINNumber    = "https://fhir.hl7.org.uk/Id/din-number"
)

// checkResponsibleParty resolves the responsible practitioner as EPS
// translates it (nhs-eps-api translation/request/practitioner.ts
// convertResponsibleParty: the first item's
// Extension-DM-ResponsiblePractitioner valueReference, else the requester;
// then convertPractitionerRole: its organization and first
// healthcareService), and names its practitioner as EPS requires
// (getAgentPersonPersonIdForResponsibleParty: the role's spurious code, else
// the practitioner's DIN, else exactly one professional code).
func (c *orderCheck) checkResponsibleParty() *Error {
	first := &c.items[0]
	e := findExtension(first.mr.Extension, ExtResponsiblePractitioner)
	if e == nil || e.ValueReference == nil {
		return nil
	}
	role, err := c.resolveRef(e.ValueReference.Reference,
		entryPath(first.k, "extension('"+ExtResponsiblePractitioner+"').valueReference.reference"), "PractitionerRole")
	if err != nil {
		return err
	}
	pr := c.roles[role]
	if _, err := c.resolveRef(pr.Organization.Reference, entryPath(role, "organization.reference"), "Organization"); err != nil {
		return err
	}
	if len(pr.HealthcareService) > 0 {
		if _, err := c.resolveRef(pr.HealthcareService[0].Reference, entryPath(role, "healthcareService[0].reference"), "HealthcareService"); err != nil {
			return err
		}
	}
	if !pr.HasPractitioner {
		return nil
	}
	if j := findIdentifier(pr.Identifier, systemSpuriousCode); j >= 0 && pr.Identifier[j].Value != "" {
		return nil
	}
	ids, _, err := c.practitionerIDs(pr, role)
	if err != nil {
		return err
	}
	if j := findIdentifier(ids, systemDINNumber); j >= 0 && ids[j].Value != "" {
		return nil
	}
	return professionalCode(ids)
}

// checkCommunicationRequests resolves each CommunicationRequest's
// payload.contentReference, as EPS does to read the List it names
// (nhs-eps-api translation/request/prescription.ts extractMedicationListText).
func (c *orderCheck) checkCommunicationRequests() *Error {
	for k, e := range c.m.Entries {
		if e.ResourceType != "CommunicationRequest" {
			continue
		}
		var refs []reference
		if err := readEntry(c.m, k, func(r *reader) {
			r.object(func(key []byte) {
				if string(key) != "payload" {
					return
				}
				r.array(func(int) {
					r.object(func(key []byte) {
						if string(key) == "contentReference" {
							var ref reference
							r.reference(&ref)
							refs = append(refs, ref)
						}
					})
				})
			})
		}); err != nil {
			return err
		}
		for _, ref := range refs {
			if _, ok := c.refs.fullURL[ref.Reference]; !ok {
				return tooFewValues("Bundle.entry", "fullUrl == '"+ref.Reference+"'")
			}
		}
	}
	return nil
}

// checkTelecoms: every telecom of an Organization, Practitioner or
// PractitionerRole entry has a value and a use (bundle-validator.ts
// verifyCommonBundle validateTelecoms, getPathedTelecoms; missingRequiredField).
func (c *orderCheck) checkTelecoms() *Error {
	for k, e := range c.m.Entries {
		switch e.ResourceType {
		case "Organization", "Practitioner", "PractitionerRole":
		default:
			continue
		}
		var err *Error
		r := entryReader(e.Resource, k)
		r.object(func(key []byte) {
			if string(key) != "telecom" {
				return
			}
			r.array(func(i int) {
				var value, use bool
				r.object(func(key []byte) {
					switch string(key) {
					case "value":
						value = len(r.bytes()) > 0
					case "use":
						use = len(r.bytes()) > 0
					}
				})
				for _, f := range []struct {
					name string
					ok   bool
				}{{"value", value}, {"use", use}} {
					if !f.ok && err == nil {
						p := fmt.Sprintf("bundle.entry[%d].resource.telecom[%d].%s", k, i, f.name)
						err = &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeMissingValue,
							Diagnostics: "Required field " + p + " is missing.",
							Expression:  []string{"B" + p[1:]}}
					}
				}
			})
		})
		if r.err != nil {
			return r.err
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkSignature checks that the order is signed by its requester: a
// Provenance signature whose who.reference is the requester's reference, as
// EPS finds it (nhs-eps-api translation/request/practitioner.ts
// findRequesterSignature: at most one; other signatures do not count), and
// reads it as EPS does (setSignatureTimeAndText): its when a FHIR dateTime
// (Order.SignedAt), its data base64 of an XML document.
func (c *orderCheck) checkSignature() *Error {
	requester := c.items[0].mr.Requester.Reference
	n := 0
	var when, data string
	for _, e := range c.m.Entries {
		if e.ResourceType != "Provenance" {
			continue
		}
		r := newReader(e.Resource, "")
		r.object(func(key []byte) {
			if string(key) != "signature" {
				return
			}
			r.array(func(int) {
				var who reference
				var w, d string
				r.object(func(key []byte) {
					switch string(key) {
					case "who":
						r.reference(&who)
					case "when":
						w = r.str()
					case "data":
						d = r.str()
					}
				})
				if who.Reference == requester {
					n++
					when, data = w, d
				}
			})
		})
	}
	switch {
	case n > 1:
		d := "Too many values submitted. Expected at most 1 element where who.reference == '" + requester + "'."
		return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeTooManyValues, Display: d, Diagnostics: d,
			Expression: []string{"Provenance.signature"}}
	case n == 0 && c.unsigned:
		return nil
	case n == 0:
		return &Error{Kind: KindInvalid, IssueType: "required", Code: CodeMissingDigitalSignature,
			Diagnostics: fmt.Sprintf("the prescription-order is not signed by its requester: no Provenance signature has who.reference %s", quote(requester)),
			Expression:  []string{"Bundle.entry.resource.ofType(Provenance).signature"}}
	}
	t, err := dateTimeAt(when, "Provenance.signature.when")
	if err != nil {
		return err
	}
	if !signatureXML(data) {
		return processingError("Provenance.signature.data", "Invalid signature format.")
	}
	c.o.SignedAt = t
	return nil
}

// signatureXML reports whether data is, as the facade reads it (Node's
// Buffer.from(data, "base64"), which skips characters outside the base64
// alphabet and stops at padding, then a strict XML parse), base64 of a
// well-formed XML document: one root element, no text outside it.
func signatureXML(data string) bool {
	clean := make([]byte, 0, len(data))
	for i := 0; i < len(data) && data[i] != '='; i++ {
		switch ch := data[i]; {
		case ch >= 'A' && ch <= 'Z', ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9', ch == '+', ch == '/':
			clean = append(clean, ch)
		case ch == '-':
			clean = append(clean, '+')
		case ch == '_':
			clean = append(clean, '/')
		}
	}
	if len(clean)%4 == 1 { // a lone last character carries no whole byte
		clean = clean[:len(clean)-1]
	}
	raw, err := base64.RawStdEncoding.DecodeString(string(clean))
	if err != nil {
		return false
	}
	return wellFormedXML(raw)
}

// wellFormedXML reports whether raw is a well-formed XML document as
// encoding/xml's Decoder.Token reads it (strict): one root element, every
// element closed by an end tag of the same name, no text outside the root.
// It reads raw tokens (RawToken) and matches the tags itself: Token
// matches them the same way, on the names as written (prefix and local
// name), but it also translates name spaces and copies every token into an
// interface value, which the check does not need and which cost a third of
// the parse's allocations. FuzzSignatureXML holds it to the Token-based
// check.
func wellFormedXML(raw []byte) bool {
	d := xml.NewDecoder(bytes.NewReader(raw))
	var open []xml.Name // the elements open, outermost first
	roots := 0
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			return roots == 1 && len(open) == 0
		}
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if len(open) == 0 {
				roots++
			}
			open = append(open, t.Name)
		case xml.EndElement:
			if len(open) == 0 || open[len(open)-1] != t.Name {
				return false
			}
			open = open[:len(open)-1]
		case xml.CharData:
			if len(open) == 0 && len(bytes.TrimSpace(t)) > 0 {
				return false
			}
		}
	}
}

// checkReviewDate: an authorisationExpiryDate in the first item's UK Core
// repeat information must be in the future (nhs-eps-api
// translation/request/prescription.ts extractReviewDate, isFutureDated; the
// facade names no FHIRPath: the broker names the one its
// convertPrescriptionPertinentInformation7 reads the date at).
func (c *orderCheck) checkReviewDate() *Error {
	e := findExtension(c.items[0].mr.Extension, ExtUKCoreRepeatInformation)
	if e == nil {
		return nil
	}
	d := findExtension(e.Extension, "authorisationExpiryDate")
	if d == nil {
		return nil
	}
	v := ""
	if d.ValueDateTime != nil {
		v = *d.ValueDateTime
	}
	if t, _, ok := parseFHIRDate(v); ok && c.now.Before(t) {
		return nil
	}
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
		Diagnostics: "authorisationExpiryDate is not in the future '" + undefinedIfEmpty(v) + "'.",
		Expression:  []string{"MedicationRequest.extension.extension.valueDateTime"}}
}

// readDates reads the dates of the order as EPS does. When the first item
// has a validityPeriod, its start is Spine's prescription time and must be a
// FHIR dateTime (nhs-eps-api translation/request/prescribe/
// parent-prescription.ts convertParentPrescription); EPS reads the end and
// the authoring date of no order but repeat dispensing (checkRepeatDispensing),
// so they are taken when they can be read (zero otherwise) and not refused.
func (c *orderCheck) readDates() *Error {
	first := &c.items[0]
	dr := &first.mr.DispenseRequest
	if dr.ValidityRaw != nil && string(dr.ValidityRaw) != "null" {
		t, err := dateTimeAt(dr.ValidityPeriod.Start, "MedicationRequest.dispenseRequest.validityPeriod.start")
		if err != nil {
			return err
		}
		c.o.ValidityStart = t
	}
	if _, end, ok := parseFHIRDate(dr.ValidityPeriod.End); ok {
		c.o.ValidityEnd = end
	}
	if t, _, ok := parseFHIRDate(first.mr.AuthoredOn); ok {
		c.o.AuthoredOn = t
	}
	return nil
}

// readSupply reads the number of repeats and the days of supply: the largest
// of the items'. EPS reads neither for a prescription that is not repeat
// dispensing (translation/request/prescription.ts: the days supply and the
// repeat number of repeat dispensing only), so nothing here refuses: a
// duration in another UCUM unit of time is converted to whole days where it
// can be (a week is 7 days), and otherwise not counted; checkRepeatDispensing
// applies EPS's rules to a repeat dispensing order.
func (c *orderCheck) readSupply() *Error {
	for _, it := range c.items {
		dr := &it.mr.DispenseRequest
		if n := dr.NumberOfRepeatsAllowed; n != nil && *n > 0 {
			c.o.RepeatsAllowed = max(c.o.RepeatsAllowed, *n)
		}
		if q := dr.ExpectedSupplyDuration; q != nil {
			c.o.SupplyDays = max(c.o.SupplyDays, supplyDays(q))
		}
	}
	return nil
}

// daysPerUnit are the UCUM units of time (code, or unit when no code is
// given) that make whole days.
var daysPerUnit = map[string]int{"d": 1, "day": 1, "days": 1, "wk": 7, "week": 7, "weeks": 7}

// supplyDays is a duration in whole days, 0 when it is not one.
func supplyDays(q *quantity) int {
	unit := q.Code
	if unit == "" {
		unit = q.Unit
	}
	per, ok := daysPerUnit[unit]
	if !ok || !q.HasValue || q.Value < 0 || q.Value != math.Trunc(q.Value) || q.Value*float64(per) > math.MaxInt32 {
		return 0
	}
	return int(q.Value) * per
}

// checkAmounts applies the quantity bounds to what checkRepeatDispensing
// does not bound: expectedSupplyDuration and numberOfRepeatsAllowed of an
// order that is not repeat dispensing (EPS reads neither; repeat
// dispensing answers Spine's own errors for them, which are kept).
func (c *orderCheck) checkAmounts() *Error {
	if c.o.TherapyType == TherapyRepeatDispensing {
		return nil
	}
	for _, it := range c.items {
		dr := &it.mr.DispenseRequest
		if dr.SupplyRaw != nil {
			sub := newReader(dr.SupplyRaw, inEntry(it.k, "dispenseRequest.expectedSupplyDuration").String())
			var q quantity
			sub.amount(&q)
			if sub.err != nil {
				return sub.err
			}
		}
		if raw := dr.RepeatsRaw; raw != nil {
			expr := inEntry(it.k, "dispenseRequest.numberOfRepeatsAllowed").String()
			lit := bytes.Trim(raw, `"`)
			if _, err := strconv.ParseFloat(string(lit), 64); err != nil && err.(*strconv.NumError).Err != strconv.ErrRange {
				continue // not a number at all: EPS does not read it (readSupply)
			}
			if why := amountIssue(lit); why != "" {
				return badValue(expr, "numberOfRepeatsAllowed %s", why)
			}
			if _, ok := parseRepeats(raw); !ok && len(lit) > 0 && (lit[0] >= '0' && lit[0] <= '9') {
				return badValue(expr, "numberOfRepeatsAllowed %s is not a whole number", lit)
			}
		}
	}
	return nil
}
