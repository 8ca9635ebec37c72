package fhir

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// This file holds the dispense-notification message
// (Message.DispenseNotification).

// Code systems, identifiers and extensions of the dispense notification.
const (
	ExtNonDispensingReason   = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason"
	SystemDispenseItemNumber = "https://fhir.nhs.uk/Id/prescription-dispense-item-number"
	whereMedicationDispense  = "Bundle.entry.resource.ofType(MedicationDispense)"
)

// Codes a dispense notification may state.
var (
	// DispensePrescriptionStatuses are the prescription statuses a dispense
	// notification may state: with dispenser - active, dispensed, not
	// dispensed.
	DispensePrescriptionStatuses = []string{"0003", "0006", "0007"}
)

// DispenseNotification is a $process-message dispense-notification.
type DispenseNotification struct {
	BundleID            string
	ReplacementOf       string // MessageHeader replacementOf extension: the notification it amends
	Sender              string // MessageHeader.sender ODS as resolved by DecodeMessage: recorded only, may be ""
	PrescriptionID      string // the MedicationDispenses' authorizingPrescription groupIdentifier (short form)
	NHSNumber           string // MedicationDispense.subject identifier (nhs-number)
	PrescriptionStatus  string // Extension-EPS-TaskBusinessStatus: 0003, 0006 or 0007
	Items               []DispensedItem
	NonDispensingReason string // Extension-DM-PrescriptionNonDispensingReason code, if present
	// Issue is the repeat dispensing issue dispensed (1 to
	// MaxRepeatIssues): the first contained MedicationRequest's basedOn
	// Extension-EPS-RepeatInformation, counted from 0, else a contained
	// MedicationRequest's UK Core numberOfPrescriptionsIssued; 0 when none
	// names one.
	Issue int
}

// DispensedItem is one MedicationDispense.
type DispensedItem struct {
	LineItemID        string // the prescription line item (MedicationRequest identifier prescription-order-item-number)
	Status            string // MedicationDispense.type (medicationdispense-type): DispensedItemStatuses
	MedicationCode    string
	MedicationDisplay string
	Quantity          float64
	QuantityUnit      string
	// NonDispensingReason is the statusReasonCodeableConcept code
	// (medicationdispense-status-reason), if present: the tracker shows it.
	NonDispensingReason string
}

// DispenseNotification validates a dispense-notification message (decoded by
// DecodeMessage) and returns what it states. First the checks of the EPS
// FHIR facade (validation/bundle-validator.ts verifyDispenseBundle, in the
// order it reports them: what it throws first, then what it collects), then
// what its translation (translation/request/dispense/dispense-notification.ts)
// and the broker need. In order (code, FHIR issue type):
//
//	event dispense-notification                   INVALID_VALUE value
//	at least one MedicationDispense               MISSING_VALUE required
//	every PractitionerRole entry (if any): a
//	  practitioner reference resolves by fullUrl,
//	  one sds-role-profile-id when it has
//	  identifiers (verifyCommonBundle)            TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the first MedicationDispense's performer
//	  names a contained PractitionerRole whose
//	  organization is a reference to the one
//	  entry of that fullUrl                       INVALID_VALUE invalid, TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	verifyCommonBundle's collected checks: no
//	  MedicationRequest entry of intent plan or
//	  reflex-order or with both medication
//	  forms; telecoms of Organization,
//	  Practitioner and PractitionerRole entries
//	  with value and use; PractitionerRole
//	  entries' references                         INVALID_VALUE, CONFLICTING_VALUES, MISSING_VALUE
//	whenHandedOver, subject.identifier.value and
//	  Extension-EPS-RepeatInformation the same
//	  on every MedicationDispense                 INVALID_VALUE value
//	performer the same on every one, and present  INVALID_VALUE value, MISSING_VALUE value
//	not both medicationCodeableConcept and
//	  medicationReference                         CONFLICTING_VALUES structure
//	the PractitionerRole's practitioner not a
//	  reference                                   INVALID_VALUE invalid
//	the Organization's reimbursement authority
//	  (Extension-ODS-OrganisationRelationships
//	  reimbursementAuthority) present             MISSING_VALUE invalid
//	whenHandedOver present                        MISSING_VALUE required
//	replacementOf (when present) a UUID           INVALID_VALUE value
//	prescriptionNonDispensingReason: when every
//	  MedicationDispense has one, the same        INVALID_VALUE invalid
//	the first one's Extension-EPS-
//	  TaskBusinessStatus 0003, 0006 or 0007       MISSING_VALUE, INVALID_VALUE value
//	the NHS number (the one Patient's, else the
//	  subject's, whatever its system) valid       TOO_MANY_VALUES_SUBMITTED, MISSING_VALUE, INVALID_VALUE value
//	authorizingPrescription: a contained
//	  MedicationRequest (or an identifier) with
//	  a line item id (UUID) and a short ID
//	  (check character), the same on every one    MISSING_VALUE, INVALID_VALUE, INVALID_CHECKSUM
//	type: one medicationdispense-type coding, a
//	  code 0001-0005, the same for
//	  MedicationDispenses of one line item        TOO_FEW/TOO_MANY_VALUES_SUBMITTED, INVALID_VALUE value / invalid
//	the medication dispensed and, for each line
//	  item, that requested: one SNOMED CT coding
//	  (a medicationReference resolved by
//	  fullUrl); the status reason, when it has
//	  codings, one of medicationdispense-status-
//	  reason; the first contained
//	  MedicationRequest's long-form ID extension  TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the issue (see repeat.go)                     MISSING_VALUE, INVALID_VALUE structure / value
//
// MessageHeader.sender is optional and recorded only, as are the
// organisations the message names: the acting dispenser is the caller's,
// and no ODS code's format is checked. Only the references EPS reads are
// resolved (the contained MedicationRequest and PractitionerRole by "#id",
// the role's Organization by fullUrl); others may name anything.
func (m *Message) DispenseNotification() (*DispenseNotification, error) {
	dn, err := m.dispenseNotification()
	if err != nil {
		err.Op = "validate dispense-notification"
		return nil, err
	}
	return dn, nil
}

type medicationDispense struct {
	Extension               []extension
	Contained               []rawResource
	Identifier              []identifier
	Subject                 reference
	AuthorizingPrescription []authorizingPrescription
	Type                    Concept
	Medication              Concept
	HasMedicationConcept    bool
	HasMedicationReference  bool
	MedicationReference     reference
	Quantity                quantity
	WhenHandedOver          []byte      // raw JSON, nil when absent
	Performers              [][]byte    // each performer's actor, raw JSON (nil when it has none)
	PerformerRefs           []reference // each performer's actor
	StatusReason            Concept
}

// authorizingPrescription is a MedicationDispense.authorizingPrescription:
// a reference to a contained MedicationRequest (the only form EPS reads).
type authorizingPrescription struct {
	Reference string
}

func (r *reader) medicationDispense(md *medicationDispense, k int) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &md.Extension, r.extension)
		case "contained":
			md.Contained = r.containedList(entryPath(k, "contained"))
		case "identifier":
			md.Identifier = presentList(r, md.Identifier)
			list(r, &md.Identifier, r.identifier)
		case "subject":
			r.reference(&md.Subject)
		case "authorizingPrescription":
			list(r, &md.AuthorizingPrescription, func(a *authorizingPrescription) {
				r.object(func(key []byte) {
					switch string(key) {
					case "reference":
						a.Reference = r.str()
					}
				})
			})
		case "type":
			r.concept(&md.Type)
		case "medicationCodeableConcept":
			md.HasMedicationConcept = r.peek() != 'n'
			r.concept(&md.Medication)
		case "medicationReference":
			md.HasMedicationReference = r.peek() != 'n'
			r.reference(&md.MedicationReference)
		case "quantity":
			r.amount(&md.Quantity)
		case "whenHandedOver":
			if r.peek() == 'n' {
				r.skip()
			} else {
				md.WhenHandedOver = r.raw()
			}
		case "performer":
			md.Performers, md.PerformerRefs = nil, nil
			r.array(func(int) {
				var actor []byte
				var ref reference
				r.object(func(key []byte) {
					if string(key) == "actor" && r.peek() == '{' {
						actor = r.raw()
						sub := newReader(actor, r.root)
						sub.reference(&ref)
						r.fail(sub.err)
					}
				})
				md.Performers = append(md.Performers, actor)
				md.PerformerRefs = append(md.PerformerRefs, ref)
			})
		case "statusReasonCodeableConcept":
			r.concept(&md.StatusReason)
		}
	})
}

// dispense is a decoded MedicationDispense and its entry index; request is
// the contained MedicationRequest its authorizingPrescription references
// (nil when it names the line item by identifier) and requestExt and
// requestBasedOn that one's extensions and those of its basedOn.
type dispense struct {
	k              int
	md             medicationDispense
	mr             dispensedRequest // the contained MedicationRequest
	request        *rawResource
	requestExt     []extension
	requestBasedOn [][]extension
}

// displayNonDispensingMix is the NHS EPS API's words when the
// MedicationDispenses disagree (3-Process-Response-Dispense-400_Invalid_Value).
const (
	displayNonDispensingMix = "Expected all MedicationDispenses to have the same value for MedicationDispense.extension:prescriptionNonDispensingReason"
	exprNonDispensingReason = "MedicationDispense.extension:prescriptionNonDispensingReason"
	// ExtOrganisationRelationships holds a dispensing Organization's
	// reimbursement authority.
	ExtOrganisationRelationships = "https://fhir.nhs.uk/StructureDefinition/Extension-ODS-OrganisationRelationships"
)

// dispenseInconsistent is the facade's
// createMedicationDispenseInconsistentValueIssue: values are the distinct
// values found (raw JSON; nil for absent).
func dispenseInconsistent(field string, values [][]byte) *Error {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = compactJSON(v)
	}
	return facadeIssue(CodeInvalidValue, "value", whereMedicationDispense+"."+field,
		"Expected all MedicationDispenses to have the same value for "+field+". Received ["+strings.Join(parts, ",")+"].")
}

// compactJSON is v without insignificant white space; "null" for nil.
func compactJSON(v []byte) string {
	if v == nil {
		return "null"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return string(v)
	}
	return b.String()
}

// extensionJSON is the extension of exts with the given url as JSON (nil
// when absent): its url, its parts' urls and values.
func extensionJSON(exts []extension, url string) []byte {
	k := findExtensionIndex(exts, url)
	if k < 0 {
		return nil
	}
	var b bytes.Buffer
	var write func(e *extension)
	write = func(e *extension) {
		u, _ := json.Marshal(e.URL)
		b.WriteString(`{"url":`)
		b.Write(u)
		if len(e.ValueInt.b) > 0 {
			b.WriteString(`,"` + e.ValueInt.key + `":`)
			b.Write(e.ValueInt.b)
		}
		if e.ValueCoding != nil {
			c, _ := json.Marshal(e.ValueCoding)
			b.WriteString(`,"valueCoding":`)
			b.Write(c)
		}
		if len(e.Extension) > 0 {
			b.WriteString(`,"extension":[`)
			for i := range e.Extension {
				if i > 0 {
					b.WriteByte(',')
				}
				write(&e.Extension[i])
			}
			b.WriteByte(']')
		}
		b.WriteByte('}')
	}
	write(&exts[k])
	return b.Bytes()
}

func (m *Message) dispenseNotification() (*DispenseNotification, *Error) {
	if m.Event != EventDispenseNotification {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a dispense-notification message holds a dispense notification", quote(m.Event))
	}
	dn := &DispenseNotification{BundleID: m.BundleID, Sender: m.Sender, ReplacementOf: m.ReplacementOf}
	var mds []dispense
	for k, e := range m.Entries {
		if e.ResourceType != "MedicationDispense" {
			continue
		}
		mds = append(mds, dispense{k: k})
		d := &mds[len(mds)-1]
		if err := readEntry(m, k, func(r *reader) { r.medicationDispense(&d.md, k) }); err != nil {
			return nil, err
		}
	}
	if len(mds) == 0 {
		return nil, missing(whereMedicationDispense, "a dispense-notification needs at least one MedicationDispense; the Bundle has none")
	}
	if err := m.facadeDispenseChecks(mds); err != nil {
		return nil, err
	}
	if len(mds[0].md.WhenHandedOver) == 0 {
		expr := entryPath(mds[0].k, "whenHandedOver")
		return nil, missing(expr, "%s is missing: the time the medication was handed over", expr)
	}
	if dn.ReplacementOf != "" {
		if err := requireUUID(dn.ReplacementOf, under("MessageHeader", "extension('"+ExtReplacementOf+"').valueIdentifier.value")); err != nil {
			return nil, err
		}
	}

	// The non-dispensing reason, as the facade's translation checks it:
	// only when every MedicationDispense gives one must they agree.
	all := true
	for _, d := range mds {
		if findExtensionIndex(d.md.Extension, ExtNonDispensingReason) < 0 {
			all = false
		}
	}
	for i, d := range mds {
		code := extCode(d.md.Extension, ExtNonDispensingReason)
		if i == 0 {
			dn.NonDispensingReason = code
		} else if all && code != dn.NonDispensingReason {
			return nil, &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: displayNonDispensingMix, Expression: []string{exprNonDispensingReason}}
		}
	}
	if !all {
		dn.NonDispensingReason = ""
	}

	// The prescription status: the first MedicationDispense's, as the
	// facade translates it (getPrescriptionStatus: getExtensionForUrl,
	// exactly one), then the statuses a dispenser may state.
	if err := onlyExtension(mds[0].md.Extension, ExtTaskBusinessStatus, "MedicationDispense.extension"); err != nil {
		return nil, err
	}
	f, err := extCodeIn(mds[0].md.Extension, ExtTaskBusinessStatus, inEntry(mds[0].k, "").String(), DispensePrescriptionStatuses, "prescription status")
	if err != nil {
		return nil, err
	}
	dn.PrescriptionStatus = f.v

	// The patient, as the translation reads it (dispense-notification.ts
	// getNhsNumber): the nhs-number identifier of the Patient when the
	// Bundle has exactly one (getPatientOrNull), else the first
	// MedicationDispense's subject.identifier.value, whatever its system;
	// then Spine's check of the NHS number.
	nhs, p := mds[0].md.Subject.Identifier.Value, inEntry(mds[0].k, "subject.identifier.value")
	if pk, err := onlyPatient(m); err == nil {
		var pt patient
		if err := readEntry(m, pk, func(r *reader) { r.patient(&pt) }); err != nil {
			return nil, err
		}
		js := inSystem(pt.Identifier, SystemNHSNumber)
		if len(js) > 1 {
			return nil, facadeIssue(CodeTooManyValues, "invalid", "Patient.identifier.value",
				"Too many values submitted. Expected at most 1 element where system == '"+SystemNHSNumber+"'.")
		}
		nhs, p = "", inEntry(pk, "identifier")
		if len(js) == 1 {
			nhs, p = pt.Identifier[js[0]].Value, inEntry(pk, "identifier").at(js[0], ".value")
		}
	}
	if err := requireNHSNumber(nhs, p); err != nil {
		return nil, err
	}
	dn.NHSNumber = nhs

	// The line items.
	dn.Items = make([]DispensedItem, 0, len(mds))
	for i := range mds {
		d := &mds[i]
		// getPrescriptionItemNumber (dispense-notification.ts): exactly one
		// identifier of the prescription-dispense-item-number system.
		if _, err := identifierForSystem(d.md.Identifier, SystemDispenseItemNumber, "MedicationDispense.identifier"); err != nil {
			return nil, err
		}
		lineItem, rxID, err := d.authorizing()
		if err != nil {
			return nil, err
		}
		if i == 0 {
			dn.PrescriptionID = rxID.v
		} else if rxID.v != dn.PrescriptionID {
			return nil, inconsistent(rxID.expr, "%s %s differs from %s in Bundle.entry[%d]: every MedicationDispense belongs to the same prescription",
				rxID.expr, quote(rxID.v), quote(dn.PrescriptionID), mds[0].k)
		}
		// getPrescriptionLineItemStatus: the one coding of
		// medicationdispense-type; then the statuses a dispenser may state.
		if err := onlyCodingOf(d.md.Type.Coding, SystemDispenseType, "MedicationDispense.type.coding"); err != nil {
			return nil, err
		}
		c, err := checkCoding(d.md.Type.Coding, entryPath(d.k, "type"), SystemDispenseType, DispensedItemStatuses, "dispensed item status")
		if err != nil {
			return nil, err
		}
		for j, prev := range dn.Items {
			if strings.EqualFold(prev.LineItemID, lineItem) && prev.Status != c.Code {
				expr := entryPath(d.k, "type.coding")
				return nil, inconsistent(expr, "%s %s contradicts %s in Bundle.entry[%d] for the same line item %s",
					expr, quote(c.Code), quote(prev.Status), mds[j].k, quote(lineItem))
			}
		}
		// mapMedicationDispenses: the medication dispensed, and that
		// requested for the first MedicationDispense of each line item
		// (getMedicationCoding); the non-dispensing reason
		// (getFhirStatusReasonCodeableConceptCode: when it has codings,
		// the one of medicationdispense-status-reason).
		med, err := m.dispensedMedication(d.md.Medication, d.md.HasMedicationConcept, d.md.MedicationReference)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(dn.Items, func(it DispensedItem) bool { return strings.EqualFold(it.LineItemID, lineItem) }) {
			var ref reference
			if d.mr.MedicationReference != nil {
				ref = *d.mr.MedicationReference
			}
			if _, err := m.dispensedMedication(d.mr.Medication, d.mr.HasMedicationConcept, ref); err != nil {
				return nil, err
			}
		}
		item := DispensedItem{LineItemID: lineItem, Status: c.Code, QuantityUnit: d.md.Quantity.Unit, Quantity: d.md.Quantity.Value,
			MedicationCode: med.Code, MedicationDisplay: med.Display}
		if cs := d.md.StatusReason.Coding; len(cs) > 0 {
			js := inSystem(cs, SystemDispenseStatusReason)
			switch {
			case len(js) == 0:
				return nil, tooFewValues("MedicationDispense.statusReasonCodeableConcept.coding[0]", "system == '"+SystemDispenseStatusReason+"'")
			case len(js) > 1:
				return nil, tooManyValues("MedicationDispense.statusReasonCodeableConcept.coding[0]", "system == '"+SystemDispenseStatusReason+"'")
			}
			item.NonDispensingReason = cs[js[0]].Code
		}
		dn.Items = append(dn.Items, item)
	}

	// createOriginalPrescriptionRef: the first contained MedicationRequest's
	// long-form prescription ID extension, exactly one.
	if err := onlyExtension(mds[0].mr.GroupIdentifier.Extension, ExtPrescriptionLongID, "MedicationRequest.groupIdentifier.extension.valueIdentifier"); err != nil {
		return nil, err
	}

	// The repeat dispensing issue: the prescription's, from the first
	// MedicationDispense's contained MedicationRequest's basedOn (counted
	// from 0); else a line item's, from the UK Core repeat information of
	// a contained MedicationRequest (counted from 1).
	if n, err := mds[0].prescriptionIssue(); err != nil || n > 0 {
		dn.Issue = n
		return dn, err
	}
	for i := range mds {
		c := mds[i].request
		if c == nil {
			continue
		}
		n, ok, err := repeatIssue(mds[i].requestExt, c.root+".extension", ExtUKCoreRepeatInformation, RepeatPartPrescriptons, countFrom1)
		if err != nil {
			return nil, err
		}
		if ok {
			dn.Issue = n
			break
		}
	}
	return dn, nil
}

// SystemDispenseStatusReason is the code system of a MedicationDispense's
// non-dispensing reason.
const SystemDispenseStatusReason = "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason"

// onlyCodingOf is the facade's getCodingForSystem: exactly one of cs in
// system, else TooFewValuesError or TooManyValuesError at expr.
func onlyCodingOf(cs []Coding, system, expr string) *Error {
	switch n := len(inSystem(cs, system)); {
	case n == 0:
		return tooFewValues(expr, "system == '"+system+"'")
	case n > 1:
		return tooManyValues(expr, "system == '"+system+"'")
	}
	return nil
}

// dispensedMedication is the facade's getMedicationCoding
// (translation/common/index.ts) for a MedicationDispense or its contained
// MedicationRequest: the one SNOMED CT coding of its
// medicationCodeableConcept, or else of the code of the Medication entry
// its medicationReference names by fullUrl (resolveReference).
func (m *Message) dispensedMedication(concept Concept, hasConcept bool, ref reference) (Coding, *Error) {
	codings, expr := concept.Coding, "MedicationRequest.medicationCodeableConcept.coding"
	if !hasConcept {
		k, err := byFullURL(m, ref.Reference)
		if err != nil {
			return Coding{}, err
		}
		var code Concept
		if err := readEntry(m, k, func(r *reader) { r.medicationCode(&code) }); err != nil {
			return Coding{}, err
		}
		codings, expr = code.Coding, "Medication.code.coding"
	}
	js := inSystem(codings, SystemSNOMED)
	switch {
	case len(js) == 0:
		return Coding{}, tooFewValues(expr, "system == '"+SystemSNOMED+"'")
	case len(js) > 1:
		return Coding{}, tooManyValues(expr, "system == '"+SystemSNOMED+"'")
	}
	return codings[js[0]], nil
}

// facadeDispenseChecks are verifyDispenseBundle's checks: what it throws
// (the first MedicationDispense's PractitionerRole and its Organization)
// comes first; then what it collects, in its order.
func (m *Message) facadeDispenseChecks(mds []dispense) *Error {
	// verifyCommonBundle runs first: what it throws comes before all.
	if err := m.commonRoleThrows(); err != nil {
		return err
	}
	first := &mds[0].md
	var role *practitionerRole
	var org *Entry
	if len(first.PerformerRefs) > 0 {
		base := entryPath(mds[0].k, "performer[0].actor.reference")
		var err *Error
		if role, err = containedRole(first.Contained, first.PerformerRefs[0].Reference, base); err != nil {
			return err
		}
		if role.Organization.Reference == "" {
			return processingError(`resource("MedicationDispense").contained("organization")`,
				"fhirContainedPractitionerRole.organization should be a Reference")
		}
		k, err := byFullURL(m, role.Organization.Reference)
		if err != nil {
			return err
		}
		org = &m.Entries[k]
	}

	// verifyCommonBundle's collected issues come before these.
	if err := m.commonCollected(); err != nil {
		return err
	}
	var whens, subjects, repeats, actors [][]byte
	for _, d := range mds {
		whens = append(whens, d.md.WhenHandedOver)
		var subject []byte
		if v := d.md.Subject.Identifier.Value; v != "" {
			subject, _ = json.Marshal(v)
		}
		subjects = append(subjects, subject)
		repeats = append(repeats, extensionJSON(d.md.Extension, ExtRepeatInformation))
		for _, a := range d.md.Performers {
			if a != nil {
				actors = append(actors, a)
			}
		}
	}
	for _, c := range []struct {
		field  string
		values [][]byte
	}{
		{"whenHandedOver", whens},
		{"subject.identifier.value", subjects},
		{`extension("` + ExtRepeatInformation + `")`, repeats},
		{"performer", actors},
	} {
		if u := distinct(c.values); len(u) > 1 {
			return dispenseInconsistent(c.field, u)
		}
	}
	for _, d := range mds {
		if len(d.md.Performers) == 0 {
			return facadeIssue(CodeMissingValue, "value", whereMedicationDispense+".performer.ofType(PractitionerRole)",
				"Expected MedicationDispense to have a value for performer.ofType(PractitionerRole).")
		}
	}
	for _, d := range mds {
		if d.md.HasMedicationConcept && d.md.HasMedicationReference {
			return &Error{Kind: KindInvalid, IssueType: "structure", Code: CodeConflictingValues,
				Display:     "Conflicting values have been specified in different fields",
				Diagnostics: "MedicationDispense cannot contain both medicationReference and medicationCodeableConcept fields.",
				Expression:  []string{entryPath(d.k, "")}}
		}
	}
	if role != nil && role.Practitioner.Reference != "" {
		return referenceNotIdentifier(`Bundle.entry("PractitionerRole").practitioner`)
	}
	if org != nil {
		var o struct{ Extension []extension }
		r := newReader(org.Resource, "Organization")
		r.object(func(key []byte) {
			if string(key) == "extension" {
				list(&r, &o.Extension, r.extension)
			}
		})
		if r.err != nil {
			return r.err
		}
		k := findExtensionIndex(o.Extension, ExtOrganisationRelationships)
		if k < 0 {
			return facadeIssue(CodeMissingValue, "invalid", "Organization.extension",
				"The dispense notification is missing the reimbursement authority and it should be provided.")
		}
		if findExtensionIndex(o.Extension[k].Extension, "reimbursementAuthority") < 0 {
			return facadeIssue(CodeMissingValue, "invalid", "Organization.extension[0].extension[0]",
				"The dispense notification is missing the ODS code for reimbursement authority and it should be provided.")
		}
	}
	return nil
}

// prescriptionIssue is the issue that the basedOn[0]
// Extension-EPS-RepeatInformation of the MedicationRequest contained in d
// names (counted from 0), or 0.
func (d *dispense) prescriptionIssue() (int, *Error) {
	c := d.request
	if c == nil || len(d.requestBasedOn) == 0 {
		return 0, nil
	}
	n, _, err := repeatIssue(d.requestBasedOn[0], c.root+".basedOn[0].extension", ExtRepeatInformation, RepeatPartIssued, countFrom0)
	return n, err
}

// dispensedRequest is what the broker reads of the MedicationRequest
// contained in a MedicationDispense.
type dispensedRequest struct {
	Extension            []extension
	Identifier           []identifier
	GroupIdentifier      groupIdentifier
	BasedOn              [][]extension
	Medication           Concept
	HasMedicationConcept bool
	MedicationReference  *reference
}

func (r *reader) dispensedRequest(mr *dispensedRequest) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &mr.Extension, r.extension)
		case "identifier":
			mr.Identifier = presentList(r, mr.Identifier)
			list(r, &mr.Identifier, r.identifier)
		case "groupIdentifier":
			r.groupIdentifier(&mr.GroupIdentifier)
		case "medicationCodeableConcept", "medicationReference":
			r.medication(string(key), &mr.Medication, &mr.HasMedicationConcept, &mr.MedicationReference)
		case "dispenseRequest":
			// The quantity prescribed, as the dispensing system copied it:
			// bounded as an order's is (amount).
			r.object(func(key []byte) {
				if string(key) == "quantity" {
					r.amount(new(quantity))
				}
			})
		case "basedOn":
			mr.BasedOn = nil
			r.array(func(int) {
				var exts []extension
				r.object(func(key []byte) {
					if string(key) == "extension" {
						list(r, &exts, r.extension)
					}
				})
				mr.BasedOn = append(mr.BasedOn, exts)
			})
		}
	})
}

// authorizing reads the line item id and the short-form prescription ID of
// the MedicationDispense's authorizingPrescription.
func (d *dispense) authorizing() (lineItem string, rxID found, err *Error) {
	if len(d.md.AuthorizingPrescription) == 0 {
		expr := entryPath(d.k, "authorizingPrescription")
		return "", found{}, missing(expr, "%s is missing: it names the prescription line item dispensed", expr)
	}
	// getContainedMedicationRequestViaReference (dispense-notification.ts
	// createPertinentInformation1, mapMedicationDispenses): EPS reads the
	// line item and the prescription only from the MedicationRequest that
	// authorizingPrescription[0].reference names among the
	// MedicationDispense's contained resources; an identifier (with an
	// Extension-DM-GroupIdentifier) is never read, and the facade fails on
	// it (it reads .reference of nothing: a server error there, a refusal
	// here).
	a := &d.md.AuthorizingPrescription[0]
	expr := entryPath(d.k, "authorizingPrescription[0].reference")
	if a.Reference == "" {
		return "", found{}, processingError(expr, expr+" is missing: EPS reads the line item dispensed only from the contained MedicationRequest it references")
	}
	c := findContained(d.md.Contained, a.Reference)
	if c == nil {
		return "", found{}, processingError(expr, "Contained resource with reference "+a.Reference+" not found")
	}
	if c.typ != "MedicationRequest" {
		return "", found{}, processingError(expr, "Contained resource with reference "+a.Reference+" is not of type MedicationRequest")
	}
	mr := &d.mr
	if err := readRaw(c, func(r *reader) { r.dispensedRequest(mr) }); err != nil {
		return "", found{}, err
	}
	// getPrescriptionItemId: the one prescription-order-item-number
	// identifier.
	j, err := identifierForSystem(mr.Identifier, SystemLineItemID, "MedicationDispense.contained[0].identifier")
	if err != nil {
		return "", found{}, err
	}
	lineItem = mr.Identifier[j].Value
	if err := requireUUID(lineItem, pathOf(c.root+".identifier["+strconv.Itoa(j)+"].value")); err != nil {
		return "", found{}, err
	}
	expr = c.root + ".groupIdentifier"
	if err := checkShortID(mr.GroupIdentifier.identifier, expr); err != nil {
		return "", found{}, err
	}
	d.request, d.requestExt, d.requestBasedOn = c, mr.Extension, mr.BasedOn
	return lineItem, found{mr.GroupIdentifier.Value, expr + ".value"}, nil
}
