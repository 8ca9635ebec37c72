package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

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
// the NHS examples answer.
func CancelResponse(request []byte, rcode rx.CancelCode, now time.Time) ([]byte, error) {
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
			if rcode != rx.RCancelled {
				url = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory"
				r["status"] = "active"
			}
			r["extension"] = append([]any{map[string]any{
				"url": url,
				"extension": []any{
					map[string]any{"url": "status", "valueCoding": map[string]any{"system": SystemStatusHistory, "code": string(rcode), "display": rcode.Display()}},
					map[string]any{"url": "statusDate", "valueDateTime": now.UTC().Format(time.RFC3339)},
				}}}, ext...)
		}
	}
	return json.Marshal(b)
}
