package httpapi

import (
	"encoding/json"
	"net/http"

	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// capabilityStatement lists what the broker implements, and only that:
// samply's CapabilityStatement, written once.
var capabilityStatement = mustJSON(fm.CapabilityStatement{
	Status:      fm.PublicationStatusActive,
	Date:        "2026-11-21",
	Publisher:   str("EPS prescription-routing broker"),
	Kind:        fm.CapabilityStatementKindInstance,
	Software:    &fm.CapabilityStatementSoftware{Name: "epsbroker"},
	FhirVersion: fm.FHIRVersion4_0_1,
	Format:      []string{"application/fhir+json", "application/json"},
	Rest: []fm.CapabilityStatementRest{{
		Mode:          fm.RestfulCapabilityModeServer,
		Documentation: str("GET /_ping (no token): 200 {version, revision, releaseId, commitId} while the broker serves HTTP, as the EPS API's ping"),
		Security: &fm.CapabilityStatementRestSecurity{
			Cors:        boolp(false),
			Description: str("Authorization: Bearer <JWT> signed by the broker's issuer key or a configured external issuer; claims sub, ods, role (prescriber, dispenser, tracker, admin)."),
		},
		Resource: []fm.CapabilityStatementRestResource{{
			Type: fm.ResourceTypeTask,
			Interaction: []fm.CapabilityStatementRestResourceInteraction{
				{Code: fm.TypeRestfulInteractionCreate, Documentation: str("POST /FHIR/R4/Task: return (status rejected) or withdraw (status in-progress, code abort)")},
			},
		}, {
			Type: fm.ResourceTypeClaim,
			Interaction: []fm.CapabilityStatementRestResourceInteraction{
				{Code: fm.TypeRestfulInteractionCreate, Documentation: str("POST /FHIR/R4/Claim: claim or claim amendment")},
			},
		}, {
			Type: fm.ResourceTypeRequestGroup,
			Interaction: []fm.CapabilityStatementRestResourceInteraction{
				{Code: fm.TypeRestfulInteractionRead, Documentation: str("GET /FHIR/R4/RequestGroup/{prescriptionId}[?issueNumber=n]: the prescription's detail and message history (clinical prescription tracker); for repeat dispensing, of issue n (default the current issue)")},
				{Code: fm.TypeRestfulInteractionSearchType, Documentation: str("GET /FHIR/R4/RequestGroup?prescriptionId= or ?nhsNumber= (exactly one)")},
			},
			SearchParam: []fm.CapabilityStatementRestResourceSearchParam{
				{Name: "prescriptionId", Type: fm.SearchParamTypeToken},
				{Name: "nhsNumber", Type: fm.SearchParamTypeToken},
			},
		}},
		Operation: []fm.CapabilityStatementRestResourceOperation{{
			Name:          "validate",
			Definition:    "http://hl7.org/fhir/OperationDefinition/Resource-validate",
			Documentation: str("POST /FHIR/R4/$validate (prescriber or dispenser): the checks of the endpoint a message is for, storing nothing: a Bundle (prescription-order, prescription-order-update, dispense-notification), Task/$release Parameters, a return or withdraw Task, or a Claim. Valid: 200 informational OperationOutcome; invalid: 400 with the issue that endpoint would answer"),
		}, {
			Name:          "process-message",
			Definition:    "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message",
			Documentation: str("Accepts FHIR message Bundles. Supported events: prescription-order, prescription-order-update (cancel), dispense-notification."),
		}, {
			Name:          "release",
			Definition:    "https://fhir.nhs.uk/OperationDefinition/Task-release",
			Documentation: str("POST /FHIR/R4/Task/$release: nominated release (25 oldest) or release by prescription ID"),
		}},
	}},
	Messaging: []fm.CapabilityStatementMessaging{{
		SupportedMessage: []fm.CapabilityStatementMessagingSupportedMessage{
			{Mode: fm.EventCapabilityModeReceiver, Definition: "https://fhir.nhs.uk/MessageDefinition/prescription-order"},
			{Mode: fm.EventCapabilityModeReceiver, Definition: "https://fhir.nhs.uk/MessageDefinition/prescription-order-update"},
			{Mode: fm.EventCapabilityModeReceiver, Definition: "https://fhir.nhs.uk/MessageDefinition/dispense-notification"},
		},
	}},
})

func str(s string) *string { return &s }

func boolp(b bool) *bool { return &b }

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
