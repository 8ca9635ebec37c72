package fhir

import (
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Message event codes (MessageHeader.eventCoding, system
// https://fhir.nhs.uk/CodeSystem/message-event).
const (
	EventPrescriptionOrder         = "prescription-order"
	EventPrescriptionOrderUpdate   = "prescription-order-update"
	EventPrescriptionOrderResponse = "prescription-order-response"
	EventDispenseNotification      = "dispense-notification"
)

// Course of therapy codes.
const (
	TherapyAcute            = rx.TherapyAcute
	TherapyContinuous       = rx.TherapyContinuous
	TherapyRepeatDispensing = rx.TherapyRepeatDispensing
)

// Message is a decoded FHIR message Bundle: what every $process-message
// needs before the event-specific decoding. Raw keeps the request bytes,
// untouched; they are what the broker stores and forwards.
type Message struct {
	Raw      []byte
	BundleID string // Bundle.identifier.value
	Event    string // MessageHeader.eventCoding.code
	// Sender is the ODS code MessageHeader.sender names: its identifier, or
	// the ODS code of the Organization (or of the PractitionerRole's
	// organization) it references. "" when the sender is absent or names
	// no ODS code: the acting organisation is then the caller's.
	Sender        string
	Receiver      string // MessageHeader.destination[0].receiver.identifier.value (ODS), may be empty
	ReplacementOf string // MessageHeader.extension replacementOf identifier, may be empty
	Entries       []Entry
	sender        reference // MessageHeader.sender as sent
}

// Entry is one Bundle.entry: its fullUrl, its resourceType and its resource's
// raw JSON (a slice of Message.Raw).
type Entry struct {
	FullURL      string
	ResourceType string
	ID           string
	Resource     []byte
}

// Order is a validated prescription-order: what routing, storage and the
// tracker need. Dates are in UTC.
type Order struct {
	BundleID         string
	PrescriptionID   string    // short form, e.g. 24F5DA-A83008-7EFE6Z
	LongID           string    // long form UUID (Extension-DM-PrescriptionId)
	NHSNumber        string    // Patient NHS number
	Sender           string    // the ODS code MessageHeader.sender names (Message.Sender), "" when none: the intake then sets the caller's
	Receiver         string    // MessageHeader destination receiver ODS code, may be empty
	Performer        string    // dispenseRequest.performer ODS code, may be empty
	SiteType         string    // Extension-DM-PerformerSiteType code: P1, P2, P3, 0004 (may be empty)
	PrescriptionType string    // Extension-DM-PrescriptionType code, e.g. 0101
	TherapyType      string    // acute, continuous or continuous-repeat-dispensing (acute when acute and continuous are mixed, as EPS)
	PrescriberOrg    string    // ODS code of the requester's organisation, may be empty
	AuthoredOn       time.Time // MedicationRequest.authoredOn, zero when absent or not a FHIR dateTime (EPS does not read it)
	// SignedAt is the time of the requester's signature (its Provenance
	// signature's when): Spine's prescription time when the order has no
	// validityPeriod (nhs-eps-api parent-prescription.ts, practitioner.ts
	// setSignatureTimeAndText). Zero when the order is not signed.
	SignedAt       time.Time
	ValidityStart  time.Time // dispenseRequest.validityPeriod.start, zero when absent
	ValidityEnd    time.Time // dispenseRequest.validityPeriod.end, zero when absent
	RepeatsAllowed int       // dispenseRequest.numberOfRepeatsAllowed (0 when absent)
	// ControlledDrug is the highest controlled drug schedule among the items
	// (Extension-DM-ControlledDrug schedule: CD1..CD5, e.g. "CD2"); empty
	// when no item is a controlled drug.
	ControlledDrug string
	SupplyDays     int // expectedSupplyDuration in days (0 when absent)
	Items          []OrderItem
}

// OrderItem is one MedicationRequest (line item).
type OrderItem struct {
	ID                string // identifier with system .../prescription-order-item-number (UUID)
	MedicationCode    string // medicationCodeableConcept.coding[0].code
	MedicationDisplay string // medicationCodeableConcept.coding[0].display
	Quantity          float64
	QuantityUnit      string
	Dosage            string // dosageInstruction[0].text
}

// ShortValidity reports whether the order holds a Schedule 2, 3 or 4
// controlled drug, legally valid for 28 days only.
func (o *Order) ShortValidity() bool {
	return rx.ShortValidity(o.ControlledDrug)
}

// Nominated reports whether the order names a nominated site type (P1, P2 or
// P3) rather than non-nominated (0004).
func (o *Order) Nominated() bool { return rx.NominatedSite(o.SiteType) }
