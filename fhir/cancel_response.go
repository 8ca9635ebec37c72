package fhir

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
)

// SystemStatusHistory is the code system of the cancellation R-codes.
const SystemStatusHistory = "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-history"

// RCodeDisplay is the NHS wording of each cancellation answer.
var RCodeDisplay = map[string]string{
	"R-0001": "Prescription/item was cancelled",
	"R-0002": "Prescription/item was not cancelled. With dispenser. Marked for cancellation",
	"R-0003": "Prescription/item was not cancelled. With dispenser active. Marked for cancellation",
	"R-0004": "Prescription/item was not cancelled. Prescription has been dispensed.",
	"R-0005": "Prescription/item has expired",
	"R-0006": "Prescription/item had already been cancelled",
	"R-0007": "Prescription/item cancellation requested by another prescriber",
	"R-0008": "Prescription/item not found",
	"R-0009": "Cancellation functionality disabled in SPINE",
	"R-0010": "Prescription/item was not cancelled. Prescription has been not dispensed.",
	"R-5000": "Unable to process message. Information missing or invalid - Mismatch between prescription and cancellation NHSNumber",
	"R-5888": "Invalid Message.",
}

// RCodeError is the OperationOutcome answer of a cancellation that found no
// prescription to answer about (R-0008), or could not be processed (R-0009,
// R-5000, R-5888), as the NHS examples answer them.
func RCodeError(rcode string) *Error {
	e := &Error{Kind: KindInvalid, IssueType: "invalid", Code: rcode, CodeSystem: SystemStatusHistory,
		Display: RCodeDisplay[rcode], Diagnostics: RCodeDisplay[rcode]}
	switch rcode {
	case "R-0008":
		// 400, as the EPS specification answers it (not 404).
		e.IssueType = "not-found"
	case "R-0009":
		e.IssueType = "not-supported"
	case "R-5000":
		e.IssueType = "processing"
	}
	return e
}

// CancelResponse is the prescription-order-response Bundle answering a
// cancellation: the request's resources, its MessageHeader turned into the
// response (response.identifier = the request's Bundle.identifier), and the
// MedicationRequest carrying the R-code: for R-0001 (cancelled) in
// Extension-DM-PrescriptionTaskStatusReason with status cancelled, for the
// others in Extension-DM-PrescriptionStatusHistory with status active, as
// the NHS examples answer. The request is forwarded as it was written
// (ojson: its members in their order, strings and numbers as sent); only
// the elements named here are set, from FHIR types (samply) the broker
// fills.
func CancelResponse(request []byte, rcode string, now time.Time) ([]byte, error) {
	b, err := ojson.Parse(request)
	if err != nil {
		return nil, fmt.Errorf("cancel response: %w", err)
	}
	if b.Kind != '{' {
		return nil, fmt.Errorf("cancel response: the request is not a JSON object")
	}
	reqID := b.Get("identifier").Get("value").Str()
	stamp := now.UTC().Format(time.RFC3339)
	b.Set("id", ojson.String(uuid.NewString()))
	b.Set("identifier", ojson.Of(fm.Identifier{System: ptr(SystemMessageID), Value: ptr(uuid.NewString())}))
	b.Set("meta", ojson.Of(fm.Meta{LastUpdated: &stamp}))
	for _, e := range b.Get("entry").Items() {
		r := e.Get("resource")
		if r == nil || r.Kind != '{' {
			continue
		}
		switch r.Get("resourceType").Str() {
		case "MessageHeader":
			r.Set("eventCoding", ojson.Of(fm.Coding{System: ptr(SystemMessageEvent),
				Code: ptr(EventPrescriptionOrderResponse), Display: ptr("Prescription Order Response")}))
			r.Set("response", ojson.Of(fm.MessageHeaderResponse{Identifier: reqID, Code: fm.ResponseTypeOk}))
			r.Delete("reason")
		case "MedicationRequest":
			url := "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionTaskStatusReason"
			if rcode != "R-0001" {
				url = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory"
				r.Set("status", ojson.String("active"))
			}
			ext := ojson.Of(fm.Extension{Url: url, Extension: []fm.Extension{
				{Url: "status", ValueCoding: &fm.Coding{System: ptr(SystemStatusHistory), Code: &rcode, Display: ptr(RCodeDisplay[rcode])}},
				{Url: "statusDate", ValueDateTime: &stamp},
			}})
			list := r.Get("extension")
			if list == nil || list.Kind != '[' {
				list = &ojson.Node{Kind: '['}
			}
			list.Elems = append([]*ojson.Node{ext}, list.Elems...)
			r.Set("extension", list)
		}
	}
	return b.Encode(""), nil
}

// ptr is a pointer to v: the samply types hold their optional elements as
// pointers.
func ptr[T any](v T) *T { return &v }
