package httpapi

import (
	"encoding/json"
	"net/http"
)

// capabilityStatement lists what the broker implements, and only that.
var capabilityStatement = mustJSON(map[string]any{
	"resourceType": "CapabilityStatement",
	"status":       "active",
	"date":         "2026-11-21",
	"publisher":    "EPS prescription-routing broker",
	"kind":         "instance",
	"software":     map[string]any{"name": "epsbroker"},
	"fhirVersion":  "4.0.1",
	"format":       []string{"application/fhir+json", "application/json"},
	"rest": []any{map[string]any{
		"mode":          "server",
		"documentation": "GET /_ping (no token): 200 {version, revision, releaseId, commitId} while the broker serves HTTP, as the EPS API's ping",
		"security": map[string]any{
			"cors":        false,
			"description": "Authorization: Bearer <JWT> signed by the broker's issuer key or a configured external issuer; claims sub, ods, role (prescriber, dispenser, tracker, admin).",
		},
		"resource": []any{map[string]any{
			"type":        "Task",
			"interaction": []any{map[string]any{"code": "create", "documentation": "POST /FHIR/R4/Task: return (status rejected) or withdraw (status in-progress, code abort)"}},
		}, map[string]any{
			"type":        "Claim",
			"interaction": []any{map[string]any{"code": "create", "documentation": "POST /FHIR/R4/Claim: claim or claim amendment"}},
		}, map[string]any{
			"type": "RequestGroup",
			"interaction": []any{
				map[string]any{"code": "read", "documentation": "GET /FHIR/R4/RequestGroup/{prescriptionId}[?issueNumber=n]: the prescription's detail and message history (clinical prescription tracker); for repeat dispensing, of issue n (default the current issue)"},
				map[string]any{"code": "search-type", "documentation": "GET /FHIR/R4/RequestGroup?prescriptionId= or ?nhsNumber= (exactly one)"},
			},
			"searchParam": []any{
				map[string]any{"name": "prescriptionId", "type": "token"},
				map[string]any{"name": "nhsNumber", "type": "token"},
			},
		}},
		"operation": []any{map[string]any{
			"name":          "validate",
			"definition":    "http://hl7.org/fhir/OperationDefinition/Resource-validate",
			"documentation": "POST /FHIR/R4/$validate (prescriber or dispenser): the checks of the endpoint a message is for, storing nothing: a Bundle (prescription-order, prescription-order-update, dispense-notification), Task/$release Parameters, a return or withdraw Task, or a Claim. Valid: 200 informational OperationOutcome; invalid: 400 with the issue that endpoint would answer",
		}, map[string]any{
			"name":          "process-message",
			"definition":    "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
			"documentation": "Accepts FHIR message Bundles. Supported events: prescription-order, prescription-order-update (cancel), dispense-notification.",
		}, map[string]any{
			"name":          "release",
			"definition":    "https://fhir.nhs.uk/OperationDefinition/Task-release",
			"documentation": "POST /FHIR/R4/Task/$release: nominated release (25 oldest) or release by prescription ID",
		}},
	}},
	"messaging": []any{map[string]any{
		"supportedMessage": []any{
			map[string]any{"mode": "receiver", "definition": "https://fhir.nhs.uk/MessageDefinition/prescription-order"},
			map[string]any{"mode": "receiver", "definition": "https://fhir.nhs.uk/MessageDefinition/prescription-order-update"},
			map[string]any{"mode": "receiver", "definition": "https://fhir.nhs.uk/MessageDefinition/dispense-notification"},
		},
	}},
})

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (a *api) metadata(w http.ResponseWriter, _ *http.Request) {
	writeFHIR(w, http.StatusOK, capabilityStatement)
}
