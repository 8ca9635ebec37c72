package fhir_test

// Conformance of the dispensing messages with the live EPS: one table per
// message kind (release, return and withdraw Task, dispense notification,
// claim, cancellation), a case for every rule the broker follows, accepted
// and refused. Each case names the reference it follows: a file and function
// of NHSDigital/electronic-prescription-service-api (the FHIR facade,
// packages/coordinator/src/services/, and its models/errors) or of
// NHSDigital/eps-spine-shared. Refused cases assert the EPS code, the FHIR
// issue type, the FHIRPath expression and the facade's words; accepted ones
// what the broker reads. The messages are generated (fhirgen) from NHS
// England's examples and edited (fhirgen.Mutate) into the other forms real
// systems send (NHS England's regression suite shapes most of them).

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// conformance is one case: the message (made by body), the reference it
// follows, and either the refusal expected (code, issueType, expression,
// and words the diagnostics start with) or, when code is "", a check of
// what the decoder returned.
type conformance struct {
	name, ref                   string
	body                        func(t *testing.T) []byte
	code, issueType, expression string
	words                       string
	check                       func(t *testing.T, v any)
}

// runConformance runs the cases with decode.
func runConformance(t *testing.T, cases []conformance, decode func(body []byte) (any, error)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ref == "" {
				t.Fatal("the case names no reference")
			}
			v, err := decode(tc.body(t))
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused (%s): %v", tc.ref, err)
				}
				if tc.check != nil {
					tc.check(t, v)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted (%s): %+v", tc.ref, v)
			}
			e, ok := err.(*fhir.Error)
			if !ok || e.Kind != fhir.KindInvalid {
				t.Fatalf("%T %v, want a *fhir.Error of KindInvalid", err, err)
			}
			if e.Code != tc.code || e.IssueType != tc.issueType || len(e.Expression) != 1 || e.Expression[0] != tc.expression {
				t.Errorf("got %s %s %q (%s), want %s %s %q (%s)", e.Code, e.IssueType, e.Expression, e.Diagnostics,
					tc.code, tc.issueType, tc.expression, tc.ref)
			}
			if !strings.HasPrefix(e.Diagnostics, tc.words) {
				t.Errorf("diagnostics %q, want %q... (%s)", e.Diagnostics, tc.words, tc.ref)
			}
		})
	}
}

// Generated messages.

const (
	dispenser   = "FA565"  // the pharmacy the generated order is nominated to
	prescriber  = "A83008" // the GP practice that sends the NHS example orders
	otherOrg    = "FCG71"
	extRepeat   = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"
	extUKRepeat = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
	extOrgRel   = "https://fhir.nhs.uk/StructureDefinition/Extension-ODS-OrganisationRelationships"
)

func generated(t *testing.T) *fhirgen.Generated {
	t.Helper()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{Performer: dispenser})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// allItems gives every line item of g the status.
func allItems(g *fhirgen.Generated, status string) map[string]string {
	m := map[string]string{}
	for _, id := range g.ItemIDs {
		m[id] = status
	}
	return m
}

// Decoded JSON helpers.

func obj(m map[string]any, key string) map[string]any {
	v, _ := m[key].(map[string]any)
	return v
}

func list(m map[string]any, key string) []any {
	v, _ := m[key].([]any)
	return v
}

func idx(l []any, i int) map[string]any {
	v, _ := l[i].(map[string]any)
	return v
}

// entryRes is the resource of Bundle.entry[k].
func entryRes(b map[string]any, k int) map[string]any {
	return obj(idx(list(b, "entry"), k), "resource")
}

// dispenses are the MedicationDispense resources of a Bundle.
func dispenses(b map[string]any) []map[string]any {
	var out []map[string]any
	for _, e := range list(b, "entry") {
		if r := obj(e.(map[string]any), "resource"); r["resourceType"] == "MedicationDispense" {
			out = append(out, r)
		}
	}
	return out
}

// ofType is the first resource of the Bundle of the given type.
func ofType(b map[string]any, typ string) map[string]any {
	for _, e := range list(b, "entry") {
		if r := obj(e.(map[string]any), "resource"); r["resourceType"] == typ {
			return r
		}
	}
	return nil
}

// contained is the contained resource of r of the given type.
func contained(r map[string]any, typ string) map[string]any {
	for _, c := range list(r, "contained") {
		if cm := c.(map[string]any); cm["resourceType"] == typ {
			return cm
		}
	}
	return nil
}

// odsIdentifier is an ODS identifier.
func odsIdentifier(ods string) map[string]any {
	return map[string]any{"system": fhir.SystemODSCode, "value": ods}
}

// repeatInfo is an Extension-EPS-RepeatInformation.
func repeatInfo(issued, allowed any) map[string]any {
	return map[string]any{"url": extRepeat, "extension": []any{
		map[string]any{"url": fhir.RepeatPartIssued, "valueInteger": issued},
		map[string]any{"url": fhir.RepeatPartAllowed, "valueInteger": allowed},
	}}
}

// ---------------------------------------------------------------------------
// Release

const refParams = "validation/parameters-validator.ts verifyParameters"

func TestConformanceRelease(t *testing.T) {
	const rx = "24F5DA-A83008-7EFE6Z"
	byID := func(edit func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body := fhirgen.Release(dispenser, rx)
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	param := func(m map[string]any, name string) map[string]any {
		for _, p := range list(m, "parameter") {
			if pm := p.(map[string]any); pm["name"] == name {
				return pm
			}
		}
		return nil
	}
	without := func(name string) func(m map[string]any) {
		return func(m map[string]any) {
			var keep []any
			for _, p := range list(m, "parameter") {
				if p.(map[string]any)["name"] != name {
					keep = append(keep, p)
				}
			}
			m["parameter"] = keep
		}
	}
	released := func(owner, id string) func(t *testing.T, v any) {
		return func(t *testing.T, v any) {
			if rr := v.(*fhir.ReleaseRequest); rr.Owner != owner || rr.PrescriptionID != id {
				t.Errorf("got %+v, want owner %s, prescription %q", rr, owner, id)
			}
		}
	}
	runConformance(t, []conformance{
		{name: "by ID, as generated", ref: refParams, body: byID(nil), check: released(dispenser, rx)},
		{name: "nominated (no group-identifier)", ref: refParams,
			body: func(t *testing.T) []byte { return fhirgen.Release(dispenser, "") }, check: released(dispenser, "")},
		{name: "no status parameter (optional)", ref: refParams + " (status is not read)", body: byID(without("status")), check: released(dispenser, rx)},
		{name: "status other than accepted (not read)", ref: refParams + " (status is not read)",
			body: byID(func(m map[string]any) { param(m, "status")["valueCode"] = "rejected" }), check: released(dispenser, rx)},
		{name: "no agent", ref: "translation/common/index.ts getAgentParameter (InvalidValueError)", body: byID(without("agent")),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Parameters.parameter", words: "Parameter with name agent not found"},
		{name: "agent not a PractitionerRole", ref: "translation/common/index.ts getAgentParameter (InvalidValueError)",
			body: byID(func(m map[string]any) { obj(param(m, "agent"), "resource")["resourceType"] = "Practitioner" }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Parameters.parameter[2].resource", words: "Parameter with name agent has wrong resourceType"},
		{name: "no owner", ref: refParams + " (missingRequiredParameter)", body: byID(without("owner")),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Parameters.parameter", words: "Required parameter owner is missing."},
		{name: "owner as an identifier, not an Organization", ref: refParams + " (getOwnerParameterOrNull, missingRequiredParameter)",
			body: byID(func(m map[string]any) {
				p := param(m, "owner")
				delete(p, "resource")
				p["valueIdentifier"] = odsIdentifier(dispenser)
			}),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Parameters.parameter", words: "Required parameter owner is missing."},
		{name: "agent.practitioner a reference", ref: refParams + " (fieldIsReferenceButShouldNotBe)",
			body: byID(func(m map[string]any) {
				obj(param(m, "agent"), "resource")["practitioner"] = map[string]any{"reference": "Practitioner/1"}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Parameters.parameter("agent").resource.practitioner`,
			words: `Parameters.parameter("agent").resource.practitioner populated incorrectly. Please populate with Identifier and Display.`},
		{name: "agent without telecom", ref: refParams + " (missingRequiredField)",
			body: byID(func(m map[string]any) { delete(obj(param(m, "agent"), "resource"), "telecom") }),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: `Parameters.parameter("agent").resource.telecom`,
			words: `Required field Parameters.parameter("agent").resource.telecom is missing.`},
		{name: "agent with an empty telecom", ref: refParams + " (missingRequiredField: !telecom?.length)",
			body: byID(func(m map[string]any) { obj(param(m, "agent"), "resource")["telecom"] = []any{} }),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: `Parameters.parameter("agent").resource.telecom`,
			words: `Required field Parameters.parameter("agent").resource.telecom is missing.`},
		{name: "group-identifier of another system (only its value is read)", ref: "translation/request/dispense/release.ts translateReleaseRequest (valueIdentifier.value)",
			body: byID(func(m map[string]any) {
				obj(param(m, "group-identifier"), "valueIdentifier")["system"] = "https://example.org/id"
			}),
			check: released(dispenser, rx)},
		{name: "group-identifier with a wrong check character", ref: "eps-spine-shared validation/common.py check_prescription_id",
			body: byID(func(m map[string]any) {
				obj(param(m, "group-identifier"), "valueIdentifier")["value"] = "24F5DA-A83008-7EFE6Y"
			}),
			code: fhir.CodeInvalidChecksum, issueType: "processing", expression: "Parameters.parameter[3].valueIdentifier.value"},
		{name: "owner ODS code of any form (compared with the caller's, not format-checked)",
			ref: "translation/request/agent-person.ts convertOrganization (getIdentifierValueForSystem, no format check)",
			body: byID(func(m map[string]any) {
				idx(list(obj(param(m, "owner"), "resource"), "identifier"), 0)["value"] = "VNE 51"
			}),
			check: released("VNE 51", rx)},
		{name: "owner without an ODS identifier", ref: "translation/request/agent-person.ts convertOrganization (getIdentifierValueForSystem: TooFewValuesError)",
			body: byID(func(m map[string]any) { obj(param(m, "owner"), "resource")["identifier"] = []any{} }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Organization.identifier",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemODSCode + "'."},
		{name: "owner with two ODS identifiers", ref: "translation/request/agent-person.ts convertOrganization (getIdentifierValueForSystem: TooManyValuesError)",
			body: byID(func(m map[string]any) {
				r := obj(param(m, "owner"), "resource")
				r["identifier"] = []any{odsIdentifier(dispenser), odsIdentifier(otherOrg)}
			}),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "Organization.identifier", words: "Too many values submitted."},
		{name: "two group-identifiers", ref: "translation/common/index.ts getIdentifierParameterOrNullByName (TooManyValuesError)",
			body: byID(func(m map[string]any) { m["parameter"] = append(list(m, "parameter"), param(m, "group-identifier")) }),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "Parameters.parameter", words: "Too many values submitted."},
		{name: "agent's practitioner named by a professional code", ref: refParams + " (getIdentifierValueForSystem sds-user-id: TooFewValuesError)",
			body: byID(func(m map[string]any) {
				obj(param(m, "agent"), "resource")["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gphc-number", "value": "2083469"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `parameters.parameter("PractitionerRole").practitioner.identifier`},
		{name: "agent with identifiers but no sds-role-profile-id", ref: refParams + " (getIdentifierValueForSystem sds-role-profile-id: TooFewValuesError)",
			body: byID(func(m map[string]any) {
				obj(param(m, "agent"), "resource")["identifier"] = []any{map[string]any{"system": "https://example.org/id", "value": "1"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `parameters.parameter("PractitionerRole").identifier`},
	}, func(body []byte) (any, error) { return fhir.DecodeReleaseRequest(body) })
}

// ---------------------------------------------------------------------------
// Return and withdraw

const (
	refTask     = "validation/task-validator.ts verifyTask"
	refReturn   = "translation/request/return/return.ts getRepeatNumberIssued"
	refWithdraw = "translation/request/withdraw/withdraw.ts convertTaskToEtpWithdraw"
	// refReturnTrans is the return's translation.
	refReturnTrans = "translation/request/return/return.ts convertTaskToDispenseProposalReturn"
	refMessageID   = "translation/common/index.ts getMessageId"
	refDateTime    = "translation/common/dateTime.ts convertIsoDateTimeStringToHl7V3DateTime"
)

func TestConformanceTask(t *testing.T) {
	ret := func(edit func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body := fhirgen.ReturnTask(generated(t), dispenser, "0003")
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	wd := func(edit func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body := fhirgen.WithdrawTask(generated(t), dispenser, "a14d4fc1-82a2-4a82-aae2-50e212e7b907", "MU")
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	// regressionShape is a return as NHS England's regression suite sends
	// it: no owner, the contained Organization naming the prescriber, the
	// contained ids and references urn:uuid: ones.
	regressionShape := func(m map[string]any) {
		delete(m, "owner")
		role, org := contained(m, "PractitionerRole"), contained(m, "Organization")
		role["id"], org["id"] = "urn:uuid:4d8b2f3e-8a2e-4c59-9d3a-5f1b7c2e9a01", "urn:uuid:0f0c2b7a-3f1d-4f7e-8c41-2a9b6c1d5e02"
		role["organization"] = map[string]any{"reference": "#urn:uuid:0f0c2b7a-3f1d-4f7e-8c41-2a9b6c1d5e02"}
		m["requester"] = map[string]any{"reference": "#urn:uuid:4d8b2f3e-8a2e-4c59-9d3a-5f1b7c2e9a01"}
		org["identifier"] = []any{odsIdentifier(prescriber)}
	}
	task := func(check func(t *testing.T, tr *fhir.TaskRequest)) func(t *testing.T, v any) {
		return func(t *testing.T, v any) { check(t, v.(*fhir.TaskRequest)) }
	}
	issue := func(kind string, n int) func(t *testing.T, v any) {
		return task(func(t *testing.T, tr *fhir.TaskRequest) {
			if tr.Kind != kind || tr.Issue != n {
				t.Errorf("%s issue %d, want %s issue %d", tr.Kind, tr.Issue, kind, n)
			}
		})
	}
	setRepeat := func(issued int) func(m map[string]any) {
		return func(m map[string]any) { m["extension"] = []any{repeatInfo(issued, 5)} }
	}
	runConformance(t, []conformance{
		{name: "return, as generated", ref: refTask, body: ret(nil), check: issue(fhir.TaskKindReturn, 0)},
		{name: "withdraw, as generated", ref: refTask, body: wd(nil), check: issue(fhir.TaskKindWithdraw, 0)},
		{name: "return as the regression suite sends it: contained Organization the prescriber's, no owner",
			ref: refTask + " (the organisations named are not checked)", body: ret(regressionShape),
			check: task(func(t *testing.T, tr *fhir.TaskRequest) {
				if tr.Owner != prescriber {
					t.Errorf("recorded owner %q, want %s as sent", tr.Owner, prescriber)
				}
			})},
		{name: "withdraw whose Task.owner names another organisation", ref: refTask + " (Task.owner is not checked)",
			body:  wd(func(m map[string]any) { m["owner"] = map[string]any{"identifier": odsIdentifier(otherOrg)} }),
			check: issue(fhir.TaskKindWithdraw, 0)},
		{name: "withdraw whose Task.owner is not a valid ODS code", ref: refTask + " (Task.owner is not checked)",
			body:  wd(func(m map[string]any) { m["owner"] = map[string]any{"identifier": odsIdentifier("not an ODS code")} }),
			check: issue(fhir.TaskKindWithdraw, 0)},
		{name: "return with code abort (a return's code is not checked)", ref: "validation/task-validator.ts validateReturn",
			body: ret(func(m map[string]any) { idx(list(obj(m, "code"), "coding"), 0)["code"] = "abort" }), check: issue(fhir.TaskKindReturn, 0)},
		{name: "return without code", ref: "validation/task-validator.ts validateReturn", body: ret(func(m map[string]any) { delete(m, "code") }),
			check: issue(fhir.TaskKindReturn, 0)},
		{name: "return of issue 1: numberOfRepeatsIssued 0", ref: refReturn + " (+1)", body: ret(setRepeat(0)), check: issue(fhir.TaskKindReturn, 1)},
		{name: "return of issue 3: numberOfRepeatsIssued 2", ref: refReturn + " (+1)", body: ret(setRepeat(2)), check: issue(fhir.TaskKindReturn, 3)},
		{name: "withdraw of issue 1: numberOfRepeatsIssued 0", ref: refWithdraw + " createPertinentInformation1 (+1)", body: wd(setRepeat(0)), check: issue(fhir.TaskKindWithdraw, 1)},
		{name: "withdraw of issue 3: numberOfRepeatsIssued 2 (as the return's 2)", ref: refWithdraw + " createPertinentInformation1 (+1)",
			body: wd(setRepeat(2)), check: issue(fhir.TaskKindWithdraw, 3)},
		{name: "withdraw without repeat information (optional)", ref: refWithdraw + " (getExtensionForUrlOrNull)",
			body: wd(func(m map[string]any) { delete(m, "extension") }), check: issue(fhir.TaskKindWithdraw, 0)},
		{name: "withdraw of numberOfRepeatsIssued -1", ref: refWithdraw + " (+1); Spine: issues from 1", body: wd(setRepeat(-1)),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.extension[0].extension[0].valueInteger"},
		{name: "return whose Task.for is not an NHS number (not read)", ref: refReturnTrans + " (no recordTarget)",
			body: ret(func(m map[string]any) {
				m["for"] = map[string]any{"identifier": map[string]any{"system": "https://example.org/patient", "value": "x"}}
			}),
			check: issue(fhir.TaskKindReturn, 0)},
		{name: "return whose Task.for is not a valid NHS number (not read)", ref: refReturnTrans + " (no recordTarget)",
			body: ret(func(m map[string]any) { obj(obj(m, "for"), "identifier")["value"] = "9449304131" }),
			check: task(func(t *testing.T, tr *fhir.TaskRequest) {
				if tr.NHSNumber != "" {
					t.Errorf("NHS number %q recorded, want none", tr.NHSNumber)
				}
			})},
		{name: "withdraw whose Task.for is not a valid NHS number", ref: refWithdraw + " createRecordTarget; eps-spine-shared validation/common.py check_nhs_number",
			body: wd(func(m map[string]any) { obj(obj(m, "for"), "identifier")["value"] = "9449304131" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.for.identifier.value"},
		{name: "return without Task.for", ref: refReturnTrans + " (no recordTarget)",
			body: ret(func(m map[string]any) { delete(m, "for") }), check: issue(fhir.TaskKindReturn, 0)},
		{name: "return whose role names its organisation by identifier", ref: refReturnTrans + " (the organization is resolved only when a reference)",
			body: ret(func(m map[string]any) {
				contained(m, "PractitionerRole")["organization"] = map[string]any{"identifier": odsIdentifier(dispenser)}
			}), check: issue(fhir.TaskKindReturn, 0)},
		{name: "withdraw whose Task.for is of another system", ref: refWithdraw + " createRecordTarget (getIdentifierValueForSystem: TooFewValuesError)",
			body: wd(func(m map[string]any) { obj(obj(m, "for"), "identifier")["system"] = "https://example.org/patient" }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.for.identifier",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemNHSNumber + "'."},
		{name: "withdraw without Task.for", ref: refWithdraw + " createRecordTarget (getIdentifierValueForSystem: TooFewValuesError)",
			body: wd(func(m map[string]any) { delete(m, "for") }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.for.identifier"},
		{name: "withdraw whose role names its organisation by identifier", ref: refWithdraw + " (InvalidValueError)",
			body: wd(func(m map[string]any) {
				contained(m, "PractitionerRole")["organization"] = map[string]any{"identifier": odsIdentifier(dispenser)}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `task.contained("PractitionerRole").organization`,
			words: "practitionerRole.organization should be a Reference"},
		{name: "withdraw whose role's organization names no contained resource", ref: refWithdraw + " (getContainedOrganizationViaReference)",
			body: wd(func(m map[string]any) {
				contained(m, "PractitionerRole")["organization"] = map[string]any{"reference": "#nowhere"}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `task.contained("PractitionerRole").organization`,
			words: "Contained resource with reference #nowhere not found"},
		{name: "return whose role's organization names the PractitionerRole", ref: refReturnTrans + " (getContainedOrganizationViaReference)",
			body: ret(func(m map[string]any) {
				role := contained(m, "PractitionerRole")
				role["organization"] = map[string]any{"reference": "#" + role["id"].(string)}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `task.contained("PractitionerRole").organization`, words: "Contained resource with reference #"},
		{name: "return whose identifier is of another system", ref: refMessageID + " (TooFewValuesError)",
			body: ret(func(m map[string]any) { idx(list(m, "identifier"), 0)["system"] = "https://example.org/id" }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.identifier",
			words: "Too few values submitted. Expected 1 element where system == 'https://tools.ietf.org/html/rfc4122'."},
		{name: "withdraw with two rfc4122 identifiers", ref: refMessageID + " (TooManyValuesError)",
			body: wd(func(m map[string]any) { m["identifier"] = append(list(m, "identifier"), idx(list(m, "identifier"), 0)) }),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "Task.identifier"},
		{name: "return with an empty identifier list", ref: refMessageID + " (getIdentifierValueForSystem: TooFewValuesError)",
			body: ret(func(m map[string]any) { m["identifier"] = []any{} }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.identifier"},
		{name: "return without identifier", ref: refMessageID + " (getIdentifierValueForSystem: InvalidValueError)",
			body: ret(func(m map[string]any) { delete(m, "identifier") }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Task.identifier", words: "Required field missing."},
		{name: "return with authoredOn a date", ref: refDateTime + " (a date alone is a FHIR dateTime)",
			body: ret(func(m map[string]any) { m["authoredOn"] = "2022-11-29" }), check: issue(fhir.TaskKindReturn, 0)},
		{name: "withdraw with authoredOn without seconds", ref: refDateTime + " (InvalidValueError)",
			body: wd(func(m map[string]any) { m["authoredOn"] = "2022-11-29T11:45+00:00" }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Task.authoredOn",
			words: "Incorrect format for date time string '2022-11-29T11:45+00:00'."},
		{name: "return without authoredOn", ref: refDateTime + " (InvalidValueError)",
			body: ret(func(m map[string]any) { delete(m, "authoredOn") }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Task.authoredOn", words: "Incorrect format for date time string 'undefined'."},
		{name: "return without focus", ref: refReturnTrans + " createReversalOf",
			body: ret(func(m map[string]any) { delete(m, "focus") }),
			code: fhir.CodeMissingValue, issueType: "required", expression: "Task.focus.identifier"},
		{name: "return whose focus identifier is of another system", ref: refReturnTrans + " createReversalOf (getMessageIdFromTaskFocusIdentifier: TooFewValuesError)",
			body: ret(func(m map[string]any) { obj(obj(m, "focus"), "identifier")["system"] = "https://example.org/id" }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.focus.identifier"},
		{name: "return of numberOfRepeatsIssued 99 (issue 100)", ref: refReturn + "; Spine: at most 99 issues", body: ret(setRepeat(99)),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.extension[0].extension[0].valueInteger"},

		{name: "intent plan", ref: refTask + " (createTaskIncorrectValueIssue)", body: ret(func(m map[string]any) { m["intent"] = "plan" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.intent", words: "Task.intent must be one of: 'order'."},
		{name: "requester not a reference", ref: refTask + " (InvalidValueError)",
			body: ret(func(m map[string]any) { m["requester"] = map[string]any{"identifier": odsIdentifier(dispenser)} }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "task.requester", words: "task.requester should be a reference to contained.practitionerRole"},
		{name: "requester names no contained resource", ref: "translation/common/getResourcesOfType.ts getContainedPractitionerRoleViaReference",
			body: ret(func(m map[string]any) { m["requester"] = map[string]any{"reference": "#nobody"} }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Task.requester", words: "Contained resource with reference #nobody not found"},
		{name: "requester names the contained Organization", ref: "translation/common/getResourcesOfType.ts getContainedPractitionerRoleViaReference",
			body: ret(func(m map[string]any) {
				m["requester"] = map[string]any{"reference": "#" + contained(m, "Organization")["id"].(string)}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Task.requester", words: "Contained resource with reference #organization is not of type PractitionerRole"},
		{name: "the requester's practitioner a reference", ref: refTask + " (fieldIsReferenceButShouldNotBe)",
			body: ret(func(m map[string]any) {
				contained(m, "PractitionerRole")["practitioner"] = map[string]any{"reference": "Practitioner/1"}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Task.contained("PractitionerRole").practitioner`,
			words: `Task.contained("PractitionerRole").practitioner populated incorrectly. Please populate with Identifier and Display.`},
		{name: "status completed", ref: "validation/task-validator.ts performStatusSpecificValidation",
			body: ret(func(m map[string]any) { m["status"] = "completed" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.status", words: "Task.status must be one of: 'in-progress', 'rejected'."},
		{name: "withdraw without code", ref: "validation/task-validator.ts validateWithdraw",
			body: wd(func(m map[string]any) { delete(m, "code") }),
			code: fhir.CodeMissingValue, issueType: "value", expression: "Task.code", words: "Task.code is required when Task.status is 'in-progress'."},
		{name: "withdraw code of another system", ref: "validation/task-validator.ts validateWithdraw (getCodeableConceptCodingForSystem: TooFewValuesError)",
			body: wd(func(m map[string]any) {
				idx(list(obj(m, "code"), "coding"), 0)["system"] = "https://example.org/task-code"
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.code.coding", words: "Too few values submitted."},
		{name: "withdraw with code fulfill", ref: "validation/task-validator.ts validateWithdraw",
			body: wd(func(m map[string]any) { idx(list(obj(m, "code"), "coding"), 0)["code"] = "fulfill" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.code.coding.code", words: "Task.code.coding.code must be one of: 'abort'."},
		{name: "return with a withdraw reason", ref: "validation/task-validator.ts validateReasonCode (createTaskCodingSystemIssue)",
			body: ret(func(m map[string]any) {
				m["statusReason"] = map[string]any{"coding": []any{map[string]any{"system": fhir.SystemWithdrawReason, "code": "MU"}}}
			}),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.reasonCode",
			words: "Task.reasonCode must have a system of '" + fhir.SystemReturnReason + "' and a value from that system."},
		{name: "withdraw without reason", ref: "validation/task-validator.ts validateReasonCode (createTaskCodingSystemIssue)",
			body: wd(func(m map[string]any) { delete(m, "statusReason") }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.reasonCode",
			words: "Task.reasonCode must have a system of '" + fhir.SystemWithdrawReason + "' and a value from that system."},
		{name: "withdraw reason not on Spine's list", ref: "eps-spine-shared validation/constants.py WITHDRAW_RSONLIST",
			body: wd(func(m map[string]any) { idx(list(obj(m, "statusReason"), "coding"), 0)["code"] = "XX" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Task.statusReason.coding[0].code"},
		{name: "groupIdentifier of another system", ref: "translation/request/task.ts getPrescriptionShortFormIdFromTaskGroupIdentifier (TooFewValuesError)",
			body: ret(func(m map[string]any) { obj(m, "groupIdentifier")["system"] = "https://example.org/id" }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.groupIdentifier",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemPrescriptionID + "'."},
		{name: "withdraw: groupIdentifier without system", ref: "translation/request/task.ts getPrescriptionShortFormIdFromTaskGroupIdentifier (TooFewValuesError)",
			body: wd(func(m map[string]any) { delete(obj(m, "groupIdentifier"), "system") }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Task.groupIdentifier"},
		{name: "groupIdentifier with a wrong check character", ref: "eps-spine-shared validation/common.py check_prescription_id",
			body: ret(func(m map[string]any) {
				gi := obj(m, "groupIdentifier")
				v := gi["value"].(string)
				last := byte('A')
				if v[len(v)-1] == 'A' {
					last = 'B'
				}
				gi["value"] = v[:len(v)-1] + string(last)
			}),
			code: fhir.CodeInvalidChecksum, issueType: "processing", expression: "Task.groupIdentifier.value"},
		{name: "groupIdentifier's long-form extension not a UUID (not read)", ref: refReturnTrans + " (groupIdentifier.extension is not read)",
			body: ret(func(m map[string]any) {
				obj(m, "groupIdentifier")["extension"] = []any{map[string]any{"url": fhir.ExtPrescriptionLongID, "valueIdentifier": map[string]any{"value": "20ba5fb5"}}}
			}),
			check: task(func(t *testing.T, tr *fhir.TaskRequest) {
				if tr.LongID != "" {
					t.Errorf("long ID %q recorded", tr.LongID)
				}
			})},
		{name: "owner's ODS code of any form (recorded, not checked)", ref: refReturnTrans + " (Task.owner is not read)",
			body: ret(func(m map[string]any) { m["owner"] = map[string]any{"identifier": odsIdentifier("F A 565")} }),
			check: task(func(t *testing.T, tr *fhir.TaskRequest) {
				if tr.Owner != "F A 565" {
					t.Errorf("owner %q, want as sent", tr.Owner)
				}
			})},
		{name: "the requester's practitioner named by a professional code", ref: refTask + " (getIdentifierValueForSystem sds-user-id: TooFewValuesError)",
			body: ret(func(m map[string]any) {
				contained(m, "PractitionerRole")["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gphc-number", "value": "2083469"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `task.contained("PractitionerRole").practitioner.identifier`},
		{name: "the requester's role with identifiers but no sds-role-profile-id", ref: refTask + " (getIdentifierValueForSystem sds-role-profile-id: TooFewValuesError)",
			body: wd(func(m map[string]any) {
				contained(m, "PractitionerRole")["identifier"] = []any{map[string]any{"system": "https://example.org/id", "value": "1"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `task.contained("PractitionerRole").identifier`},
		{name: "a thrown error comes before a collected one (intent plan, practitioner by professional code)", ref: refTask + " (throws before it returns its issues)",
			body: ret(func(m map[string]any) {
				m["intent"] = "plan"
				contained(m, "PractitionerRole")["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gphc-number", "value": "2083469"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `task.contained("PractitionerRole").practitioner.identifier`},
	}, func(body []byte) (any, error) { return fhir.DecodeTaskRequest(body) })
}

// ---------------------------------------------------------------------------
// Dispense notification

const (
	refDispense = "validation/bundle-validator.ts verifyDispenseBundle"
	refDNTrans  = "translation/request/dispense/dispense-notification.ts"
)

func TestConformanceDispense(t *testing.T) {
	// dn makes a dispense notification by the nominated pharmacy of every
	// line item of a generated order (each 0001, Dispensed), edited.
	dn := func(edit func(b map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			g := generated(t)
			body, _ := fhirgen.DispenseNotification(g, dispenser, allItems(g, "0001"), "0006", "")
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	// erd is dn for issue n of 6 of a repeat dispensing prescription.
	erd := func(n int, edit func(b map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body := fhirgen.ForIssue(dn(nil)(t), n, 6)
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	eachMD := func(fn func(md map[string]any)) func(b map[string]any) {
		return func(b map[string]any) {
			for _, md := range dispenses(b) {
				fn(md)
			}
		}
	}
	firstMD := func(fn func(md map[string]any)) func(b map[string]any) {
		return func(b map[string]any) { fn(dispenses(b)[0]) }
	}
	secondMD := func(fn func(md map[string]any)) func(b map[string]any) {
		return func(b map[string]any) { fn(dispenses(b)[1]) }
	}
	noSender := func(b map[string]any) { delete(entryRes(b, 0), "sender") }
	prescriberOrg := func(b map[string]any) {
		org := ofType(b, "Organization")
		org["identifier"] = []any{odsIdentifier(prescriber)}
		org["name"] = "The Prescriber's Practice"
	}
	decoded := func(check func(t *testing.T, n *fhir.DispenseNotification)) func(t *testing.T, v any) {
		return func(t *testing.T, v any) { check(t, v.(*fhir.DispenseNotification)) }
	}
	issue := func(want int) func(t *testing.T, v any) {
		return decoded(func(t *testing.T, n *fhir.DispenseNotification) {
			if n.Issue != want {
				t.Errorf("issue %d, want %d", n.Issue, want)
			}
		})
	}
	basedOnIssued := func(v any) func(md map[string]any) {
		return func(md map[string]any) {
			mr := contained(md, "MedicationRequest")
			idx(list(idx(list(idx(list(mr, "basedOn"), 0), "extension"), 0), "extension"), 1)["valueInteger"] = v
		}
	}
	const medDispense = "Bundle.entry.resource.ofType(MedicationDispense)"
	runConformance(t, []conformance{
		{name: "as generated", ref: refDispense, body: dn(nil), check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {
			if n.Sender != dispenser || n.PrescriptionStatus != "0006" || len(n.Items) != 4 || n.Issue != 0 {
				t.Errorf("got %+v", n)
			}
		})},
		{name: "no MessageHeader.sender", ref: refDispense + "; " + refDNTrans + " (the sender is never read)", body: dn(noSender),
			check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {
				if n.Sender != "" {
					t.Errorf("sender %q, want none", n.Sender)
				}
			})},
		{name: "MessageHeader.sender naming the prescriber", ref: refDNTrans + " (the sender is never read)",
			body: dn(func(b map[string]any) { obj(entryRes(b, 0), "sender")["identifier"] = odsIdentifier(prescriber) }),
			check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {
				if n.Sender != prescriber {
					t.Errorf("sender %q, want %s recorded as sent", n.Sender, prescriber)
				}
			})},
		{name: "the performer's Organization is the prescriber's, no sender", ref: refDispense + " (only its reimbursement authority is checked)",
			body: dn(func(b map[string]any) { noSender(b); prescriberOrg(b) }), check: issue(0)},
		{name: "stated Dispensed while an item is owed", ref: "eps-spine-shared common/prescription/record.py update_for_dispense (the status stated is taken)",
			body: dn(firstMD(func(md map[string]any) {
				obj(md, "type")["coding"] = []any{map[string]any{"system": fhir.SystemDispenseType, "code": "0004"}}
			})),
			check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {
				if n.PrescriptionStatus != "0006" || n.Items[0].Status != "0004" {
					t.Errorf("status %s, item %s", n.PrescriptionStatus, n.Items[0].Status)
				}
			})},
		{name: "the MedicationDispenses state different prescription statuses: the first counts", ref: refDNTrans + " createPrescriptionStatus",
			body: dn(secondMD(func(md map[string]any) {
				idx(list(md, "extension"), 0)["valueCoding"] = map[string]any{"system": fhir.SystemTaskBusinessStatus, "code": "0003"}
			})),
			check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {
				if n.PrescriptionStatus != "0006" {
					t.Errorf("status %s, want the first MedicationDispense's 0006", n.PrescriptionStatus)
				}
			})},
		{name: "a non-dispensing reason on one MedicationDispense only", ref: refDNTrans + " supplyHeaderPertinentInformation2Required",
			body: dn(firstMD(func(md map[string]any) {
				md["extension"] = append(list(md, "extension"), map[string]any{"url": fhir.ExtNonDispensingReason,
					"valueCoding": map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason", "code": "0004"}})
			})), check: issue(0)},
		{name: "issue 1: basedOn numberOfRepeatsIssued 0, UK Core numberOfPrescriptionsIssued 1", ref: refDNTrans + " createPertinentInformation1 (+1), createDispenseNotificationSupplyHeaderPertinentInformation1",
			body: erd(1, nil), check: issue(1)},
		{name: "issue 4 of 6", ref: refDNTrans + " createPertinentInformation1 (+1)", body: erd(4, nil), check: issue(4)},
		{name: "issue 1 as the regression suite sends it: the MedicationDispenses' own numberOfRepeatsIssued 1 (not read)", ref: refDNTrans + " (the MedicationDispense's extension is not translated)",
			body: erd(1, eachMD(func(md map[string]any) {
				for _, x := range list(md, "extension") {
					if e := x.(map[string]any); e["url"] == extRepeat {
						e["extension"] = repeatInfo(1, 6)["extension"]
					}
				}
			})), check: issue(1)},
		{name: "only the UK Core repeat information (from 1)", ref: refDNTrans + " createDispenseNotificationSupplyHeaderPertinentInformation1",
			body: erd(2, eachMD(func(md map[string]any) {
				delete(contained(md, "MedicationRequest"), "basedOn")
				var keep []any
				for _, x := range list(md, "extension") {
					if x.(map[string]any)["url"] != extRepeat {
						keep = append(keep, x)
					}
				}
				md["extension"] = keep
			})), check: issue(2)},
		{name: "numberOfRepeatsAllowed a JSON string in the contained MedicationRequest", ref: "translation/request/dispense/dispense-common.ts parseNumberOfRepeatsAllowed",
			body: erd(1, eachMD(func(md map[string]any) {
				obj(contained(md, "MedicationRequest"), "dispenseRequest")["numberOfRepeatsAllowed"] = "5"
				basedOn := idx(list(contained(md, "MedicationRequest"), "basedOn"), 0)
				idx(list(idx(list(basedOn, "extension"), 0), "extension"), 0)["valueInteger"] = "5"
			})), check: issue(1)},
		{name: "basedOn numberOfRepeatsIssued 99 (issue 100)", ref: refDNTrans + "; Spine: at most 99 issues",
			body: erd(1, eachMD(basedOnIssued(99))),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Bundle.entry[1].resource.contained[1].basedOn[0].extension[0].extension[1].valueInteger"},
		{name: "a second identifier of another system on a MedicationDispense", ref: refDNTrans + " getPrescriptionItemNumber (getIdentifierValueForSystem)",
			body: dn(secondMD(func(md map[string]any) {
				md["identifier"] = append(list(md, "identifier"), map[string]any{"system": "https://example.org/id", "value": "x"})
			})), check: decoded(func(t *testing.T, n *fhir.DispenseNotification) {})},
		{name: "a MedicationDispense identifier of another system", ref: refDNTrans + " getPrescriptionItemNumber (TooFewValuesError)",
			body: dn(secondMD(func(md map[string]any) { idx(list(md, "identifier"), 0)["system"] = "https://example.org/id" })),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationDispense.identifier",
			words: "Too few values submitted. Expected 1 element where system == 'https://fhir.nhs.uk/Id/prescription-dispense-item-number'."},
		{name: "two dispense item numbers on a MedicationDispense", ref: refDNTrans + " getPrescriptionItemNumber (TooManyValuesError)",
			body: dn(secondMD(func(md map[string]any) {
				md["identifier"] = append(list(md, "identifier"), idx(list(md, "identifier"), 0))
			})),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "MedicationDispense.identifier",
			words: "Too many values submitted. Expected 1 element where system == 'https://fhir.nhs.uk/Id/prescription-dispense-item-number'."},
		{name: "a MedicationDispense without identifier", ref: refDNTrans + " getPrescriptionItemNumber (InvalidValueError)",
			body: dn(secondMD(func(md map[string]any) { delete(md, "identifier") })),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "MedicationDispense.identifier", words: "Required field missing."},
		{name: "authorizingPrescription by identifier and Extension-DM-GroupIdentifier, no contained MedicationRequest",
			ref: refDNTrans + " mapMedicationDispenses (getContainedMedicationRequestViaReference: only a reference is read)",
			body: dn(firstMD(func(md map[string]any) {
				mr := contained(md, "MedicationRequest")
				md["authorizingPrescription"] = []any{map[string]any{"identifier": idx(list(mr, "identifier"), 0),
					"extension": []any{map[string]any{"url": fhir.ExtGroupIdentifier, "extension": []any{
						map[string]any{"url": "shortForm", "valueIdentifier": obj(mr, "groupIdentifier")},
					}}}}}
			})),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[1].resource.authorizingPrescription[0].reference"},
		{name: "authorizingPrescription naming no contained resource", ref: "translation/common/getResourcesOfType.ts getContainedMedicationRequestViaReference",
			body: dn(firstMD(func(md map[string]any) {
				md["authorizingPrescription"] = []any{map[string]any{"reference": "#nothing"}}
			})),
			// (the broker's reference check of the whole message answers first, at the same place)
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[1].resource.authorizingPrescription[0].reference"},

		{name: "whenHandedOver differs", ref: refDispense + " (verifyIdenticalForAllMedicationDispenses)",
			body: dn(secondMD(func(md map[string]any) { md["whenHandedOver"] = "2020-01-01T00:00:00+00:00" })),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + ".whenHandedOver",
			words: "Expected all MedicationDispenses to have the same value for whenHandedOver. Received ["},
		{name: "whenHandedOver on some only", ref: refDispense + " (verifyIdenticalForAllMedicationDispenses)",
			body: dn(secondMD(func(md map[string]any) { delete(md, "whenHandedOver") })),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + ".whenHandedOver",
			words: "Expected all MedicationDispenses to have the same value for whenHandedOver. Received ["},
		{name: "whenHandedOver on none", ref: refDNTrans + " convertDispenseNotification (effectiveTime)",
			body: dn(eachMD(func(md map[string]any) { delete(md, "whenHandedOver") })),
			code: fhir.CodeMissingValue, issueType: "required", expression: "Bundle.entry[1].resource.whenHandedOver"},
		{name: "subject identifier differs", ref: refDispense + " (verifyIdenticalForAllMedicationDispenses)",
			body: dn(secondMD(func(md map[string]any) { obj(obj(md, "subject"), "identifier")["value"] = "9990548609" })),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + ".subject.identifier.value",
			words: `Expected all MedicationDispenses to have the same value for subject.identifier.value. Received ["`},
		{name: "Extension-EPS-RepeatInformation differs", ref: refDispense + " (verifyIdenticalForAllMedicationDispenses)",
			body: erd(2, secondMD(func(md map[string]any) {
				for _, x := range list(md, "extension") {
					if e := x.(map[string]any); e["url"] == extRepeat {
						e["extension"] = repeatInfo(3, 5)["extension"]
					}
				}
			})),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + `.extension("` + extRepeat + `")`,
			words: `Expected all MedicationDispenses to have the same value for extension("` + extRepeat + `"). Received [`},
		{name: "Extension-EPS-RepeatInformation on some only", ref: refDispense + " (verifyIdenticalForAllMedicationDispenses)",
			body: erd(2, secondMD(func(md map[string]any) { md["extension"] = list(md, "extension")[:1] })),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + `.extension("` + extRepeat + `")`},
		{name: "performer differs", ref: refDispense + " (uniquePractitionerRoles)",
			body: dn(secondMD(func(md map[string]any) {
				contained(md, "PractitionerRole")["id"] = "performer2"
				idx(list(md, "performer"), 0)["actor"] = map[string]any{"reference": "#performer2"}
			})),
			code: fhir.CodeInvalidValue, issueType: "value", expression: medDispense + ".performer",
			words: `Expected all MedicationDispenses to have the same value for performer. Received [{"reference":"#performer"},{"reference":"#performer2"}].`},
		{name: "performer missing on one", ref: refDispense + " (createMedicationDispenseMissingValueIssue)",
			body: dn(secondMD(func(md map[string]any) { md["performer"] = []any{} })),
			code: fhir.CodeMissingValue, issueType: "value", expression: medDispense + ".performer.ofType(PractitionerRole)",
			words: "Expected MedicationDispense to have a value for performer.ofType(PractitionerRole)."},
		{name: "both medicationCodeableConcept and medicationReference", ref: refDispense + " (createMedicationFieldIssue)",
			body: dn(secondMD(func(md map[string]any) { md["medicationReference"] = map[string]any{"display": "Amoxicillin"} })),
			code: fhir.CodeConflictingValues, issueType: "structure", expression: "Bundle.entry[2].resource",
			words: "MedicationDispense cannot contain both medicationReference and medicationCodeableConcept fields."},
		{name: "the contained PractitionerRole's practitioner a reference", ref: refDispense + " (fieldIsReferenceButShouldNotBe)",
			body: dn(eachMD(func(md map[string]any) {
				contained(md, "PractitionerRole")["practitioner"] = map[string]any{"reference": "Practitioner/7654321"}
			})),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Bundle.entry("PractitionerRole").practitioner`,
			words: `Bundle.entry("PractitionerRole").practitioner populated incorrectly. Please populate with Identifier and Display.`},
		{name: "the PractitionerRole's organization not a reference", ref: refDispense + " (InvalidValueError)",
			body: dn(eachMD(func(md map[string]any) {
				contained(md, "PractitionerRole")["organization"] = map[string]any{"identifier": odsIdentifier(dispenser)}
			})),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `resource("MedicationDispense").contained("organization")`,
			words: "fhirContainedPractitionerRole.organization should be a Reference"},
		{name: "the PractitionerRole's organization names no entry", ref: "translation/common/index.ts getResourceForFullUrl (TooFewValuesError)",
			body: dn(eachMD(func(md map[string]any) {
				contained(md, "PractitionerRole")["organization"] = map[string]any{"reference": "urn:uuid:9d3b5a1c-0000-4000-8000-000000000001"}
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry", words: "Too few values submitted."},
		{name: "the Organization's telecom without use", ref: "validation/bundle-validator.ts verifyCommonBundle validateTelecoms (missingRequiredField)",
			body: dn(func(b map[string]any) { delete(idx(list(ofType(b, "Organization"), "telecom"), 0), "use") }),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Bundle.entry[5].resource.telecom[0].use",
			words: "Required field bundle.entry[5].resource.telecom[0].use is missing."},
		{name: "no reimbursement authority", ref: refDispense + " (createMissingReimbursementAuthority)",
			body: dn(func(b map[string]any) { delete(ofType(b, "Organization"), "extension") }),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Organization.extension",
			words: "The dispense notification is missing the reimbursement authority and it should be provided."},
		{name: "no reimbursement authority ODS code", ref: refDispense + " (createMissingODSCodeForReimbursementAuthority)",
			body: dn(func(b map[string]any) {
				ofType(b, "Organization")["extension"] = []any{map[string]any{"url": extOrgRel, "extension": []any{}}}
			}),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Organization.extension[0].extension[0]",
			words: "The dispense notification is missing the ODS code for reimbursement authority and it should be provided."},

		// What EPS reads, and only that (issue 10: no Bundle-wide reference
		// check, no ODS format check, no groupIdentifier.system check).
		{name: "contained MedicationRequest's groupIdentifier of another system (only its value is read)",
			ref: refDNTrans + " createPrescriptionId (groupIdentifier.value)",
			body: dn(eachMD(func(md map[string]any) {
				obj(contained(md, "MedicationRequest"), "groupIdentifier")["system"] = "https://example.org/id"
			})),
			check: func(t *testing.T, v any) {
				if dn := v.(*fhir.DispenseNotification); dn.PrescriptionID == "" {
					t.Errorf("no prescription ID: %+v", dn)
				}
			}},
		{name: "contained MedicationRequest's references name resources elsewhere, or nothing (not read)",
			ref: refDNTrans + " (only authorizingPrescription and performer.actor are resolved)",
			body: dn(eachMD(func(md map[string]any) {
				mr := contained(md, "MedicationRequest")
				mr["subject"] = map[string]any{"reference": "#nowhere"}
				mr["requester"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
			}))},
		{name: "MedicationDispense.subject of another system (its value is read)", ref: refDNTrans + " getNhsNumber (subject.identifier.value)",
			body: dn(eachMD(func(md map[string]any) { obj(obj(md, "subject"), "identifier")["system"] = "https://example.org/nhs" })),
			check: func(t *testing.T, v any) {
				if dn := v.(*fhir.DispenseNotification); dn.NHSNumber == "" {
					t.Errorf("no NHS number: %+v", dn)
				}
			}},
		{name: "a Patient entry's NHS number is read before the subject's", ref: refDNTrans + " getNhsNumber (getPatientOrNull)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000001",
					"resource": map[string]any{"resourceType": "Patient", "identifier": []any{map[string]any{"system": fhir.SystemNHSNumber, "value": "9449304130"}}}})
			}),
			check: func(t *testing.T, v any) {
				if dn := v.(*fhir.DispenseNotification); dn.NHSNumber != "9449304130" {
					t.Errorf("NHS number %q, want the Patient's", dn.NHSNumber)
				}
			}},
		{name: "a Patient entry without an NHS number", ref: refDNTrans + " getNhsNumber; eps-spine-shared validation/common.py check_nhs_number",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000001",
					"resource": map[string]any{"resourceType": "Patient"}})
			}),
			code: fhir.CodeMissingValue, issueType: "required", expression: "Bundle.entry[6].resource.identifier"},
		{name: "the Organization's and the prescriber's ODS codes of any form (recorded, not checked)",
			ref: refDNTrans + " (no Spine rule in the reference checks a dispensing message's organisations)",
			body: dn(func(b map[string]any) {
				ofType(b, "Organization")["identifier"] = []any{odsIdentifier("F A 565")}
				for _, md := range dispenses(b) {
					mr := contained(md, "MedicationRequest")
					obj(obj(mr, "dispenseRequest"), "performer")["identifier"] = odsIdentifier("F A 565")
				}
			})},
		{name: "two entries with the Organization's fullUrl", ref: "translation/common/index.ts getResourceForFullUrl (TooManyValuesError)",
			body: dn(func(b map[string]any) {
				var org map[string]any
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "Organization" {
						org = em
					}
				}
				b["entry"] = append(list(b, "entry"), org)
			}),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "Bundle.entry", words: "Too many values submitted."},
		{name: "duplicate fullUrls EPS does not resolve", ref: refDNTrans + " (getResourceForFullUrl only for what is read)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-00000000000a", "resource": map[string]any{"resourceType": "Basic"}},
					map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-00000000000a", "resource": map[string]any{"resourceType": "Basic"}})
			})},
		{name: "a PractitionerRole entry's organization not a reference", ref: refCommon + " validatePractitionerRole (fieldIsNotReferenceButShouldBe)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000002",
					"resource": map[string]any{"resourceType": "PractitionerRole", "organization": map[string]any{"identifier": odsIdentifier(dispenser)}}})
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[6].resource.organization",
			words: "practitionerRole.organization populated incorrectly. Please populate with Reference to resource within Bundle."},
		{name: "a PractitionerRole entry's practitioner names no entry", ref: refCommon + " validatePractitionerRole (resolveReference: TooFewValuesError)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000002",
					"resource": map[string]any{"resourceType": "PractitionerRole", "practitioner": map[string]any{"reference": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000003"},
						"organization": map[string]any{"reference": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000004"}}})
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry",
			words: "Too few values submitted. Expected 1 element where fullUrl == 'urn:uuid:5e3ad0b4-0000-4000-8000-000000000003'."},
		{name: "a PractitionerRole entry with identifiers but no sds-role-profile-id", ref: refCommon + " verifyPractitionerRoleID (getIdentifierValueForSystem: TooFewValuesError)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000002",
					"resource": map[string]any{"resourceType": "PractitionerRole", "identifier": []any{map[string]any{"system": "https://example.org/id", "value": "1"}},
						"organization": map[string]any{"reference": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000004"}}})
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `Bundle.entry("PractitionerRole").identifier`},
		{name: "a Practitioner entry's telecom without value", ref: refCommon + " validateTelecoms (getPathedTelecoms: Practitioner)",
			body: dn(func(b map[string]any) {
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": "urn:uuid:5e3ad0b4-0000-4000-8000-000000000005",
					"resource": map[string]any{"resourceType": "Practitioner", "telecom": []any{map[string]any{"use": "work"}}}})
			}),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Bundle.entry[6].resource.telecom[0].value"},
		{name: "a contained PractitionerRole's telecom without use (contained: not checked)", ref: refCommon + " validateTelecoms (entries only)",
			body: dn(eachMD(func(md map[string]any) { delete(idx(list(contained(md, "PractitionerRole"), "telecom"), 0), "use") }))},
		{name: "type coding of another system", ref: refDNTrans + " getPrescriptionLineItemStatus (getCodingForSystem: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) { idx(list(obj(md, "type"), "coding"), 0)["system"] = "https://example.org/cs" })),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationDispense.type.coding",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemDispenseType + "'."},
		{name: "two type codings of medicationdispense-type", ref: refDNTrans + " getPrescriptionLineItemStatus (getCodingForSystem: TooManyValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				ty := obj(md, "type")
				ty["coding"] = append(list(ty, "coding"), list(ty, "coding")[0])
			})),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "MedicationDispense.type.coding"},
		{name: "no Extension-EPS-TaskBusinessStatus on the first", ref: refDNTrans + " getPrescriptionStatus (getExtensionForUrl: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				var keep []any
				for _, e := range list(md, "extension") {
					if e.(map[string]any)["url"] != fhir.ExtTaskBusinessStatus {
						keep = append(keep, e)
					}
				}
				md["extension"] = keep
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationDispense.extension"},
		{name: "a statusReasonCodeableConcept of another system", ref: refDNTrans + " getFhirStatusReasonCodeableConceptCode (getCodingForSystem: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				md["statusReasonCodeableConcept"] = map[string]any{"coding": []any{map[string]any{"system": "https://example.org/cs", "code": "0001"}}}
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationDispense.statusReasonCodeableConcept.coding[0]"},
		{name: "a statusReasonCodeableConcept of medicationdispense-status-reason", ref: refDNTrans + " getFhirStatusReasonCodeableConceptCode",
			body: dn(firstMD(func(md map[string]any) {
				md["statusReasonCodeableConcept"] = map[string]any{"coding": []any{
					map[string]any{"system": "https://example.org/cs", "code": "x"},
					map[string]any{"system": fhir.SystemDispenseStatusReason, "code": "0002"}}}
			})),
			check: func(t *testing.T, v any) {
				if dn := v.(*fhir.DispenseNotification); dn.Items[0].NonDispensingReason != "0002" {
					t.Errorf("non-dispensing reason %q, want 0002", dn.Items[0].NonDispensingReason)
				}
			}},
		{name: "medicationCodeableConcept without a SNOMED CT coding", ref: "translation/common/index.ts getMedicationCoding (TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				idx(list(obj(md, "medicationCodeableConcept"), "coding"), 0)["system"] = "https://example.org/cs"
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.medicationCodeableConcept.coding"},
		{name: "medicationReference to a Medication entry", ref: "translation/common/index.ts getMedicationCoding (Medication.code)",
			body: dn(func(b map[string]any) {
				md := dispenses(b)[0]
				const med = "urn:uuid:5b3a2c1d-0000-4000-8000-00000000000b"
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": med, "resource": map[string]any{"resourceType": "Medication",
					"code": map[string]any{"coding": []any{map[string]any{"system": "https://example.org/cs", "code": "x"},
						map[string]any{"system": "http://snomed.info/sct", "code": "39720311000001101", "display": "Paracetamol 500mg tablets"}}}}})
				delete(md, "medicationCodeableConcept")
				md["medicationReference"] = map[string]any{"reference": med}
			}),
			check: func(t *testing.T, v any) {
				if dn := v.(*fhir.DispenseNotification); dn.Items[0].MedicationCode != "39720311000001101" {
					t.Errorf("medication %+v, want the Medication's SNOMED CT code", dn.Items[0])
				}
			}},
		{name: "medicationReference naming no entry", ref: "translation/common/index.ts getMedicationCoding (getResourceForFullUrl: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				delete(md, "medicationCodeableConcept")
				md["medicationReference"] = map[string]any{"reference": "urn:uuid:5b3a2c1d-0000-4000-8000-00000000000c"}
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry"},
		{name: "the contained MedicationRequest's medication without a SNOMED CT coding", ref: "translation/common/index.ts getMedicationCoding (requested medication: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				idx(list(obj(contained(md, "MedicationRequest"), "medicationCodeableConcept"), "coding"), 0)["system"] = "https://example.org/cs"
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.medicationCodeableConcept.coding"},
		{name: "the contained MedicationRequest without a line item identifier", ref: refDNTrans + " getPrescriptionItemId (TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) { contained(md, "MedicationRequest")["identifier"] = []any{} })),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationDispense.contained[0].identifier"},
		{name: "the first contained MedicationRequest without the long-form prescription ID", ref: refDNTrans + " createOriginalPrescriptionRef (getExtensionForUrl: TooFewValuesError)",
			body: dn(firstMD(func(md map[string]any) {
				obj(contained(md, "MedicationRequest"), "groupIdentifier")["extension"] = []any{}
			})),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.groupIdentifier.extension.valueIdentifier"},
	}, func(body []byte) (any, error) {
		m, err := fhir.DecodeMessage(body)
		if err != nil {
			return nil, err
		}
		return m.DispenseNotification()
	})
}

// ---------------------------------------------------------------------------
// Claim

const (
	refClaim      = "validation/claim-validator.ts verifyClaim"
	refClaimTrans = "translation/request/dispense/dispense-claim.ts createDispenseClaimPertinentInformation1"
	// refClaimConvert and refClaimItem are the rest of the claim's translation.
	refClaimConvert = "translation/request/dispense/dispense-claim.ts convertDispenseClaim"
	refClaimItem    = "translation/request/dispense/dispense-claim.ts createSuppliedLineItem"
)

func TestConformanceClaim(t *testing.T) {
	claim := func(edit func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body, _ := fhirgen.Claim(generated(t), dispenser, "")
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	erd := func(n int, edit func(m map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			body := fhirgen.ForIssue(claim(nil)(t), n, 6)
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	insurer := func(ods string) func(m map[string]any) {
		return func(m map[string]any) {
			obj(obj(idx(list(m, "insurance"), 0), "coverage"), "identifier")["value"] = ods
		}
	}
	issue := func(want int) func(t *testing.T, v any) {
		return func(t *testing.T, v any) {
			if c := v.(*fhir.ClaimRequest); c.Issue != want {
				t.Errorf("issue %d, want %d", c.Issue, want)
			}
		}
	}
	details := func(m map[string]any) []any { return list(idx(list(m, "item"), 0), "detail") }
	runConformance(t, []conformance{
		{name: "as generated", ref: refClaim, body: claim(nil), check: issue(0)},
		{name: "insurer RQFZ1", ref: refClaim + " (validateReimbursementAuthority)", body: claim(insurer("RQFZ1")), check: issue(0)},
		{name: "the contained Organization names the prescriber", ref: refClaim + " (the organisation is not checked)",
			body: claim(func(m map[string]any) { contained(m, "Organization")["identifier"] = []any{odsIdentifier(prescriber)} }),
			check: func(t *testing.T, v any) {
				if c := v.(*fhir.ClaimRequest); c.Provider != prescriber {
					t.Errorf("provider %q, want %s recorded as sent", c.Provider, prescriber)
				}
			}},
		{name: "issue 1: numberOfRepeatsIssued 0 on the item", ref: refClaimTrans + " (+1)", body: erd(1, nil), check: issue(1)},
		{name: "issue 3 on the first detail only (the deprecated place)", ref: refClaimTrans + " (fallback to item.detail[0], +1)",
			body: erd(3, func(m map[string]any) {
				item := idx(list(m, "item"), 0)
				var keep []any
				for _, x := range list(item, "extension") {
					if x.(map[string]any)["url"] != extRepeat {
						keep = append(keep, x)
					}
				}
				item["extension"] = keep
			}), check: issue(3)},
		{name: "an endorsement on the first detail only", ref: "translation/request/dispense/dispense-claim.ts medicationDispenseEndorsementPresent",
			body: claim(func(m map[string]any) {
				for _, d := range details(m)[1:] {
					dm := d.(map[string]any)
					dm["programCode"] = list(dm, "programCode")[:1]
				}
			}), check: issue(0)},

		{name: "no Claim.status (not read)", ref: refClaim + "; " + refClaimConvert + " (status is not read)",
			body: claim(func(m map[string]any) { delete(m, "status") }), check: issue(0)},
		{name: "Claim.status cancelled (not read)", ref: refClaim + "; " + refClaimConvert + " (status is not read)",
			body: claim(func(m map[string]any) { m["status"] = "cancelled" }), check: issue(0)},
		{name: "no Claim.patient (not read)", ref: refClaim + "; " + refClaimConvert + " (patient is not read)",
			body: claim(func(m map[string]any) { delete(m, "patient") }), check: issue(0)},
		{name: "Claim.patient not a valid NHS number (not read)", ref: refClaim + "; " + refClaimConvert + " (patient is not read)",
			body: claim(func(m map[string]any) { obj(obj(m, "patient"), "identifier")["value"] = "944930413" }),
			check: func(t *testing.T, v any) {
				if c := v.(*fhir.ClaimRequest); c.NHSNumber != "" {
					t.Errorf("NHS number %q recorded, want none", c.NHSNumber)
				}
			}},
		{name: "two items", ref: refClaimConvert + " (onlyElement: TooManyValuesError)",
			body: claim(func(m map[string]any) { m["item"] = append(list(m, "item"), idx(list(m, "item"), 0)) }),
			code: fhir.CodeTooManyValues, issueType: "invalid", expression: "Claim.item", words: "Too many values submitted. Expected 1 element."},
		{name: "no Claim.created", ref: refClaimConvert + " (convertIsoDateTimeStringToHl7V3DateTime)",
			body: claim(func(m map[string]any) { delete(m, "created") }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.created", words: "Incorrect format for date time string 'undefined'."},
		{name: "Claim.created not a FHIR dateTime", ref: refClaimConvert + " (convertIsoDateTimeStringToHl7V3DateTime)",
			body: claim(func(m map[string]any) { m["created"] = "29/11/2022" }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.created", words: "Incorrect format for date time string '29/11/2022'."},
		{name: "Claim.identifier of another system", ref: "translation/common/index.ts getClaimIdentifierValue (TooFewValuesError)",
			body: claim(func(m map[string]any) { idx(list(m, "identifier"), 0)["system"] = "https://example.org/id" }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Claim.identifier",
			words: "Too few values submitted. Expected 1 element where system == 'https://tools.ietf.org/html/rfc4122'."},
		{name: "the provider's organization not a reference", ref: refClaimTrans + " (InvalidValueError)",
			body: claim(func(m map[string]any) {
				contained(m, "PractitionerRole")["organization"] = map[string]any{"identifier": odsIdentifier(dispenser)}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Claim.contained("PractitionerRole").organization`,
			words: "practitioner.organization should be a reference"},
		{name: "the provider's organization names no contained Organization", ref: refClaimTrans + " (getContainedOrganizationViaReference)",
			body: claim(func(m map[string]any) {
				contained(m, "PractitionerRole")["organization"] = map[string]any{"reference": "#nowhere"}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Claim.contained("PractitionerRole").organization`,
			words: "Contained resource with reference #nowhere not found"},
		{name: "a detail without Extension-ClaimSequenceIdentifier", ref: refClaimItem + " (getExtensionForUrl: TooFewValuesError)",
			body: claim(func(m map[string]any) {
				d := idx(details(m), 1)
				var keep []any
				for _, x := range list(d, "extension") {
					if x.(map[string]any)["url"] != fhir.ExtClaimSequenceID {
						keep = append(keep, x)
					}
				}
				d["extension"] = keep
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Claim.item.detail.extension",
			words: "Too few values submitted. Expected 1 element where url == '" + fhir.ExtClaimSequenceID + "'."},
		{name: "a detail whose modifier is of another system", ref: refClaimItem + " (getCodeableConceptCodingForSystem: TooFewValuesError)",
			body: claim(func(m map[string]any) {
				idx(list(idx(list(idx(details(m), 0), "modifier"), 0), "coding"), 0)["system"] = "https://example.org/type"
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Claim.item.detail.modifier.coding",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemDispenseType + "'."},
		{name: "a detail without modifier", ref: refClaimItem + " (getCodeableConceptCodingForSystem: InvalidValueError)",
			body: claim(func(m map[string]any) { delete(idx(details(m), 0), "modifier") }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.item.detail.modifier", words: "Required field missing."},
		{name: "two insurances", ref: refClaim + " (invalidArrayLengthIssue)",
			body: claim(func(m map[string]any) { m["insurance"] = append(list(m, "insurance"), idx(list(m, "insurance"), 0)) }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.insurance", words: "Expected 1 item(s) in Claim.insurance, but received 2."},
		{name: "no insurance", ref: refClaim + " (invalidArrayLengthIssue)", body: claim(func(m map[string]any) { m["insurance"] = []any{} }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.insurance", words: "Expected 1 item(s) in Claim.insurance, but received 0."},
		{name: "insurer neither T1450 nor RQFZ1", ref: refClaim + " (createClaimInvalidValueIssue)", body: claim(insurer("X26")),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Claim.insurance[0].coverage.identifier.value",
			words: "Claim.insurance[0].coverage.identifier.value must be one of: 'T1450', 'RQFZ1'."},
		{name: "provider names no contained PractitionerRole", ref: "translation/common/getResourcesOfType.ts getContainedPractitionerRoleViaReference",
			body: claim(func(m map[string]any) { m["provider"] = map[string]any{"identifier": odsIdentifier(dispenser)} }),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Claim.provider", words: "Contained resource with reference  not found"},
		{name: "the provider's practitioner a reference", ref: refClaim + " (fieldIsReferenceButShouldNotBe, naming the release's agent as it does)",
			body: claim(func(m map[string]any) {
				contained(m, "PractitionerRole")["practitioner"] = map[string]any{"reference": "Practitioner/7654321"}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: `Parameters.parameter("agent").resource.practitioner`,
			words: `Parameters.parameter("agent").resource.practitioner populated incorrectly.`},
		{name: "no endorsement on the first detail with a programCode", ref: refClaim + " (createMissingEndorsementCode)",
			body: claim(func(m map[string]any) {
				d := idx(details(m), 0)
				d["programCode"] = list(d, "programCode")[:1]
			}),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Claim.item.detail.programCode", words: "The claim is missing the required endorsement code."},
		{name: "numberOfRepeatsIssued 99 (issue 100)", ref: refClaimTrans + "; Spine: at most 99 issues",
			body: erd(1, func(m map[string]any) {
				ri := idx(list(idx(list(m, "item"), 0), "extension"), len(list(idx(list(m, "item"), 0), "extension"))-1)
				idx(list(ri, "extension"), 1)["valueInteger"] = 99
			}),
			code: fhir.CodeInvalidValue, issueType: "value", expression: "Claim.item[0].extension[1].extension[1].valueInteger"},
		{name: "the provider's practitioner named by a professional code", ref: refClaim + " (getIdentifierValueForSystem sds-user-id: TooFewValuesError)",
			body: claim(func(m map[string]any) {
				contained(m, "PractitionerRole")["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gphc-number", "value": "2083469"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `claim.contained("PractitionerRole").practitioner.identifier`,
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemSDSUserID + "'."},
		{name: "the provider's role with identifiers but no sds-role-profile-id", ref: refClaim + " (getIdentifierValueForSystem sds-role-profile-id: TooFewValuesError)",
			body: claim(func(m map[string]any) {
				contained(m, "PractitionerRole")["identifier"] = []any{map[string]any{"system": "https://example.org/id", "value": "1"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `claim.contained("PractitionerRole").identifier`},
		{name: "the provider's role without identifier (not read)", ref: refClaim + " (identifier optional)",
			body: claim(func(m map[string]any) { delete(contained(m, "PractitionerRole"), "identifier") })},
		{name: "a detail's line item reference of another system (its value is read)", ref: refClaimItem + " (valueReference.identifier.value)",
			body: claim(func(m map[string]any) {
				for _, d := range details(m) {
					for _, e := range list(d.(map[string]any), "extension") {
						if em := e.(map[string]any); em["url"] == fhir.ExtClaimLineItemRef {
							obj(obj(em, "valueReference"), "identifier")["system"] = "https://example.org/id"
						}
					}
				}
			})},
		{name: "no Extension-EPS-TaskBusinessStatus on the item", ref: "translation/request/dispense/dispense-claim.ts createPrescriptionStatus (getExtensionForUrl: TooFewValuesError)",
			body: claim(func(m map[string]any) {
				it := idx(list(m, "item"), 0)
				var keep []any
				for _, e := range list(it, "extension") {
					if e.(map[string]any)["url"] != fhir.ExtTaskBusinessStatus {
						keep = append(keep, e)
					}
				}
				it["extension"] = keep
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Claim.item.extension"},
	}, func(body []byte) (any, error) { return fhir.DecodeClaim(body) })
}

// ---------------------------------------------------------------------------
// Cancellation

const (
	refCancel = "validation/bundle-validator.ts verifyCancellationBundle"
	refCommon = "validation/bundle-validator.ts verifyCommonBundle"
)

func TestConformanceCancellation(t *testing.T) {
	cancel := func(edit func(b map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte {
			g := generated(t)
			body, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
			if edit != nil {
				body = fhirgen.Mutate(body, edit)
			}
			return body
		}
	}
	medicationRequest := func(b map[string]any) map[string]any { return ofType(b, "MedicationRequest") }
	sender := func(want string) func(t *testing.T, v any) {
		return func(t *testing.T, v any) {
			if c := v.(*fhir.Cancellation); c.Sender != want {
				t.Errorf("sender %q, want %q", c.Sender, want)
			}
		}
	}
	const mrs = "Bundle.entry.resource.ofType(MedicationRequest)"
	runConformance(t, []conformance{
		{name: "as generated", ref: refCancel, body: cancel(nil), check: sender(prescriber)},
		{name: "no MessageHeader.sender", ref: refCancel + " (the sender is not read: the caller acts)",
			body: cancel(func(b map[string]any) { delete(entryRes(b, 0), "sender") }), check: sender("")},
		{name: "sender a reference to the Organization", ref: "fhir.DecodeMessage (Message.Sender resolved; CONTRACT.md roles)",
			body: cancel(func(b map[string]any) {
				var url string
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "Organization" {
						url, _ = em["fullUrl"].(string)
					}
				}
				entryRes(b, 0)["sender"] = map[string]any{"reference": url}
			}), check: sender(prescriber)},
		{name: "sender a reference to the PractitionerRole", ref: "fhir.DecodeMessage (Message.Sender resolved; CONTRACT.md roles)",
			body: cancel(func(b map[string]any) {
				var url string
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "PractitionerRole" {
						url, _ = em["fullUrl"].(string)
					}
				}
				entryRes(b, 0)["sender"] = map[string]any{"reference": url}
			}), check: sender(prescriber)},

		{name: "a telecom without value", ref: "validation/bundle-validator.ts verifyCommonBundle validateTelecoms (missingRequiredField)",
			body: cancel(func(b map[string]any) {
				delete(idx(list(ofType(b, "PractitionerRole"), "telecom"), 0), "value")
			}),
			code: fhir.CodeMissingValue, issueType: "invalid", expression: "Bundle.entry[3].resource.telecom[0].value",
			words: "Required field bundle.entry[3].resource.telecom[0].value is missing."},
		{name: "intent original-order", ref: refCommon + " validateMedicationRequests",
			body: cancel(func(b map[string]any) { medicationRequest(b)["intent"] = "original-order" }), check: sender(prescriber)},
		{name: "intent plan", ref: refCommon + " validateMedicationRequests (createMedicationRequestIncorrectValueIssue)",
			body: cancel(func(b map[string]any) { medicationRequest(b)["intent"] = "plan" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: mrs + ".intent",
			words: "MedicationRequest.intent must be order, original-order or instance-order."},
		{name: "intent reflex-order", ref: refCommon + " validateMedicationRequests (createMedicationRequestIncorrectValueIssue)",
			body: cancel(func(b map[string]any) { medicationRequest(b)["intent"] = "reflex-order" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: mrs + ".intent"},
		{name: "both medicationCodeableConcept and medicationReference", ref: refCommon + " validateMedicationRequests (createMedicationFieldIssue)",
			body: cancel(func(b map[string]any) {
				const med = "urn:uuid:5b3a2c1d-0000-4000-8000-00000000000a"
				b["entry"] = append(list(b, "entry"), map[string]any{"fullUrl": med, "resource": map[string]any{"resourceType": "Medication",
					"code": obj(medicationRequest(b), "medicationCodeableConcept")}})
				medicationRequest(b)["medicationReference"] = map[string]any{"reference": med}
			}),
			code: fhir.CodeConflictingValues, issueType: "structure", expression: "Bundle.entry[1].resource.medication",
			words: "MedicationRequest cannot contain both medicationReference and medicationCodeableConcept fields."},
		{name: "the PractitionerRole's organization an identifier", ref: refCommon + " validatePractitionerRole (fieldIsNotReferenceButShouldBe)",
			body: cancel(func(b map[string]any) {
				ofType(b, "PractitionerRole")["organization"] = map[string]any{"identifier": odsIdentifier(prescriber)}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[3].resource.organization",
			words: "practitionerRole.organization populated incorrectly. Please populate with Reference to resource within Bundle."},
		{name: "the PractitionerRole's practitioner an identifier", ref: refCommon + " validatePractitionerRolePractitionerField (fieldIsNotReferenceButShouldBe)",
			body: cancel(func(b map[string]any) {
				ofType(b, "PractitionerRole")["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C1234567"}}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[3].resource.practitioner",
			words: "practitionerRole.practitioner populated incorrectly. Please populate with Reference to resource within Bundle."},
		{name: "the responsible practitioner's role names its practitioner by identifier", ref: refCommon + " validatePractitionerRolePractitionerField (reference XOR identifier); cancellation.ts getAgentPersonPersonId (sds-user-id)",
			body: cancel(func(b map[string]any) {
				role := ofType(b, "PractitionerRole")
				role["practitioner"] = map[string]any{"identifier": map[string]any{"system": fhir.SystemSDSUserID, "value": "3415870201"}}
				var url string
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "PractitionerRole" {
						url, _ = em["fullUrl"].(string)
					}
				}
				mr := medicationRequest(b)
				mr["extension"] = append(list(mr, "extension"), map[string]any{"url": fhir.ExtResponsiblePractitioner, "valueReference": map[string]any{"reference": url}})
			}), check: sender(prescriber)},
		{name: "the responsible practitioner's role names its practitioner by reference and identifier", ref: refCommon + " validatePractitionerRolePractitionerField (invalidResponsiblePractitionerPractitionerReference)",
			body: cancel(func(b map[string]any) {
				role := ofType(b, "PractitionerRole")
				obj(role, "practitioner")["identifier"] = map[string]any{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C1234567"}
				var url string
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "PractitionerRole" {
						url, _ = em["fullUrl"].(string)
					}
				}
				mr := medicationRequest(b)
				mr["extension"] = append(list(mr, "extension"), map[string]any{"url": fhir.ExtResponsiblePractitioner, "valueReference": map[string]any{"reference": url}})
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[3].resource.practitioner",
			words: "Responsible practitioner must be either a reference to a Practitioner resource or an identifier reference."},
		{name: "a healthcareService by identifier", ref: refCommon + " validatePractitionerRole (fieldIsNotReferenceButShouldBe)",
			body: cancel(func(b map[string]any) {
				ofType(b, "PractitionerRole")["healthcareService"] = []any{map[string]any{"identifier": odsIdentifier(prescriber)}}
			}),
			code: fhir.CodeInvalidValue, issueType: "invalid", expression: "Bundle.entry[3].resource.healthcareService[0]",
			words: "practitionerRole.healthcareService[0] populated incorrectly."},
		{name: "two MedicationRequests", ref: refCancel + " (medicationRequestNumberIssue)",
			body: cancel(func(b map[string]any) {
				var second map[string]any
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "MedicationRequest" {
						raw, _ := json.Marshal(em)
						_ = json.Unmarshal(raw, &second)
					}
				}
				second["fullUrl"] = "urn:uuid:2f6c0e52-0000-4000-8000-000000000002"
				b["entry"] = append(list(b, "entry"), second)
			}),
			code: fhir.CodeInvalidValue, issueType: "value", expression: mrs,
			words: "The Bundle must contain exactly one MedicationRequest if MessageHeader.eventCoding.code is 'prescription-order-update'."},
		{name: "status active", ref: refCancel + " (createMedicationRequestIncorrectValueIssue)",
			body: cancel(func(b map[string]any) { medicationRequest(b)["status"] = "active" }),
			code: fhir.CodeInvalidValue, issueType: "value", expression: mrs + ".status", words: "MedicationRequest.status must be cancelled."},
		{name: "no statusReason", ref: refCancel + " (createMedicationRequestMissingValueIssue)",
			body: cancel(func(b map[string]any) { delete(medicationRequest(b), "statusReason") }),
			code: fhir.CodeMissingValue, issueType: "value", expression: mrs + ".statusReason", words: "Expected MedicationRequest to have a value for statusReason."},
		{name: "the responsible practitioner named by a professional code only", ref: "translation/request/cancel/cancellation.ts getAgentPersonPersonId (TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				role := ofType(b, "PractitionerRole")
				role["practitioner"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.hl7.org.uk/Id/gmc-number", "value": "C1234567"}}
				var url string
				for _, e := range list(b, "entry") {
					if em := e.(map[string]any); obj(em, "resource")["resourceType"] == "PractitionerRole" {
						url, _ = em["fullUrl"].(string)
					}
				}
				mr := medicationRequest(b)
				mr["extension"] = append(list(mr, "extension"), map[string]any{"url": fhir.ExtResponsiblePractitioner, "valueReference": map[string]any{"reference": url}})
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Practitioner.identifier",
			words: "Too few values submitted. Expected 1 element where system == '" + fhir.SystemSDSUserID + "'."},

		// What the translation reads, resolved by fullUrl, and only that
		// (issue 10: no Bundle-wide reference check, no ODS format check,
		// no groupIdentifier.system check).
		{name: "groupIdentifier of another system (only its value is read)", ref: "translation/request/cancel/cancellation.ts convertCancellation (groupIdentifier.value)",
			body: cancel(func(b map[string]any) {
				obj(medicationRequest(b), "groupIdentifier")["system"] = "https://example.org/id"
			}),
			check: sender(prescriber)},
		{name: "groupIdentifier with a wrong check character", ref: "eps-spine-shared validation/common.py check_prescription_id",
			body: cancel(func(b map[string]any) {
				gi := obj(medicationRequest(b), "groupIdentifier")
				v := gi["value"].(string)
				last := byte('A')
				if v[len(v)-1] == 'A' {
					last = 'B'
				}
				gi["value"] = v[:len(v)-1] + string(last)
			}),
			code: fhir.CodeInvalidChecksum, issueType: "processing", expression: "Bundle.entry[1].resource.groupIdentifier.value"},
		{name: "ODS codes of any form (not read as formats)", ref: "translation/request/cancel/cancellation.ts (no Spine rule in the reference checks a cancellation's organisations)",
			body: cancel(func(b map[string]any) {
				obj(obj(medicationRequest(b), "dispenseRequest"), "performer")["identifier"] = odsIdentifier("F A 565")
				ofType(b, "Organization")["identifier"] = []any{odsIdentifier("A83 008")}
			}),
			check: sender(prescriber)},
		{name: "MessageHeader.reason notification (not read)", ref: "translation/common/index.ts identifyMessageType (the event, not the reason)",
			body: cancel(func(b map[string]any) {
				entryRes(b, 0)["reason"] = map[string]any{"coding": []any{map[string]any{"system": fhir.SystemMessageReason, "code": "notification"}}}
			}),
			check: sender(prescriber)},
		{name: "subject names nothing (not read: the one Patient is)", ref: "translation/request/cancel/cancellation.ts convertCancellation (getPatient)",
			body: cancel(func(b map[string]any) {
				medicationRequest(b)["subject"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
			}),
			check: func(t *testing.T, v any) {
				if c := v.(*fhir.Cancellation); c.NHSNumber == "" {
					t.Errorf("no NHS number: %+v", c)
				}
			}},
		{name: "a reference nobody reads names nothing", ref: "translation/common/index.ts resolveReference (only where read)",
			body: cancel(func(b map[string]any) {
				ofType(b, "Patient")["generalPractitioner"] = []any{map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}}
				medicationRequest(b)["contained"] = []any{map[string]any{"resourceType": "Provenance", "id": "p", "target": []any{map[string]any{"reference": "#nowhere"}}}}
			}),
			check: sender(prescriber)},
		{name: "no Patient", ref: "translation/common/getResourcesOfType.ts getPatient (TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				var keep []any
				for _, e := range list(b, "entry") {
					if obj(e.(map[string]any), "resource")["resourceType"] != "Patient" {
						keep = append(keep, e)
					}
				}
				b["entry"] = keep
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry",
			words: "Too few values submitted. Expected 1 element where resource.resourceType == 'Patient'."},
		{name: "the requester names no entry", ref: "translation/request/cancel/cancellation.ts convertAuthor (resolveReference: TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				medicationRequest(b)["requester"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000002"}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry",
			words: "Too few values submitted. Expected 1 element where fullUrl == 'urn:uuid:00000000-0000-4000-8000-000000000002'."},
		{name: "the requester as a relative reference (EPS resolves by fullUrl only)", ref: "translation/common/index.ts getResourceForFullUrl (TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				role := ofType(b, "PractitionerRole")
				role["id"] = "requester"
				medicationRequest(b)["requester"] = map[string]any{"reference": "PractitionerRole/requester"}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry"},
		{name: "the PractitionerRole's practitioner names no entry", ref: refCommon + " validatePractitionerRole (resolveReference: TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				obj(ofType(b, "PractitionerRole"), "practitioner")["reference"] = "urn:uuid:00000000-0000-4000-8000-000000000003"
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry",
			words: "Too few values submitted. Expected 1 element where fullUrl == 'urn:uuid:00000000-0000-4000-8000-000000000003'."},
		{name: "the PractitionerRole's organization names no entry", ref: "translation/common/index.ts resolveOrganization (resolveReference: TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				obj(ofType(b, "PractitionerRole"), "organization")["reference"] = "urn:uuid:00000000-0000-4000-8000-000000000004"
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "Bundle.entry"},
		{name: "the PractitionerRole's identifiers without an sds-role-profile-id", ref: refCommon + " verifyPractitionerRoleID (TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				ofType(b, "PractitionerRole")["identifier"] = []any{map[string]any{"system": "https://example.org/id", "value": "1"}}
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: `Bundle.entry("PractitionerRole").identifier`},
		{name: "no line item identifier", ref: "translation/request/cancel/cancellation.ts convertCancellation (getIdentifierValueForSystem: TooFewValuesError)",
			body: cancel(func(b map[string]any) { medicationRequest(b)["identifier"] = []any{} }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.identifier"},
		{name: "statusReason of another system", ref: "translation/request/cancel/cancellation.ts convertCancellation (getCodingForSystem: TooFewValuesError)",
			body: cancel(func(b map[string]any) {
				idx(list(obj(medicationRequest(b), "statusReason"), "coding"), 0)["system"] = fhir.SystemReturnReason
			}),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.statusReason"},
		{name: "no long-form prescription ID", ref: "translation/request/cancel/cancellation.ts convertCancellation (getExtensionForUrl: TooFewValuesError)",
			body: cancel(func(b map[string]any) { obj(medicationRequest(b), "groupIdentifier")["extension"] = []any{} }),
			code: fhir.CodeTooFewValues, issueType: "invalid", expression: "MedicationRequest.groupIdentifier.extension"},
	}, func(body []byte) (any, error) {
		m, err := fhir.DecodeMessage(body)
		if err != nil {
			return nil, err
		}
		return m.Cancellation()
	})
}
