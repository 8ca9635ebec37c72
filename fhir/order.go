package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// maxItems is the number of line items Spine accepts in one prescription.
const maxItems = 4

// Order validates a prescription-order message as the EPS FHIR facade and
// Spine do at now (eRD validity and birth dates are checked against it), and
// returns the order it carries. The checks run in this order, so that a
// message with several faults fails for the first; each failure is a *Error
// of KindInvalid. Each rule follows the reference named at its function
// (nhs-eps-api: the facade's bundle-validator.ts and translation;
// eps-spine-shared: Spine's validation/create.py and common.py):
//
//	1 to 4 MedicationRequests
//	the same on every item: groupIdentifier, category, authoredOn, subject,
//	  requester, performer, validityPeriod, expectedSupplyDuration, performer
//	  site type, prescription type, responsible practitioner
//	the prescription type extension present
//	status active; intent not plan or reflex-order
//	not both medicationCodeableConcept and medicationReference
//	course of therapy; line item ids unique
//	exactly one SNOMED CT coding (in the item or its Medication)
//	dosageInstruction present, each with a sequence when several
//	the prescription IDs; the Patient, NHS number, birth date not in the future
//	ODS codes; a named performer's site type P1, P2 or P3
//	the requester's PractitionerRole: organization a reference; primary care
//	  (01xx): Organization.partOf and no healthcareService; no gmp-number
//	telecoms with value and use
//	the requester's signature (MISSING_DIGITAL_SIGNATURE)
//	dates; supply; repeat dispensing
func (m *Message) Order(now time.Time) (*Order, error) {
	o, err := m.order(now)
	if err != nil {
		err.Op = "validate prescription-order"
		return nil, err
	}
	return o, nil
}

func (m *Message) order(now time.Time) (*Order, *Error) {
	if m.Event != EventPrescriptionOrder {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order message holds an order", quote(m.Event))
	}
	refs, err := newRefIndex(m.Entries)
	if err != nil {
		return nil, err
	}
	c := &orderCheck{m: m, refs: refs, now: now.UTC(), role: -1,
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
	(*orderCheck).checkStatus,
	(*orderCheck).checkIntent,
	(*orderCheck).checkMedicationFields,
	(*orderCheck).checkTherapy,
	(*orderCheck).checkItemIDs,
	(*orderCheck).checkDosage,
	(*orderCheck).checkPrescriptionID,
	(*orderCheck).checkPatient,
	(*orderCheck).checkODSCodes,
	(*orderCheck).checkNominatedPerformer,
	(*orderCheck).checkRequester,
	(*orderCheck).checkTelecoms,
	(*orderCheck).checkSignature,
	(*orderCheck).readDates,
	(*orderCheck).readSupply,
	(*orderCheck).checkRepeatDispensing,
}

// Repeat dispensing limits.
const (
	// MaxRepeatIssues is Spine's MAX_PRESCRIPTIONREPEATS: the issues of one
	// repeat dispensing prescription (eps-spine-shared validation/constants.py).
	MaxRepeatIssues = 99
	// MaxSupplyDays is Spine's MAX_DAYSSUPPLY: the days supply of one issue.
	MaxSupplyDays = 366
	// DefaultSupplyDays is Spine's DEFAULT_DAYSSUPPLY, when none is stated.
	DefaultSupplyDays = 28
	// MaxFutureSupplyMonths is Spine's MAX_FUTURESUPPLYMONTHS: how far
	// ahead a repeat dispensing validity period may end.
	MaxFutureSupplyMonths = 12
)

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
		o.SupplyDays = DefaultSupplyDays
	case q.Value != math.Trunc(q.Value):
		return spineError(supply, "daysSupply is not an integer")
	case q.Value < 0:
		return spineError(supply, "daysSupply must be a non-zero integer")
	case q.Value > MaxSupplyDays:
		return spineError(supply, fmt.Sprintf("daysSupply cannot exceed %d", MaxSupplyDays))
	case q.Value == 0:
		o.SupplyDays = DefaultSupplyDays
	default:
		o.SupplyDays = int(q.Value)
	}
	vp := dr.ValidityPeriod
	window := inEntry(first.k, "dispenseRequest.validityPeriod")
	if vp.Start == "" || vp.End == "" {
		return spineError(window.String(), "daysSupply effective time not provided but prescription treatment type is repeat")
	}
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
	patientK int      // entry index of the Patient
	orgs     []orgODS // each Organization entry's ODS code
	role     int      // entry index of the requester's PractitionerRole
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

func (r *reader) medicationRequest(mr *medicationRequest) {
	mr.Dosages = -1
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			r.extensions(&mr.Extension)
		case "identifier":
			list(r, &mr.Identifier, r.identifier)
		case "status":
			mr.Status = r.str()
		case "intent":
			mr.Intent = r.str()
		case "category":
			mr.CategoryRaw = r.raw()
		case "medicationCodeableConcept":
			mr.HasMedicationConcept = r.peek() != 'n'
			r.concept(&mr.MedicationCodeableConcept)
		case "medicationReference":
			if r.peek() == 'n' {
				r.skip()
				return
			}
			mr.MedicationReference = new(reference)
			r.reference(mr.MedicationReference)
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
			r.extensions(&d.Extension)
		case "validityPeriod":
			d.ValidityRaw = r.captured(func() { r.period(&d.ValidityPeriod) })
		case "quantity":
			r.quantity(&d.Quantity)
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
			list(r, &p.Identifier, r.identifier)
		case "generalPractitioner":
			list(r, &p.GeneralPractitioner, r.reference)
		case "birthDate":
			p.BirthDate = r.str()
		}
	})
}

type organization struct {
	Identifier []identifier
	PartOf     reference
	HasPartOf  bool
}

func (r *reader) organization(o *organization) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			list(r, &o.Identifier, r.identifier)
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

// roleEntry is what the broker reads of a PractitionerRole entry.
type roleEntry struct {
	Practitioner         reference
	Organization         reference
	HasHealthcareService bool
}

func (r *reader) roleEntry(p *roleEntry) {
	r.object(func(key []byte) {
		switch string(key) {
		case "practitioner":
			r.reference(&p.Practitioner)
		case "organization":
			r.reference(&p.Organization)
		case "healthcareService":
			p.HasHealthcareService = r.peek() != 'n'
		}
	})
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
		return Invalid(CodeInvalidValue, "invalid", itemsPath,
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

// Extensions of a MedicationRequest the order rules name.
const (
	// ExtControlledDrug is the controlled drug extension: its part
	// "schedule" codes CD1..CD5.
	ExtControlledDrug          = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ControlledDrug"
	ExtResponsiblePractitioner = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-ResponsiblePractitioner"
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

func longID(r *medicationRequest) string {
	return extensionIdentifier(r.GroupIdentifier.Extension, ExtPrescriptionLongID)
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

// incorrectItemValue is the facade's createMedicationRequestIncorrectValueIssue:
// INVALID_VALUE, issue type value.
func incorrectItemValue(field, want string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
		Diagnostics: "MedicationRequest." + field + " must be " + want + ".",
		Expression:  []string{itemsPath + "." + field}}
}

// medicationRequestIntents are the codes of FHIR R4's required value set
// for MedicationRequest.intent.
var medicationRequestIntents = []string{"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}

// checkIntent refuses what the facade refuses (bundle-validator.ts
// verifyCommonBundle validateMedicationRequests: plan and reflex-order, as
// the NHS example 4-Process-Response-Send-400_invalid_intent answers), and
// an intent that is absent or not a FHIR R4 intent code (a required
// binding).
func (c *orderCheck) checkIntent() *Error {
	for _, it := range c.items {
		switch in := it.mr.Intent; {
		case in == "plan" || in == "reflex-order":
			return incorrectItemValue("intent", "order, original-order or instance-order")
		case in == "":
			expr := entryPath(it.k, "intent")
			return missing(expr, "%s is missing", expr)
		case !slices.Contains(medicationRequestIntents, in):
			expr := entryPath(it.k, "intent")
			return badValue(expr, "%s %s is not a MedicationRequest intent code", expr, quote(in))
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

// checkItemIDs checks the line item ids and the medication codes, and fills
// c.o.Items.
func (c *orderCheck) checkItemIDs() *Error {
	c.o.Items = make([]OrderItem, 0, len(c.items))
	for _, it := range c.items {
		j := findIdentifier(it.mr.Identifier, SystemLineItemID)
		if j < 0 {
			expr := entryPath(it.k, "identifier")
			return missing(expr, "%s has no identifier with system %s (the line item id)", expr, SystemLineItemID)
		}
		id := it.mr.Identifier[j].Value
		if err := requireUUID(id, inEntry(it.k, "identifier").at(j, ".value")); err != nil {
			return err
		}
		for _, prev := range c.o.Items {
			if strings.EqualFold(prev.ID, id) {
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
		k, err := c.resolveRef(ref.Reference, it.k, p, "Medication")
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
	for _, it := range c.items[1:] {
		if got := longID(&it.mr); !strings.EqualFold(got, longID(&first.mr)) {
			expr := entryPath(it.k, longPath)
			return inconsistent(expr, "%s %s is not the long-form prescription ID of the first item, %s", expr, quote(got), quote(longID(&first.mr)))
		}
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

// checkPatient checks the Patient that the items name (the same on every
// item, as checked before): a valid NHS number (Spine check_nhs_number) and
// a birth date not in the future (Spine validation/create.py
// check_birth_date).
func (c *orderCheck) checkPatient() *Error {
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
	if bd := c.patient.BirthDate; bd != "" {
		if _, _, err := dateField(bd, inEntry(p, "birthDate")); err != nil {
			return err
		}
		if writtenDate(bd) > c.now.Format("20060102") {
			return spineError(entryPath(p, "birthDate"), "birthTime is in the future")
		}
	}
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

// checkNominatedPerformer: a named performer with a site type must be a
// nominated one, P1, P2 or P3 (eps-spine-shared validation/common.py
// check_nominated_performer).
func (c *orderCheck) checkNominatedPerformer() *Error {
	if c.o.Performer == "" || c.o.SiteType == "" {
		return nil
	}
	switch c.o.SiteType {
	case "P1", "P2", "P3":
		return nil
	}
	return spineError(entryPath(c.items[0].k, "dispenseRequest.extension('"+ExtPerformerSiteType+"').valueCoding.code"),
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

// notReference is the facade's fieldIsNotReferenceButShouldBe
// (bundle-validator.ts): issue type invalid, no EPS code there
// (INVALID_VALUE here).
func notReference(field, expr string) *Error {
	return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
		Diagnostics: field + " populated incorrectly. Please populate with Reference to resource within Bundle.",
		Expression:  []string{expr}}
}

// checkRequester applies the facade's rules on the prescriber
// (nhs-eps-api bundle-validator.ts): the requester is a PractitionerRole of
// the Bundle; every PractitionerRole's organization is a reference
// (verifyCommonBundle validatePractitionerRole); for primary care
// (prescription type 01xx) the requester's role has no healthcareService and
// its Organization a partOf (verifyPrescriptionBundle
// checkPrimaryCarePrescriptionResources); the requester's Practitioner has
// no gmp-number identifier (createInvalidIdentifierIssue). It records the
// prescriber's organisation.
func (c *orderCheck) checkRequester() *Error {
	first := &c.items[0]
	expr := entryPath(first.k, "requester.reference")
	if first.mr.Requester.Reference == "" {
		return missing(expr, "%s is missing: the order must name its prescriber's PractitionerRole", expr)
	}
	role, err := c.resolveRef(first.mr.Requester.Reference, first.k, expr, "PractitionerRole")
	if err != nil {
		return err
	}
	c.role = role
	var roles = map[int]roleEntry{}
	for k, e := range c.m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var pr roleEntry
		if err := readEntry(c.m, k, func(r *reader) { r.roleEntry(&pr) }); err != nil {
			return err
		}
		if pr.Organization.Reference == "" {
			return notReference("practitionerRole.organization", entryPath(k, "organization"))
		}
		roles[k] = pr
	}
	pr := roles[role]
	org, err := c.resolveRef(pr.Organization.Reference, role, entryPath(role, "organization.reference"), "Organization")
	if err != nil {
		return err
	}
	for _, o := range c.orgs {
		if o.k == org {
			c.o.PrescriberOrg = o.ods
		}
	}
	if strings.HasPrefix(c.o.PrescriptionType, "01") {
		if pr.HasHealthcareService {
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: "Unexpected field of practitionerRole.healthcareService.",
				Expression:  []string{entryPath(role, "healthcareService")}}
		}
		var o organization
		if err := readEntry(c.m, org, func(r *reader) { r.organization(&o) }); err != nil {
			return err
		}
		if !o.HasPartOf {
			return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeMissingValue,
				Diagnostics: "Required field organization.partOf is missing.",
				Expression:  []string{entryPath(org, "partOf")}}
		}
	}
	ids := []identifier{pr.Practitioner.Identifier}
	where := entryPath(role, "practitioner.identifier")
	if ref := pr.Practitioner.Reference; ref != "" {
		k, err := c.resolveRef(ref, role, entryPath(role, "practitioner.reference"), "Practitioner")
		if err != nil {
			return err
		}
		var p struct{ Identifier []identifier }
		if err := readEntry(c.m, k, func(r *reader) {
			r.object(func(key []byte) {
				if string(key) == "identifier" {
					list(r, &p.Identifier, r.identifier)
				}
			})
		}); err != nil {
			return err
		}
		ids, where = p.Identifier, entryPath(k, "identifier")
	}
	if j := findIdentifier(ids, SystemGMPNumber); j >= 0 && ids[j].Value != "" {
		return &Error{Kind: KindInvalid, IssueType: "value", Code: CodeInvalidValue,
			Diagnostics: "Bundle resource Practitioner.identifier expected exactly one professional code from GMC|NMC|GPhC|HCPC|professional-code.",
			Expression:  []string{where}}
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
// findRequesterSignature: at most one); other signatures do not count.
func (c *orderCheck) checkSignature() *Error {
	requester := c.items[0].mr.Requester.Reference
	n := 0
	signed := false
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
				var data bool
				r.object(func(key []byte) {
					switch string(key) {
					case "who":
						r.reference(&who)
					case "data":
						data = len(r.bytes()) > 0
					}
				})
				if who.Reference == requester {
					n++
					signed = signed || data
				}
			})
		})
	}
	switch {
	case n > 1:
		d := "Too many values submitted. Expected at most 1 element where who.reference == '" + requester + "'."
		return &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeTooManyValues, Display: d, Diagnostics: d,
			Expression: []string{"Provenance.signature"}}
	case signed:
		return nil
	}
	return &Error{Kind: KindInvalid, IssueType: "required", Code: CodeMissingDigitalSignature,
		Diagnostics: fmt.Sprintf("the prescription-order is not signed by its requester: no Provenance signature with data has who.reference %s", quote(requester)),
		Expression:  []string{"Bundle.entry.resource.ofType(Provenance).signature"}}
}

// readDates parses the validity period and the authoring date. EPS does not
// compare the period's ends for a prescription that is not repeat
// dispensing (Spine checks them for repeat dispensing only:
// checkRepeatDispensing).
func (c *orderCheck) readDates() *Error {
	first := &c.items[0]
	vp := first.mr.DispenseRequest.ValidityPeriod
	var err *Error
	if c.o.ValidityStart, _, err = dateField(vp.Start, inEntry(first.k, "dispenseRequest.validityPeriod.start")); err != nil {
		return err
	}
	if _, c.o.ValidityEnd, err = dateField(vp.End, inEntry(first.k, "dispenseRequest.validityPeriod.end")); err != nil {
		return err
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
