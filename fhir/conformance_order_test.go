package fhir_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The conformance suite of prescription-order (and of the message-level
// rules every $process-message shares): each case is a message generated
// from an NHS example (fhirgen), edited with fhirgen.Mutate, and what EPS
// answers to it. Every case names the reference it follows: nhs-eps-api is
// NHSDigital/electronic-prescription-service-api (the FHIR facade), spine is
// NHSDigital/eps-spine-shared (Spine's validation).

const (
	facadeValidator = "nhs-eps-api/packages/coordinator/src/services/validation/bundle-validator.ts "
	facadeCommon    = "nhs-eps-api/packages/coordinator/src/services/translation/common/index.ts "
	facadeRx        = "nhs-eps-api/packages/coordinator/src/services/translation/request/prescription.ts "
	facadeAuthor    = "nhs-eps-api/packages/coordinator/src/services/translation/request/practitioner.ts "
	facadeTherapy   = "nhs-eps-api/packages/coordinator/src/services/translation/request/course-of-therapy-type.ts "
	facadeParent    = "nhs-eps-api/packages/coordinator/src/services/translation/request/prescribe/parent-prescription.ts "
	facadePatient   = "nhs-eps-api/packages/coordinator/src/services/translation/request/patient.ts "
	facadeOrg       = "nhs-eps-api/packages/coordinator/src/services/translation/request/organization.ts "
	facadeLineItem  = "nhs-eps-api/packages/coordinator/src/services/translation/request/line-item.ts "
	facadeDateTime  = "nhs-eps-api/packages/coordinator/src/services/translation/common/dateTime.ts "
	facadeResources = "nhs-eps-api/packages/coordinator/src/services/translation/common/getResourcesOfType.ts "
	spineFailure    = "Unable to process message. Information missing or invalid - "
	spineCreate     = "eps-spine-shared/src/eps_spine_shared/validation/create.py "
	spineCommon     = "eps-spine-shared/src/eps_spine_shared/validation/common.py "
	spineConstants  = "eps-spine-shared/src/eps_spine_shared/validation/constants.py "
	items           = "Bundle.entry.resource.ofType(MedicationRequest)."
	extSiteType     = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType"
	extRxType       = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType"
)

// Entries of fhirgen.Order4Items: 0 MessageHeader, 1-4 MedicationRequest,
// 5 Patient, 6 PractitionerRole, 7 Practitioner, 8 Organization,
// 9 Provenance.
const (
	eHeader, eItem1, eItem2, ePatient, eRole, ePractitioner, eOrg, eProvenance = 0, 1, 2, 5, 6, 7, 8, 9
)

type msg = map[string]any

func entryList(m msg) []any { return m["entry"].([]any) }

func resource(m msg, k int) msg { return entryList(m)[k].(msg)["resource"].(msg) }

func fullURL(m msg, k int) string { return entryList(m)[k].(msg)["fullUrl"].(string) }

// eachMR applies f to every MedicationRequest, with its index among them.
func eachMR(m msg, f func(i int, r msg)) {
	i := 0
	for _, e := range entryList(m) {
		if r := e.(msg)["resource"].(msg); r["resourceType"] == "MedicationRequest" {
			f(i, r)
			i++
		}
	}
}

func dispReq(r msg) msg { return r["dispenseRequest"].(msg) }

// onItems sets key of every item's dispenseRequest (delete when v is nil).
func onItems(key string, v any) func(m msg) {
	return func(m msg) {
		eachMR(m, func(_ int, r msg) {
			if v == nil {
				delete(dispReq(r), key)
			} else {
				dispReq(r)[key] = v
			}
		})
	}
}

// onItem edits the MedicationRequest of entry k.
func onItem(k int, f func(r msg)) func(m msg) { return func(m msg) { f(resource(m, k)) } }

func setExt(r msg, url string, ext msg) {
	exts, _ := r["extension"].([]any)
	out := []any{}
	for _, x := range exts {
		if x.(msg)["url"] != url {
			out = append(out, x)
		}
	}
	if ext != nil {
		out = append(out, ext)
	}
	r["extension"] = out
}

type orderCase struct {
	name string
	ref  string // the reference file and function the case follows
	body []byte
	// decodeOnly: only DecodeMessage (message-level rules).
	decodeOnly bool
	// refused: the EPS code, issue type and FHIRPath answered; "" code:
	// accepted.
	code, issue, expr string
	// diag, when set, is the diagnostics EPS answers, word for word.
	diag  string
	check func(t *testing.T, m *fhir.Message, o *fhir.Order)
}

func TestConformancePrescriptionOrder(t *testing.T) {
	now := time.Now().UTC()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	// acute: a fresh acute order (the NHS example, nominated to FA565 by
	// A83008), edited by the edits.
	acute := func(edits ...func(m msg)) []byte {
		g, err := tmpl.Order(fhirgen.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return fhirgen.Mutate(g.Body, func(m msg) {
			for _, e := range edits {
				e(m)
			}
		})
	}
	// erd: a repeat dispensing order of 6 issues of 28 days from today.
	erd := func(edits ...func(m msg)) []byte {
		g, _ := tmpl.Order(fhirgen.Options{Now: now})
		return fhirgen.Mutate(fhirgen.RepeatDispensing(g.Body, 5, 28, now), func(m msg) {
			for _, e := range edits {
				e(m)
			}
		})
	}
	// The NHS eRD example of the EPS specification, redated.
	specERD, err := os.ReadFile("../test/testdata/nhs/nhs-eps-api/spec/prescribing/prescription-order/eRD-primary-example-req.json")
	if err != nil {
		t.Fatal(err)
	}
	erdTmpl, err := fhirgen.NewTemplate(specERD)
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := erdTmpl.Order(fhirgen.Options{Now: now})
	// NHS example-b (spec/errors): its groupIdentifier's system is
	// prescription-short-form; redated so that its dates hold.
	exampleB, err := os.ReadFile("../test/testdata/nhs/nhs-eps-api/spec/errors/example-b-spine-error-patient-deceased/SendRequest-FhirMessageSigned.json")
	if err != nil {
		t.Fatal(err)
	}
	shortFormExample := fhirgen.Redate(exampleB, now)
	day := func(d time.Time) string { return d.Format(time.DateOnly) }
	sender := func(want string) func(t *testing.T, m *fhir.Message, o *fhir.Order) {
		return func(t *testing.T, m *fhir.Message, _ *fhir.Order) {
			if m.Sender != want {
				t.Errorf("Message.Sender %q, want %q", m.Sender, want)
			}
		}
	}
	snomed := func(code string) msg {
		return msg{"system": fhir.SystemSNOMED, "code": code, "display": "Amoxicillin 250mg capsules"}
	}
	dmd := msg{"system": "https://dmd.nhs.uk", "code": "VMP-1"}

	cases := []orderCase{
		// MessageHeader.sender: never read by EPS; resolved by the broker.
		{name: "sender absent", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)",
			body: acute(func(m msg) { delete(resource(m, eHeader), "sender") }), check: sender("")},
		{name: "sender as a reference to the Organization", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)",
			body: acute(func(m msg) { resource(m, eHeader)["sender"] = msg{"reference": fullURL(m, eOrg)} }), check: sender("A83008")},
		{name: "sender as a reference to the PractitionerRole", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)",
			body: acute(func(m msg) { resource(m, eHeader)["sender"] = msg{"reference": fullURL(m, eRole)} }), check: sender("A83008")},
		{name: "sender as a PractitionerRole whose organization is an identifier", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)", decodeOnly: true,
			body: acute(func(m msg) {
				resource(m, eHeader)["sender"] = msg{"reference": fullURL(m, eRole)}
				resource(m, eRole)["organization"] = msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "B81001"}}
			}), check: sender("B81001")},
		{name: "sender naming no organisation (a Practitioner) is as absent", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)",
			body: acute(func(m msg) { resource(m, eHeader)["sender"] = msg{"reference": fullURL(m, ePractitioner)} }), check: sender("")},
		{name: "sender identifier not an ODS code names no organisation", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read); " + spineCommon + "check_organisation_and_roles (agentOrganization only)",
			body: acute(func(m msg) { resource(m, eHeader)["sender"].(msg)["identifier"].(msg)["value"] = "A83 008" }), check: sender("")},
		{name: "sender reference that resolves nowhere names no organisation", ref: facadeValidator + "verifyBundle (MessageHeader.sender is not read)",
			body: acute(func(m msg) {
				resource(m, eHeader)["sender"] = msg{"reference": "urn:uuid:9b2c1d52-0d47-4e4a-8e0e-3f0f3a1f6c01"}
			}), check: sender("")},
		{name: "destination receiver not an ODS code", ref: spineCommon + "check_nominated_performer (the receiver is not checked)",
			body: acute(func(m msg) {
				resource(m, eHeader)["destination"].([]any)[0].(msg)["receiver"].(msg)["identifier"].(msg)["value"] = "FA 565/x"
			})},
		{name: "Patient.generalPractitioner not an ODS code", ref: facadePatient + "convertPatientToProviderPatient (not checked by Spine)",
			body: acute(func(m msg) {
				resource(m, ePatient)["generalPractitioner"] = []any{msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "A83 008!"}}}
			})},
		{name: "another Organization's ODS identifier not an ODS code", ref: spineCommon + "check_organisation_and_roles (agentOrganization only)",
			body: acute(func(m msg) {
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:3f1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d01",
					"resource": msg{"resourceType": "Organization", "name": "elsewhere", "identifier": []any{msg{"system": fhir.SystemODSCode, "value": "NOT AN ODS CODE"}}}})
			})},

		// Bundle.identifier
		{name: "Bundle.identifier of another system", ref: facadeCommon + "getBundleIdentifierValue (getMessageId, onlyElement)",
			body: acute(func(m msg) { m["identifier"].(msg)["system"] = "https://example.org/message-id" }),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.identifier"},

		// Provenance.target and agent.who are not resolved.
		{name: "Provenance.target outside the Bundle", ref: facadeAuthor + "findRequesterSignature (only signature.who is compared)",
			body: acute(func(m msg) {
				resource(m, eProvenance)["target"] = []any{msg{"reference": "urn:uuid:0b4d0c3a-54e9-4bd2-9ab0-2a1e3f2b7c11"}}
			})},
		{name: "Provenance.agent.who outside the Bundle", ref: facadeAuthor + "findRequesterSignature (only signature.who is compared)",
			body: acute(func(m msg) {
				resource(m, eProvenance)["agent"] = []any{msg{"who": msg{"reference": "https://directory.spineservices.nhs.uk/STU3/Practitioner/555086689106"}}}
			})},

		// ODS codes as Spine allows them.
		{name: "lower-case and '-' ODS codes", ref: spineConstants + "REGEX_ALPHANUMERIC8; " + spineCommon + "check_nominated_performer, check_organisation_and_roles",
			body: acute(func(m msg) {
				onItems("performer", msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "fa-565"}})(m)
				resource(m, eHeader)["destination"].([]any)[0].(msg)["receiver"].(msg)["identifier"].(msg)["value"] = "fa-565"
				resource(m, eOrg)["partOf"].(msg)["identifier"].(msg)["value"] = "84h"
			}),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.Performer != "fa-565" {
					t.Errorf("performer %q", o.Performer)
				}
			}},
		{name: "nominated performer ODS code of 9 characters", ref: spineCommon + "check_nominated_performer (REGEX_ALPHANUMERIC8)",
			body: acute(onItems("performer", msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "FA5650000"}})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.performer.identifier.value",
			diag: spineFailure + "nominatedPerformer has invalid format"},
		{name: "prescriber Organization ODS code not an ODS code", ref: spineCommon + "check_organisation_and_roles (agentOrganization)",
			body: acute(func(m msg) { resource(m, eOrg)["identifier"].([]any)[0].(msg)["value"] = "A83 008" }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Organization.identifier",
			diag: spineFailure + "agentOrganization has invalid format"},
		{name: "prescriber Organization.partOf ODS code not an ODS code", ref: spineCreate + "check_hcpl_org (hcplOrgCode)",
			body: acute(func(m msg) { resource(m, eOrg)["partOf"].(msg)["identifier"].(msg)["value"] = "84H 0" }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Organization.identifier",
			diag: spineFailure + "hcplOrgCode has invalid format"},

		// The same on every line item (verifyPrescriptionBundle).
		{name: "authoredOn differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) { r["authoredOn"] = day(now.AddDate(0, 0, -1)) + "T10:00:00+00:00" })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "authoredOn"},
		{name: "requester differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(func(m msg) { resource(m, eItem2)["requester"] = msg{"reference": fullURL(m, ePractitioner)} }),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "requester"},
		{name: "expectedSupplyDuration differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) { dispReq(r)["expectedSupplyDuration"].(msg)["value"] = 28 })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "dispenseRequest.expectedSupplyDuration"},
		{name: "category differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) {
				r["category"] = []any{msg{"coding": []any{msg{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "outpatient"}}}}
			})),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "category"},
		{name: "ResponsiblePractitioner on one item only", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(func(m msg) {
				setExt(resource(m, eItem1), fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": fullURL(m, eRole)}})
			}),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + `extension("` + fhir.ExtResponsiblePractitioner + `")`},
		{name: "ResponsiblePractitioner the same on every item", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": fullURL(m, eRole)}})
				})
			})},
		{name: "groupIdentifier differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) { r["groupIdentifier"].(msg)["value"] = fhirgen.ShortID("A83008") })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "groupIdentifier"},
		{name: "subject differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(func(m msg) {
				resource(m, eItem2)["subject"] = msg{"reference": fullURL(m, ePatient), "display": "another"}
			}),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "subject"},
		{name: "performer differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) { dispReq(r)["performer"].(msg)["identifier"].(msg)["value"] = "FCG71" })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "dispenseRequest.performer"},
		{name: "validityPeriod differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) { dispReq(r)["validityPeriod"] = msg{"start": day(now), "end": day(now.AddDate(0, 1, 0))} })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "dispenseRequest.validityPeriod"},
		{name: "performer site type differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) {
				setExt(dispReq(r), extSiteType, msg{"url": extSiteType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference", "code": "P2"}})
			})),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + `dispenseRequest.extension("` + extSiteType + `")`},
		{name: "prescription type differs", ref: facadeValidator + "verifyPrescriptionBundle verifyIdenticalForAllMedicationRequests",
			body: acute(onItem(eItem2, func(r msg) {
				setExt(r, extRxType, msg{"url": extRxType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/prescription-type", "code": "0108"}})
			})),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + `extension("` + extRxType + `")`},
		{name: "prescription type extension absent", ref: facadeValidator + "verifyPrescriptionBundle; " + facadeRx + "convertPrescriptionPertinentInformation4 (getExtensionForUrl)",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { setExt(r, extRxType, nil) }) }),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.extension"},

		// Statuses, identifiers, intent, dosage.
		{name: "status not active", ref: facadeValidator + "verifyPrescriptionBundle createMedicationRequestIncorrectValueIssue",
			body: acute(onItem(eItem2, func(r msg) { r["status"] = "on-hold" })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "status"},
		{name: "duplicate line item identifiers", ref: facadeValidator + "verifyPrescriptionBundle allMedicationRequestsHaveUniqueIdentifier",
			body: acute(func(m msg) {
				resource(m, eItem2)["identifier"] = resource(m, eItem1)["identifier"]
			}),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "identifier"},
		{name: "intent plan", ref: facadeValidator + "verifyCommonBundle validateMedicationRequests isPlanOrReflex",
			body: acute(onItem(eItem2, func(r msg) { r["intent"] = "plan" })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "intent"},
		{name: "intent reflex-order", ref: facadeValidator + "verifyCommonBundle validateMedicationRequests isPlanOrReflex",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { r["intent"] = "reflex-order" }) }),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "intent"},
		{name: "intent filler-order (EPS refuses only plan and reflex-order)", ref: facadeValidator + "verifyCommonBundle validateMedicationRequests isPlanOrReflex",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { r["intent"] = "filler-order" }) })},
		{name: "no dosageInstruction", ref: facadeValidator + "verifyPrescriptionBundle missingRequiredField(dosageInstructions)",
			body: acute(onItem(eItem2, func(r msg) { r["dosageInstruction"] = []any{} })),
			code: fhir.CodeMissingValue, issue: "invalid", expr: "Bundle.entry[2].resource.dosageInstruction"},
		{name: "two dosageInstructions without sequence", ref: facadeValidator + "verifyPrescriptionBundle createMissingDosageSequenceInstructions",
			body: acute(onItem(eItem2, func(r msg) { r["dosageInstruction"] = []any{msg{"text": "one a day"}, msg{"text": "then two a day"}} })),
			code: fhir.CodeMissingValue, issue: "invalid", expr: "Bundle.entry[2].resource.dosageInstruction.sequence"},
		{name: "two dosageInstructions with sequence", ref: facadeValidator + "verifyPrescriptionBundle createMissingDosageSequenceInstructions",
			body: acute(onItem(eItem2, func(r msg) {
				r["dosageInstruction"] = []any{msg{"sequence": 1, "text": "one a day"}, msg{"sequence": 2, "text": "then two a day"}}
			}))},

		// The prescriber.
		{name: "PractitionerRole.organization an identifier", ref: facadeValidator + "verifyCommonBundle validatePractitionerRole fieldIsNotReferenceButShouldBe",
			body: acute(func(m msg) {
				resource(m, eRole)["organization"] = msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "A83008"}}
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Bundle.entry[6].resource.organization"},
		{name: "primary care without Organization.partOf", ref: facadeValidator + "verifyPrescriptionBundle checkPrimaryCarePrescriptionResources",
			body: acute(func(m msg) { delete(resource(m, eOrg), "partOf") }),
			code: fhir.CodeMissingValue, issue: "invalid", expr: "Bundle.entry[8].resource.partOf"},
		{name: "secondary care without Organization.partOf", ref: facadeValidator + "verifyPrescriptionBundle checkPrimaryCarePrescriptionResources (01xx only)",
			body: acute(func(m msg) {
				delete(resource(m, eOrg), "partOf")
				eachMR(m, func(_ int, r msg) {
					setExt(r, extRxType, msg{"url": extRxType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/prescription-type", "code": "1001"}})
				})
			})},
		{name: "healthcareService an identifier", ref: facadeValidator + "verifyCommonBundle validatePractitionerRole fieldIsNotReferenceButShouldBe",
			body: acute(func(m msg) {
				resource(m, eRole)["healthcareService"] = []any{msg{"identifier": msg{"system": fhir.SystemODSCode, "value": "A83008"}}}
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Bundle.entry[6].resource.healthcareService[0]"},
		{name: "primary care with a healthcareService", ref: facadeValidator + "verifyPrescriptionBundle checkPrimaryCarePrescriptionResources",
			body: acute(func(m msg) {
				resource(m, eRole)["healthcareService"] = []any{msg{"reference": "urn:uuid:6a1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d02"}}
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:6a1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d02",
					"resource": msg{"resourceType": "HealthcareService", "name": "clinic", "identifier": []any{msg{"system": fhir.SystemODSCode, "value": "A83008"}}}})
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Bundle.entry[6].resource.healthcareService"},
		{name: "Practitioner identified by a gmp-number", ref: facadeValidator + "verifyPrescriptionBundle createInvalidIdentifierIssue",
			body: acute(func(m msg) {
				p := resource(m, ePractitioner)
				p["identifier"] = append(p["identifier"].([]any), msg{"system": fhir.SystemGMPNumber, "value": "G1234567"})
			}),
			code: fhir.CodeInvalidValue, issue: "value", expr: "Bundle.entry[7].resource.identifier"},
		{name: "telecom without use", ref: facadeValidator + "verifyCommonBundle validateTelecoms (getPathedTelecoms: Organization, Practitioner, PractitionerRole)",
			body: acute(func(m msg) {
				resource(m, ePractitioner)["telecom"] = []any{msg{"system": "phone", "value": "01234567890"}}
			}),
			code: fhir.CodeMissingValue, issue: "invalid", expr: "Bundle.entry[7].resource.telecom[0].use"},
		{name: "telecom without value", ref: facadeValidator + "verifyCommonBundle validateTelecoms (getPathedTelecoms: Organization, Practitioner, PractitionerRole)",
			body: acute(func(m msg) { resource(m, eOrg)["telecom"] = []any{msg{"system": "phone", "use": "work"}} }),
			code: fhir.CodeMissingValue, issue: "invalid", expr: "Bundle.entry[8].resource.telecom[0].value"},

		// Medication.
		{name: "medicationCodeableConcept and medicationReference", ref: facadeValidator + "verifyCommonBundle validateMedicationRequests createMedicationFieldIssue",
			body: acute(func(m msg) { resource(m, eItem1)["medicationReference"] = msg{"reference": fullURL(m, eItem2)} }),
			code: fhir.CodeConflictingValues, issue: "structure", expr: "Bundle.entry[1].resource.medication"},
		{name: "medicationReference to a Medication entry", ref: facadeCommon + "getMedicationCoding",
			body: acute(func(m msg) {
				r := resource(m, eItem1)
				delete(r, "medicationCodeableConcept")
				r["medicationReference"] = msg{"reference": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11"}
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11",
					"resource": msg{"resourceType": "Medication", "code": msg{"coding": []any{dmd, snomed("39732311000001104")}}}})
			}),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.Items[0].MedicationCode != "39732311000001104" {
					t.Errorf("medication code %q", o.Items[0].MedicationCode)
				}
			}},
		{name: "Medication without a SNOMED coding", ref: facadeCommon + "getMedicationCoding (getCodingForSystem)",
			body: acute(func(m msg) {
				r := resource(m, eItem1)
				delete(r, "medicationCodeableConcept")
				r["medicationReference"] = msg{"reference": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11"}
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11",
					"resource": msg{"resourceType": "Medication", "code": msg{"coding": []any{dmd}}}})
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Medication.code.coding"},
		{name: "SNOMED coding not first", ref: facadeCommon + "getMedicationCoding (getCodingForSystem)",
			body: acute(onItem(eItem1, func(r msg) { r["medicationCodeableConcept"] = msg{"coding": []any{dmd, snomed("39732311000001104")}} })),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.Items[0].MedicationCode != "39732311000001104" {
					t.Errorf("medication code %q", o.Items[0].MedicationCode)
				}
			}},
		{name: "no SNOMED coding", ref: facadeCommon + "getMedicationCoding (getCodingForSystem: onlyElement)",
			body: acute(onItem(eItem1, func(r msg) { r["medicationCodeableConcept"] = msg{"coding": []any{dmd}} })),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.medicationCodeableConcept.coding"},
		{name: "two SNOMED codings", ref: facadeCommon + "getMedicationCoding (getCodingForSystem: onlyElement)",
			body: acute(onItem(eItem1, func(r msg) {
				r["medicationCodeableConcept"] = msg{"coding": []any{snomed("39732311000001104"), snomed("323509004")}}
			})),
			code: fhir.CodeTooManyValues, issue: "invalid", expr: "MedicationRequest.medicationCodeableConcept.coding"},

		// Patient, performer, signature.
		{name: "birthDate in the future", ref: spineCreate + "check_birth_date",
			body: acute(func(m msg) { resource(m, ePatient)["birthDate"] = day(now.AddDate(0, 0, 2)) }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[5].resource.birthDate"},
		{name: "born today", ref: spineCreate + "check_birth_date",
			body: acute(func(m msg) { resource(m, ePatient)["birthDate"] = day(now) })},
		{name: "named performer with site type 0004", ref: spineCommon + "check_nominated_performer (PERFORMER_TYPELIST)",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(dispReq(r), extSiteType, msg{"url": extSiteType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference", "code": "0004"}})
				})
			}),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.extension('" + extSiteType + "').valueCoding.code"},
		{name: "named performer with site type P3", ref: spineCommon + "check_nominated_performer (PERFORMER_TYPELIST)",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(dispReq(r), extSiteType, msg{"url": extSiteType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference", "code": "P3"}})
				})
			})},
		{name: "signature not the requester's", ref: facadeAuthor + "findRequesterSignature",
			body: acute(func(m msg) {
				resource(m, eProvenance)["signature"].([]any)[0].(msg)["who"] = msg{"reference": fullURL(m, ePractitioner)}
			}),
			code: fhir.CodeMissingDigitalSignature, issue: "required", expr: "Bundle.entry.resource.ofType(Provenance).signature"},
		{name: "signature by someone outside the Bundle", ref: facadeAuthor + "findRequesterSignature (who.reference compared, not resolved)",
			body: acute(func(m msg) {
				resource(m, eProvenance)["signature"].([]any)[0].(msg)["who"] = msg{"reference": "https://directory.spineservices.nhs.uk/STU3/Practitioner/555086689106"}
			}),
			code: fhir.CodeMissingDigitalSignature, issue: "required", expr: "Bundle.entry.resource.ofType(Provenance).signature"},
		{name: "two requester signatures", ref: facadeAuthor + "findRequesterSignature (onlyElementOrNull)",
			body: acute(func(m msg) {
				p := resource(m, eProvenance)
				s := p["signature"].([]any)
				p["signature"] = append(s, s[0])
			}),
			code: fhir.CodeTooManyValues, issue: "invalid", expr: "Provenance.signature"},

		// Supply and repeats of an acute order: not read by EPS.
		{name: "acute supply in weeks", ref: facadeRx + "convertBundleToPrescription (days supply for eRD only)",
			body: acute(onItems("expectedSupplyDuration", msg{"value": 2, "unit": "week", "system": "http://unitsofmeasure.org", "code": "wk"})),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.SupplyDays != 14 {
					t.Errorf("supply %d days, want 14", o.SupplyDays)
				}
			}},
		{name: "acute numberOfRepeatsAllowed as a string", ref: facadeRx + "parseNumberOfRepeatsAllowed",
			body: acute(onItems("numberOfRepeatsAllowed", "6"))},

		// Repeat dispensing.
		{name: "eRD: the NHS specification example", ref: facadeValidator + "verifyRepeatDispensingPrescription; " + spineCreate + "check_repeat_dispense_window",
			body: spec.Body},
		{name: "eRD: generated", ref: facadeValidator + "verifyRepeatDispensingPrescription; " + spineCreate + "check_repeat_dispense_window",
			body: erd(),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.TherapyType != fhir.TherapyRepeatDispensing || o.RepeatsAllowed != 5 || o.SupplyDays != 28 {
					t.Errorf("order %+v", o)
				}
			}},
		{name: "eRD: numberOfRepeatsAllowed as a string", ref: facadeRx + "parseNumberOfRepeatsAllowed (lossless-json)",
			body: erd(onItems("numberOfRepeatsAllowed", "5")),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.RepeatsAllowed != 5 {
					t.Errorf("repeats %d", o.RepeatsAllowed)
				}
			}},
		{name: "eRD: numberOfRepeatsAllowed absent", ref: facadeRx + "extractRepeatNumberHighValue",
			body: erd(onItems("numberOfRepeatsAllowed", nil)),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.numberOfRepeatsAllowed"},
		{name: "eRD: numberOfRepeatsAllowed differs", ref: facadeValidator + "verifyRepeatDispensingPrescription verifyIdenticalForAllMedicationRequests",
			body: erd(onItem(eItem2, func(r msg) { dispReq(r)["numberOfRepeatsAllowed"] = 3 })),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + "dispenseRequest.numberOfRepeatsAllowed"},
		{name: "eRD: UK Core repeat information differs", ref: facadeValidator + "verifyRepeatDispensingPrescription verifyIdenticalForAllMedicationRequests",
			body: erd(onItem(eItem2, func(r msg) {
				setExt(r, fhir.ExtUKCoreRepeatInformation, msg{"url": fhir.ExtUKCoreRepeatInformation, "extension": []any{
					msg{"url": "authorisationExpiryDate", "valueDateTime": day(now.AddDate(0, 6, 0))}}})
			})),
			code: fhir.CodeInvalidValue, issue: "value", expr: items + `extension("` + fhir.ExtUKCoreRepeatInformation + `")`},
		{name: "eRD: no validityPeriod", ref: facadeValidator + "verifyRepeatDispensingPrescription createMedicationRequestMissingValueIssue",
			body: erd(onItems("validityPeriod", nil)),
			code: fhir.CodeMissingValue, issue: "value", expr: items + "dispenseRequest.validityPeriod"},
		{name: "eRD: no validityPeriod.end", ref: facadeRx + "convertPrescriptionComponent1; " + facadeDateTime + "convertIsoDateTimeStringToMoment",
			body: erd(onItems("validityPeriod", msg{"start": day(now)})),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.validityPeriod.end",
			diag: "Incorrect format for date time string 'undefined'."},
		{name: "eRD: no validityPeriod.start", ref: facadeParent + "convertParentPrescription; " + facadeRx + "convertPrescriptionComponent1",
			body: erd(onItems("validityPeriod", msg{"end": day(now.AddDate(0, 6, 0))})),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.validityPeriod.start",
			diag: "Incorrect format for date time string 'undefined'."},
		{name: "eRD: negative days supply", ref: spineCreate + "check_days_supply (REGEX_INTEGER12)",
			body: erd(onItems("expectedSupplyDuration", msg{"value": -28, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.expectedSupplyDuration.value",
			diag: spineFailure + "daysSupply is not an integer"},
		{name: "eRD: authorisationExpiryDate yesterday", ref: facadeRx + "extractReviewDate (isFutureDated)",
			body: erd(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtUKCoreRepeatInformation, msg{"url": fhir.ExtUKCoreRepeatInformation, "extension": []any{
						msg{"url": "authorisationExpiryDate", "valueDateTime": day(now.AddDate(0, 0, -1))}}})
				})
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.extension.extension.valueDateTime",
			diag: "authorisationExpiryDate is not in the future '" + day(now.AddDate(0, 0, -1)) + "'."},
		{name: "eRD: validity ended yesterday", ref: spineCreate + "check_repeat_dispense_window",
			body: erd(onItems("validityPeriod", msg{"start": day(now.AddDate(0, -1, 0)), "end": day(now.AddDate(0, 0, -1))})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.validityPeriod.end"},
		{name: "eRD: validity ends today", ref: spineCreate + "check_repeat_dispense_window",
			body: erd(onItems("validityPeriod", msg{"start": day(now.AddDate(0, -1, 0)), "end": day(now)}))},
		{name: "eRD: validity ends 12 months ahead", ref: spineCreate + "check_repeat_dispense_window (MAX_FUTURESUPPLYMONTHS)",
			body: erd(onItems("validityPeriod", msg{"start": day(now), "end": day(now.AddDate(0, 12, 0))}))},
		{name: "eRD: validity ends 12 months and a day ahead", ref: spineCreate + "check_repeat_dispense_window (MAX_FUTURESUPPLYMONTHS)",
			body: erd(onItems("validityPeriod", msg{"start": day(now), "end": day(now.AddDate(0, 12, 1))})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.validityPeriod.end"},
		{name: "eRD: validity starts after it ends", ref: spineCreate + "check_repeat_dispense_window",
			body: erd(onItems("validityPeriod", msg{"start": day(now.AddDate(0, 2, 0)), "end": day(now.AddDate(0, 1, 0))})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.validityPeriod.start"},
		{name: "eRD: no expectedSupplyDuration", ref: facadeValidator + "verifyRepeatDispensingPrescription createMedicationRequestMissingValueIssue",
			body: erd(onItems("expectedSupplyDuration", nil)),
			code: fhir.CodeMissingValue, issue: "value", expr: items + "dispenseRequest.expectedSupplyDuration"},
		{name: "eRD: supply in weeks", ref: facadeRx + "convertPrescriptionComponent1",
			body: erd(onItems("expectedSupplyDuration", msg{"value": 4, "unit": "week", "system": "http://unitsofmeasure.org", "code": "wk"})),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.expectedSupplyDuration.code"},
		{name: "eRD: supply over 366 days", ref: spineCreate + "check_days_supply (MAX_DAYSSUPPLY)",
			body: erd(onItems("expectedSupplyDuration", msg{"value": 367, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"})),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.expectedSupplyDuration.value"},
		{name: "eRD: 14 issues of 28 days (no issues x days rule)", ref: spineCreate + "check_repeat_dispense_window, check_days_supply",
			body: erd(onItems("numberOfRepeatsAllowed", 13))},
		{name: "eRD: 99 issues", ref: spineCreate + "check_repeat_dispense_instances (MAX_PRESCRIPTIONREPEATS)",
			body: erd(onItems("numberOfRepeatsAllowed", 98))},
		{name: "eRD: 100 issues", ref: spineCreate + "check_repeat_dispense_instances (MAX_PRESCRIPTIONREPEATS)",
			body: erd(onItems("numberOfRepeatsAllowed", 99)),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.dispenseRequest.numberOfRepeatsAllowed"},
		{name: "eRD: Schedule 2 controlled drug (the broker's stricter rule)", ref: "README Conformance with EPS: Schedule 2 and 3 controlled drugs are not repeat dispensed",
			body: erd(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtControlledDrug, msg{"url": fhir.ExtControlledDrug, "extension": []any{
						msg{"url": "schedule", "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-controlled-drug", "code": "CD2"}}}})
				})
			}),
			code: fhir.CodeInvalidValue, issue: "business-rule", expr: items + "extension('" + fhir.ExtControlledDrug + "')"},

		// Prescription IDs (prescription.ts convertPrescriptionIds: groupIdentifier.value
		// and the PrescriptionId extension; the system is not read).
		// example-b predates two rules EPS now applies to it (the site type
		// extension and a professional code): given those, it is accepted.
		{name: "groupIdentifier of the prescription-short-form system (NHS example-b, with a site type and professional codes)", ref: facadeRx + "convertPrescriptionIds",
			body: fhirgen.Mutate(shortFormExample, func(m msg) {
				for _, e := range entryList(m) {
					if r := e.(msg)["resource"].(msg); r["resourceType"] == "Practitioner" {
						r["identifier"] = append(r["identifier"].([]any), msg{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "G1234567"})
					}
				}
				eachMR(m, func(_ int, r msg) {
					setExt(dispReq(r), extSiteType, msg{"url": extSiteType, "valueCoding": msg{"system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference", "code": "P1"}})
				})
			}),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.PrescriptionID != "76787C-C81007-00001G" {
					t.Errorf("prescription ID %q", o.PrescriptionID)
				}
			}},
		{name: "NHS example-b as sent: no dispenseRequest.extension", ref: facadeRx + "convertDispensingSitePreference (getExtensionForUrl of no array: onlyElement)",
			body: shortFormExample,
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.extension", diag: "Required field missing."},
		{name: "PrescriptionId extension absent", ref: facadeRx + "convertPrescriptionIds (getExtensionForUrl)",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { r["groupIdentifier"].(msg)["extension"] = []any{} }) }),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.groupIdentifier.extension"},
		{name: "short-form ID of a bad format", ref: spineCommon + "check_prescription_id (REGEX_PRESCRID)",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { r["groupIdentifier"].(msg)["value"] = "24F5DA-A83008" }) }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[1].resource.groupIdentifier.value",
			diag: spineFailure + "prescriptionID has invalid format"},

		// References: resolved by fullUrl where EPS reads them, and only there
		// (translation/common/index.ts resolveReference, getResourceForFullUrl).
		{name: "requester resolves nowhere", ref: facadeCommon + "resolveReference (getResourceForFullUrl)",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) { r["requester"] = msg{"reference": "urn:uuid:0e5c3c1a-1111-4a4a-9b9b-0123456789ab"} })
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry",
			diag: "Too few values submitted. Expected 1 element where fullUrl == 'urn:uuid:0e5c3c1a-1111-4a4a-9b9b-0123456789ab'."},
		{name: "requester as a relative reference (EPS resolves by fullUrl only)", ref: facadeCommon + "getResourceForFullUrl (entry.fullUrl === reference)",
			body: acute(func(m msg) {
				resource(m, eRole)["id"] = "role1"
				eachMR(m, func(_ int, r msg) { r["requester"] = msg{"reference": "PractitionerRole/role1"} })
				resource(m, eProvenance)["signature"].([]any)[0].(msg)["who"] = msg{"reference": "PractitionerRole/role1"}
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "PractitionerRole.practitioner resolves nowhere", ref: facadeValidator + "verifyCommonBundle validatePractitionerRole (resolveReference)",
			body: acute(func(m msg) {
				resource(m, eRole)["practitioner"] = msg{"reference": "urn:uuid:0e5c3c1a-2222-4a4a-9b9b-0123456789ab"}
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "PractitionerRole.practitioner an identifier (not the responsible party)", ref: facadeValidator + "validatePractitionerRolePractitionerField",
			body: acute(func(m msg) {
				resource(m, eRole)["practitioner"] = msg{"identifier": msg{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "G1234567"}}
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Bundle.entry[6].resource.practitioner"},
		{name: "Organization.partOf reference resolves nowhere", ref: facadeOrg + "convertHealthCareProviderLicense (resolveReference)",
			body: acute(func(m msg) {
				resource(m, eOrg)["partOf"] = msg{"reference": "urn:uuid:0e5c3c1a-3333-4a4a-9b9b-0123456789ab"}
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "ResponsiblePractitioner resolves nowhere", ref: facadeAuthor + "convertResponsibleParty (resolveReference)",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": "urn:uuid:0e5c3c1a-4444-4a4a-9b9b-0123456789ab"}})
				})
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "medicationReference resolves nowhere", ref: facadeCommon + "getMedicationCoding (getResourceForFullUrl)",
			body: acute(onItem(eItem1, func(r msg) {
				delete(r, "medicationCodeableConcept")
				r["medicationReference"] = msg{"reference": "urn:uuid:0e5c3c1a-5555-4a4a-9b9b-0123456789ab"}
			})),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "CommunicationRequest contentReference resolves nowhere", ref: facadeRx + "extractMedicationListText (resolveReference)",
			body: acute(func(m msg) {
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:7a1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d03",
					"resource": msg{"resourceType": "CommunicationRequest", "payload": []any{msg{"contentReference": msg{"reference": "urn:uuid:0e5c3c1a-6666-4a4a-9b9b-0123456789ab"}}}}})
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Bundle.entry"},
		{name: "references EPS does not read may resolve nowhere", ref: facadeResources + "getPatient (the one Patient, not the subject); " + facadeCommon + "resolveReference (only where translated)",
			body: acute(func(m msg) {
				resource(m, ePatient)["generalPractitioner"] = []any{msg{"reference": "#nowhere"}}
				resource(m, eHeader)["focus"] = []any{msg{"reference": "urn:uuid:0e5c3c1a-7777-4a4a-9b9b-0123456789ab"}}
				resource(m, ePatient)["id"] = "pat1"
				eachMR(m, func(_ int, r msg) { r["subject"] = msg{"reference": "Patient/pat1"} })
			})},
		{name: "two Patients", ref: facadeResources + "getPatient (onlyElement)",
			body: acute(func(m msg) {
				m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:8a1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d04", "resource": resource(m, ePatient)})
			}),
			code: fhir.CodeTooManyValues, issue: "invalid", expr: "Bundle.entry"},

		// Course of therapy (course-of-therapy-type.ts getCourseOfTherapyTypeCode).
		{name: "acute and continuous items make an acute prescription", ref: facadeTherapy + "getCourseOfTherapyTypeCode",
			body: acute(onItem(eItem2, func(r msg) { r["courseOfTherapyType"].(msg)["coding"].([]any)[0].(msg)["code"] = "continuous" })),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if o.TherapyType != fhir.TherapyAcute {
					t.Errorf("therapy %q, want acute", o.TherapyType)
				}
			}},
		{name: "every coding counts: an item coded acute and repeat dispensing", ref: facadeTherapy + "getCourseOfTherapyTypeCode (flatMap of every coding)",
			body: acute(onItem(eItem2, func(r msg) {
				r["courseOfTherapyType"] = msg{"coding": []any{
					msg{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": "acute"},
					msg{"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy", "code": "continuous-repeat-dispensing"}}}
			})),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.courseOfTherapyType.coding"},
		{name: "an unknown course of therapy on every item", ref: facadeRx + "convertCourseOfTherapyTypeCode",
			body: acute(func(m msg) {
				eachMR(m, func(_ int, r msg) { r["courseOfTherapyType"].(msg)["coding"].([]any)[0].(msg)["code"] = "sometimes" })
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.courseOfTherapyType.coding.code",
			diag: "Unhandled course of therapy type code 'sometimes'."},

		// Dates as EPS parses them.
		{name: "acute validityPeriod without start", ref: facadeParent + "convertParentPrescription (validityPeriod.start)",
			body: acute(onItems("validityPeriod", msg{"end": day(now.AddDate(0, 1, 0))})),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.dispenseRequest.validityPeriod.start",
			diag: "Incorrect format for date time string 'undefined'."},
		{name: "acute validityPeriod.end and authoredOn not read", ref: facadeParent + "convertParentPrescription (only validityPeriod.start is parsed)",
			body: acute(func(m msg) {
				onItems("validityPeriod", msg{"start": day(now), "end": "next month"})(m)
				eachMR(m, func(_ int, r msg) { r["authoredOn"] = "2022-10-21T13:47:00" })
			})},
		{name: "no validityPeriod: Spine takes the signature time", ref: facadeParent + "convertParentPrescription; " + facadeAuthor + "setSignatureTimeAndText",
			body: acute(func(m msg) {
				onItems("validityPeriod", nil)(m)
				resource(m, eProvenance)["signature"].([]any)[0].(msg)["when"] = "2026-03-01T09:30:00+00:00"
			}),
			check: func(t *testing.T, _ *fhir.Message, o *fhir.Order) {
				if want := time.Date(2026, 3, 1, 9, 30, 0, 0, time.UTC); !o.SignedAt.Equal(want) || !o.ValidityStart.IsZero() {
					t.Errorf("signed %v validity start %v, want signed %v", o.SignedAt, o.ValidityStart, want)
				}
			}},

		// Performer site type (prescription.ts convertDispensingSitePreference).
		{name: "performer site type extension absent", ref: facadeRx + "convertDispensingSitePreference (getExtensionForUrl)",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { setExt(dispReq(r), extSiteType, nil) }) }),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.dispenseRequest.extension"},

		// The prescriber.
		{name: "Practitioner with two professional codes", ref: facadeAuthor + "getAgentPersonPersonIdForAuthor",
			body: acute(func(m msg) {
				p := resource(m, ePractitioner)
				p["identifier"] = append(p["identifier"].([]any), msg{"system": "https://fhir.hl7.org.uk/Id/nmc-number", "value": "12A3456B"})
			}),
			code: fhir.CodeTooManyValues, issue: "invalid", expr: "Practitioner.identifier"},
		{name: "Practitioner without a professional code", ref: facadeAuthor + "getAgentPersonPersonIdForAuthor",
			body: acute(func(m msg) {
				p := resource(m, ePractitioner)
				var keep []any
				for _, id := range p["identifier"].([]any) {
					if sys := id.(msg)["system"].(string); !strings.Contains(sys, "-number") && !strings.HasSuffix(sys, "professional-code") {
						keep = append(keep, id)
					}
				}
				p["identifier"] = keep
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Practitioner.identifier"},
		{name: "prescriber Organization without a name", ref: facadeOrg + "convertCommonOrganizationDetails",
			body: acute(func(m msg) { delete(resource(m, eOrg), "name") }),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Organization.address", diag: "Name must be provided."},
		{name: "prescriber Organization without an ODS identifier", ref: facadeOrg + "convertCommonOrganizationDetails (getIdentifierValueForSystem)",
			body: acute(func(m msg) {
				resource(m, eOrg)["identifier"] = []any{msg{"system": "https://example.org/other", "value": "X"}}
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Organization.identifier"},
		{name: "responsible party's role names its practitioner by identifier", ref: facadeValidator + "validatePractitionerRolePractitionerField (reference XOR identifier)",
			body: acute(func(m msg) {
				url := "urn:uuid:9c1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d05"
				role := msg{"resourceType": "PractitionerRole", "practitioner": msg{"identifier": msg{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "G7654321"}},
					"organization": msg{"reference": fullURL(m, eOrg)}}
				m["entry"] = append(entryList(m), msg{"fullUrl": url, "resource": role})
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": url}})
				})
			})},
		{name: "responsible party without a professional code", ref: facadeAuthor + "getAgentPersonPersonIdForResponsibleParty",
			body: acute(func(m msg) {
				url := "urn:uuid:9c1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d08"
				role := msg{"resourceType": "PractitionerRole", "practitioner": msg{"identifier": msg{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555086689106"}},
					"organization": msg{"reference": fullURL(m, eOrg)}}
				m["entry"] = append(entryList(m), msg{"fullUrl": url, "resource": role})
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": url}})
				})
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Practitioner.identifier"},
		{name: "responsible party named by the role's spurious code", ref: facadeAuthor + "getAgentPersonPersonIdForResponsibleParty (nhsbsa-spurious-code)",
			body: acute(func(m msg) {
				url := "urn:uuid:9c1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d09"
				role := msg{"resourceType": "PractitionerRole", "practitioner": msg{"identifier": msg{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": "555086689106"}},
					"identifier":   []any{msg{"system": "https://fhir.hl7.org.uk/Id/nhsbsa-spurious-code", "value": "612345"}},
					"organization": msg{"reference": fullURL(m, eOrg)}}
				m["entry"] = append(entryList(m), msg{"fullUrl": url, "resource": role})
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": url}})
				})
			})},
		{name: "responsible party's role names its practitioner by reference and identifier", ref: facadeValidator + "validatePractitionerRolePractitionerField (reference XOR identifier)",
			body: acute(func(m msg) {
				url := "urn:uuid:9c1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d06"
				role := msg{"resourceType": "PractitionerRole", "organization": msg{"reference": fullURL(m, eOrg)},
					"practitioner": msg{"reference": fullURL(m, ePractitioner), "identifier": msg{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "G7654321"}}}
				m["entry"] = append(entryList(m), msg{"fullUrl": url, "resource": role})
				eachMR(m, func(_ int, r msg) {
					setExt(r, fhir.ExtResponsiblePractitioner, msg{"url": fhir.ExtResponsiblePractitioner, "valueReference": msg{"reference": url}})
				})
			}),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Bundle.entry[10].resource.practitioner",
			diag: "Responsible practitioner must be either a reference to a Practitioner resource or an identifier reference."},

		// Patient.
		{name: "no birthDate", ref: facadePatient + "convertPatientToPatientPerson (convertIsoDateStringToHl7V3Date)",
			body: acute(func(m msg) { delete(resource(m, ePatient), "birthDate") }),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Patient.birthDate", diag: "Incorrect format for date string 'undefined'."},
		{name: "birthDate a dateTime", ref: facadeDateTime + "convertIsoDateStringToMoment (FHIR_DATE_REGEX)",
			body: acute(func(m msg) { resource(m, ePatient)["birthDate"] = "1999-01-04T00:00:00Z" }),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Patient.birthDate"},
		{name: "NHS number of a bad check digit", ref: spineCommon + "check_nhs_number",
			body: acute(func(m msg) { resource(m, ePatient)["identifier"].([]any)[0].(msg)["value"] = "9449304131" }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[5].resource.identifier[0].value",
			diag: spineFailure + "nhsNumber is not valid"},
		{name: "no NHS number identifier", ref: facadePatient + "convertPatient (getIdentifierValueForSystem)",
			body: acute(func(m msg) {
				resource(m, ePatient)["identifier"].([]any)[0].(msg)["system"] = "https://example.org/other"
			}),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "Patient.identifier"},

		// The requester's signature (practitioner.ts setSignatureTimeAndText).
		{name: "signature when not a dateTime", ref: facadeAuthor + "setSignatureTimeAndText (convertIsoDateTimeStringToHl7V3DateTime)",
			body: acute(func(m msg) { resource(m, eProvenance)["signature"].([]any)[0].(msg)["when"] = "21/10/2022 13:47" }),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Provenance.signature.when"},
		{name: "signature data not base64 XML", ref: facadeAuthor + "setSignatureTimeAndText (xml2js)",
			body: acute(func(m msg) { resource(m, eProvenance)["signature"].([]any)[0].(msg)["data"] = "bm90IFhNTA==" }),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "Provenance.signature.data", diag: "Invalid signature format."},

		// Line items.
		{name: "line item ids differing only in case are distinct", ref: facadeValidator + "allMedicationRequestsHaveUniqueIdentifier (isDeepStrictEqual)",
			body: acute(func(m msg) {
				id := resource(m, eItem1)["identifier"].([]any)[0].(msg)["value"].(string)
				resource(m, eItem2)["identifier"].([]any)[0].(msg)["value"] = strings.ToUpper(id)
			})},
		{name: "line item id not a GUID", ref: spineCreate + "validate_line_item (REGEX_GUID)",
			body: acute(onItem(eItem2, func(r msg) { r["identifier"].([]any)[0].(msg)["value"] = "item-2" })),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry[2].resource.identifier[0].value",
			diag: spineFailure + "item-2 is not a valid GUID format"},
		{name: "no line item identifier", ref: facadeLineItem + "convertMedicationRequestToLineItem (getIdentifierValueForSystem)",
			body: acute(onItem(eItem2, func(r msg) { r["identifier"].([]any)[0].(msg)["system"] = "https://example.org/other" })),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.identifier"},
		{name: "line item without identifiers", ref: facadeLineItem + "convertMedicationRequestToLineItem (getIdentifierValueForSystem: no array)",
			body: acute(onItem(eItem2, func(r msg) { delete(r, "identifier") })),
			code: fhir.CodeInvalidValue, issue: "invalid", expr: "MedicationRequest.identifier", diag: "Required field missing."},
		{name: "line item with an empty identifier list", ref: facadeLineItem + "convertMedicationRequestToLineItem (getIdentifierValueForSystem)",
			body: acute(onItem(eItem2, func(r msg) { r["identifier"] = []any{} })),
			code: fhir.CodeTooFewValues, issue: "invalid", expr: "MedicationRequest.identifier"},
		{name: "five line items", ref: spineCreate + "validate_line_items (MAX_LINEITEMS)",
			body: acute(func(m msg) {
				fifth := msg{}
				b, _ := json.Marshal(entryList(m)[eItem1])
				_ = json.Unmarshal(b, &fifth)
				fifth["fullUrl"] = "urn:uuid:5e1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d07"
				fifth["resource"].(msg)["identifier"].([]any)[0].(msg)["value"] = "5e1f1e0c-8a44-4c55-9d4e-2b1b2a1c0d07"
				m["entry"] = append(entryList(m), fifth)
			}),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.entry.resource.ofType(MedicationRequest)",
			diag: spineFailure + "lineItems over expected max count of 4"},
		{name: "intent absent", ref: facadeValidator + "validateMedicationRequests isPlanOrReflex (intent not read otherwise)",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { delete(r, "intent") }) })},
		{name: "intent proposal", ref: facadeValidator + "validateMedicationRequests isPlanOrReflex",
			body: acute(func(m msg) { eachMR(m, func(_ int, r msg) { r["intent"] = "proposal" }) })},

		// Bundle.identifier as Spine checks it.
		{name: "Bundle.identifier.value not a UUID", ref: spineCommon + "check_hl7_event_id (REGEX_GUID)",
			body: acute(func(m msg) { m["identifier"].(msg)["value"] = "message-1" }),
			code: fhir.CodeFailureToProcessMessage, issue: "processing", expr: "Bundle.identifier.value",
			diag: spineFailure + "hl7EventID has invalid format"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ref == "" {
				t.Fatal("the case names no reference")
			}
			m, err := fhir.DecodeMessage(tc.body)
			var o *fhir.Order
			if err == nil && !tc.decodeOnly {
				o, err = m.Order(now)
			}
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if tc.check != nil {
					tc.check(t, m, o)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			e, ok := err.(*fhir.Error)
			if !ok || e.Kind != fhir.KindInvalid {
				t.Fatalf("err %#v, want a KindInvalid *fhir.Error", err)
			}
			if e.Code != tc.code || e.IssueType != tc.issue || len(e.Expression) != 1 || e.Expression[0] != tc.expr {
				t.Errorf("got %s %s %q: %s\nwant %s %s %q", e.Code, e.IssueType, e.Expression, e.Diagnostics, tc.code, tc.issue, tc.expr)
			}
			if strings.TrimSpace(e.Diagnostics) == "" {
				t.Error("no diagnostics")
			}
			if tc.diag != "" && e.Diagnostics != tc.diag {
				t.Errorf("diagnostics %q, want %q", e.Diagnostics, tc.diag)
			}
		})
	}
}

// The tracker's details of an order read its medication and repeats as Order
// does: the SNOMED CT coding wherever it stands, a referenced Medication's,
// and numberOfRepeatsAllowed sent as a string.
func TestOrderDetailsReadAsOrder(t *testing.T) {
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, _ := tmpl.Order(fhirgen.Options{})
	body := fhirgen.Mutate(g.Body, func(m msg) {
		onItems("numberOfRepeatsAllowed", "6")(m)
		r := resource(m, eItem1)
		delete(r, "medicationCodeableConcept")
		r["medicationReference"] = msg{"reference": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11"}
		m["entry"] = append(entryList(m), msg{"fullUrl": "urn:uuid:5f0ed37b-0a4c-4f4b-9a64-6f4c3d9d2b11",
			"resource": msg{"resourceType": "Medication", "code": msg{"coding": []any{
				msg{"system": "https://dmd.nhs.uk", "code": "VMP-1"},
				msg{"system": fhir.SystemSNOMED, "code": "39732311000001104", "display": "Amoxicillin 250mg capsules"}}}}})
		resource(m, eItem2)["medicationCodeableConcept"] = msg{"coding": []any{
			msg{"system": "https://dmd.nhs.uk", "code": "VMP-2"},
			msg{"system": fhir.SystemSNOMED, "code": "322341003", "display": "Co-codamol 30mg/500mg tablets"}}}
	})
	m, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	o, err := m.Order(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d, err := fhir.DecodeOrderDetails(body)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"39732311000001104", "322341003"} {
		if o.Items[i].MedicationCode != want || d.Items[i].MedicationCode != want {
			t.Errorf("item %d: order reads %q, details %q, want %q", i, o.Items[i].MedicationCode, d.Items[i].MedicationCode, want)
		}
	}
	if d.Items[0].MedicationDisplay != "Amoxicillin 250mg capsules" || d.Items[0].RepeatsAllowed != 6 || o.RepeatsAllowed != 6 {
		t.Errorf("details %+v, order repeats %d", d.Items[0], o.RepeatsAllowed)
	}
}
