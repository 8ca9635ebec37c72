package fhir

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// SystemStatusHistory is the code system of the cancellation R-codes.
const SystemStatusHistory = "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-history"

// RCodeError is the OperationOutcome answer of a cancellation that found no
// prescription to answer about (R-0008), or could not be processed (R-0009,
// R-5000, R-5888), as the NHS examples answer them.
func RCodeError(rcode rx.CancelCode) *Error {
	e := &Error{Kind: KindInvalid, IssueType: "invalid", Code: string(rcode), CodeSystem: SystemStatusHistory,
		Display: rcode.Display(), Diagnostics: rcode.Display()}
	switch rcode {
	case rx.RNotFound:
		// 400, as the EPS specification answers it (not 404).
		e.IssueType = "not-found"
	case rx.RDisabled:
		e.IssueType = "not-supported"
	case rx.RMismatch:
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
func CancelResponse(request []byte, rcode rx.CancelCode, now time.Time) ([]byte, error) {
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
			if rcode != rx.RCancelled {
				url = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory"
				r.Set("status", ojson.String("active"))
			}
			ext := ojson.Of(fm.Extension{Url: url, Extension: []fm.Extension{
				{Url: "status", ValueCoding: &fm.Coding{System: ptr(SystemStatusHistory), Code: ptr(string(rcode)), Display: ptr(rcode.Display())}},
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
