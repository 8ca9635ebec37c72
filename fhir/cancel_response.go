package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
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
// the NHS examples answer.
func CancelResponse(request []byte, rcode string, now time.Time) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(request))
	d.UseNumber()
	var b map[string]any
	if err := d.Decode(&b); err != nil {
		return nil, fmt.Errorf("cancel response: %w", err)
	}
	reqID, _ := b["identifier"].(map[string]any)["value"].(string)
	b["id"] = uuid.NewString()
	b["identifier"] = map[string]any{"system": "https://tools.ietf.org/html/rfc4122", "value": uuid.NewString()}
	b["meta"] = map[string]any{"lastUpdated": now.UTC().Format(time.RFC3339)}
	entries, _ := b["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		r, _ := em["resource"].(map[string]any)
		switch r["resourceType"] {
		case "MessageHeader":
			r["eventCoding"] = map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/message-event",
				"code": EventPrescriptionOrderResponse, "display": "Prescription Order Response"}
			r["response"] = map[string]any{"identifier": reqID, "code": "ok"}
			delete(r, "reason")
		case "MedicationRequest":
			ext, _ := r["extension"].([]any)
			url := "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionTaskStatusReason"
			if rcode != "R-0001" {
				url = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory"
				r["status"] = "active"
			}
			r["extension"] = append([]any{map[string]any{
				"url": url,
				"extension": []any{
					map[string]any{"url": "status", "valueCoding": map[string]any{"system": SystemStatusHistory, "code": rcode, "display": RCodeDisplay[rcode]}},
					map[string]any{"url": "statusDate", "valueDateTime": now.UTC().Format(time.RFC3339)},
				}}}, ext...)
		}
	}
	return json.Marshal(b)
}
