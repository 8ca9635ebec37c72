package fhir

import (
	"slices"
	"strconv"
	"strings"
)

// This file holds the cancellation message, a prescription-order-update
// (Message.Cancellation); its answer is in cancel_response.go.

// Code systems and values of the cancellation.
const (
	SystemCancellationReason = "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason"
	SystemMessageReason      = "https://fhir.nhs.uk/CodeSystem/message-reason-prescription"
	MessageReasonCancel      = "cancel"
	cancelledStatus          = "cancelled"
	whereMedicationRequest   = "Bundle.entry.resource.ofType(MedicationRequest)"
)

// Codes a cancellation may state.
var (
	// CancellationReasons are the medicationrequest-status-reason codes.
	CancellationReasons = []string{"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"}
)

// Cancellation is a $process-message prescription-order-update
// (MessageHeader.reason cancel).
type Cancellation struct {
	BundleID       string
	Sender         string
	PrescriptionID string
	LongID         string
	NHSNumber      string
	LineItemID     string // the cancelled MedicationRequest's identifier
	Reason         string // statusReason code: CancellationReasons
	ReasonDisplay  string
}

// Cancellation validates a prescription-order-update (cancel) message
// (decoded by DecodeMessage) and returns what it asks. The checks, in order
// (code, FHIR issue type), follow the facade's verifyBundle
// (bundle-validator.ts verifyCommonBundle, verifyCancellationBundle), its
// translation (translation/request/cancel/cancellation.ts
// convertCancellation), then Spine's checks of the values it is sent:
//
//	event prescription-order-update               INVALID_VALUE value
//	every PractitionerRole entry: a practitioner
//	  reference resolves by fullUrl, one
//	  sds-role-profile-id when it has identifiers TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	no MedicationRequest of intent plan or
//	  reflex-order, none with both medication
//	  forms; telecoms with value and use;
//	  PractitionerRole references                 INVALID_VALUE, CONFLICTING_VALUES, MISSING_VALUE
//	exactly one MedicationRequest                 INVALID_VALUE value
//	its status cancelled, a statusReason          INVALID_VALUE value, MISSING_VALUE value
//	one Patient with one nhs-number identifier    TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the requester's and the responsible
//	  party's PractitionerRole, Practitioner,
//	  Organization (or locations) and first
//	  HealthcareService, resolved by fullUrl;
//	  their sds-role-profile-id and sds-user-id   TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	one line item identifier, one statusReason
//	  coding of medicationrequest-status-reason,
//	  one Extension-DM-PrescriptionId             TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the reason 0001-0009, the line item id a
//	  UUID, the short ID (its system is not
//	  read) and check character, the long ID a
//	  UUID, the NHS number                        MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//
// No other reference is resolved and no ODS code's format is checked: EPS
// resolves only what it reads, and no rule of the reference checks the
// format of a cancellation's organisations. MessageHeader.reason is not
// read (EPS tells a cancellation by its event; most NHS example
// cancellations have no reason).
func (m *Message) Cancellation() (*Cancellation, error) {
	c, err := m.cancellation()
	if err != nil {
		err.Op = "validate cancellation"
		return nil, err
	}
	return c, nil
}

// cancelExtras are the elements of a cancellation that medicationRequest
// does not read.
type cancelExtras struct{ StatusReason Concept }

func (m *Message) cancellation() (*Cancellation, *Error) {
	if m.Event != EventPrescriptionOrderUpdate {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order-update message holds a cancellation", quote(m.Event))
	}

	// verifyCommonBundle (bundle-validator.ts): what validatePractitionerRole
	// throws first, then validateMedicationRequests, validateTelecoms and
	// validatePractitionerRole's collected issues; then
	// verifyCancellationBundle, in its order.
	if err := m.commonRoleThrows(); err != nil {
		return nil, err
	}
	if err := m.commonCollected(); err != nil {
		return nil, err
	}
	k, n := -1, 0
	for i, e := range m.Entries {
		if e.ResourceType == "MedicationRequest" {
			if k < 0 {
				k = i
			}
			n++
		}
	}
	if n != 1 {
		return nil, facadeIssue(CodeInvalidValue, "value", whereMedicationRequest,
			"The Bundle must contain exactly one MedicationRequest if MessageHeader.eventCoding.code is '"+EventPrescriptionOrderUpdate+"'.")
	}
	var mr medicationRequest
	var extra cancelExtras
	if err := readEntry(m, k, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
		return nil, err
	}
	hasReason := false
	if err := readEntry(m, k, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) == "statusReason" {
				hasReason = r.peek() != 'n'
				r.concept(&extra.StatusReason)
			}
		})
	}); err != nil {
		return nil, err
	}
	if mr.Status != cancelledStatus {
		return nil, facadeIssue(CodeInvalidValue, "value", whereMedicationRequest+".status", "MedicationRequest.status must be cancelled.")
	}
	if !hasReason {
		return nil, facadeIssue(CodeMissingValue, "value", whereMedicationRequest+".statusReason",
			"Expected MedicationRequest to have a value for statusReason.")
	}

	// The translation (cancellation.ts convertCancellation), in its order:
	// the one Patient, the author (the requester's PractitionerRole) and
	// the responsible party, each resolved by fullUrl; the line item, the
	// reason, the long-form prescription ID.
	pk, err := onlyPatient(m)
	if err != nil {
		return nil, err
	}
	var pt patient
	if err := readEntry(m, pk, func(r *reader) { r.patient(&pt) }); err != nil {
		return nil, err
	}
	pj, err := identifierForSystem(pt.Identifier, SystemNHSNumber, "Patient.identifier")
	if err != nil {
		return nil, err
	}
	if err := m.cancelAgent(mr.Requester.Reference); err != nil {
		return nil, err
	}
	responsible := mr.Requester.Reference
	if e := findExtension(mr.Extension, ExtResponsiblePractitioner); e != nil {
		responsible = ""
		if e.ValueReference != nil {
			responsible = e.ValueReference.Reference
		}
	}
	if err := m.cancelAgent(responsible); err != nil {
		return nil, err
	}
	j, err := identifierForSystem(mr.Identifier, SystemLineItemID, "MedicationRequest.identifier")
	if err != nil {
		return nil, err
	}
	rj := inSystem(extra.StatusReason.Coding, SystemCancellationReason)
	switch {
	case len(rj) == 0:
		return nil, tooFewValues("MedicationRequest.statusReason", "system == '"+SystemCancellationReason+"'")
	case len(rj) > 1:
		return nil, tooManyValues("MedicationRequest.statusReason", "system == '"+SystemCancellationReason+"'")
	}
	if err := onlyExtension(mr.GroupIdentifier.Extension, ExtPrescriptionLongID, "MedicationRequest.groupIdentifier.extension"); err != nil {
		return nil, err
	}

	// Then Spine's checks of what it was sent: the reason, the line item
	// and prescription IDs, the NHS number.
	rc := extra.StatusReason.Coding[rj[0]]
	if !slices.Contains(CancellationReasons, rc.Code) {
		expr := entryPath(k, "statusReason.coding["+strconv.Itoa(rj[0])+"].code")
		return nil, badValue(expr, "%s %s is not a cancellation reason (%s)", expr, quote(rc.Code), strings.Join(CancellationReasons, ", "))
	}
	c := &Cancellation{BundleID: m.BundleID, Sender: m.Sender, Reason: rc.Code, ReasonDisplay: rc.Display}
	c.LineItemID = mr.Identifier[j].Value
	if err := requireUUID(c.LineItemID, inEntry(k, "identifier").at(j, ".value")); err != nil {
		return nil, err
	}
	if err := checkShortID(mr.GroupIdentifier.identifier, entryPath(k, "groupIdentifier")); err != nil {
		return nil, err
	}
	c.PrescriptionID = mr.GroupIdentifier.Value
	c.LongID = longID(&mr)
	if err := requireUUID(c.LongID, inEntry(k, "groupIdentifier.extension('"+ExtPrescriptionLongID+"').valueIdentifier.value")); err != nil {
		return nil, err
	}
	c.NHSNumber = pt.Identifier[pj].Value
	if err := requireNHSNumber(c.NHSNumber, inEntry(pk, "identifier").at(pj, ".value")); err != nil {
		return nil, err
	}
	return c, nil
}

// cancelAgent resolves and reads the PractitionerRole that ref names as the
// cancellation's translation does (cancellation.ts convertAuthor,
// convertResponsibleParty, convertPractitionerRole, createAgentPerson):
// the role by fullUrl; its practitioner (a reference resolved by fullUrl,
// or an identifier) with one sds-user-id identifier; its sds-role-profile-id
// (when it has identifiers); its organization (a reference resolved by
// fullUrl, or an identifier with its locations resolved); its first
// healthcareService when it has one.
func (m *Message) cancelAgent(ref string) *Error {
	k, err := byFullURL(m, ref)
	if err != nil {
		return err
	}
	var role practitionerRole
	if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
		return err
	}
	if role.HasPractitioner {
		ids := []identifier{role.Practitioner.Identifier}
		if role.Practitioner.Reference != "" {
			p, err := byFullURL(m, role.Practitioner.Reference)
			if err != nil {
				return err
			}
			if ids, err = practitionerIdentifiers(m, p); err != nil {
				return err
			}
		}
		if role.HasIdentifier {
			if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, "PractitionerRole.identifier"); err != nil {
				return err
			}
		}
		if _, err := identifierForSystem(ids, SystemSDSUserID, "Practitioner.identifier"); err != nil {
			return err
		}
	} else if role.HasIdentifier {
		if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, "PractitionerRole.identifier"); err != nil {
			return err
		}
	}
	if role.Organization.Reference != "" {
		if _, err := byFullURL(m, role.Organization.Reference); err != nil {
			return err
		}
	} else {
		for _, l := range role.Location {
			if _, err := byFullURL(m, l.Reference); err != nil {
				return err
			}
		}
	}
	if len(role.HealthcareService) > 0 && role.HealthcareService[0].Reference != "" {
		if _, err := byFullURL(m, role.HealthcareService[0].Reference); err != nil {
			return err
		}
	}
	return nil
}
