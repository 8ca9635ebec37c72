package test

// End-to-end tests of the scenarios of NHS England's EPS regression suite
// (NHSDigital/electronic-prescription-service-api-regression-tests), with
// every message shaped as that suite shapes it, against a real broker on
// an embedded NATS server. After each step the prescription is read back
// through the tracker API (GET /FHIR/R4/RequestGroup...).
//
// What the suite does (paths in that repository; read, not copied):
//
// Scenarios (features/):
//   - eps_fhir_prescribing/create_prescriptions.feature, eps_fhir/create_prescriptions.feature:
//     nominated and non-nominated: prepare, sign, release by the dispenser;
//     expects 200 and a release answer whose parameter[0].resource.total is 1
//     (features/steps/eps_api_steps.py body_indicates_successful_action "release").
//   - eps_fhir_prescribing/cancel_prescriptions.feature: nominated and
//     non-nominated x acute and repeat (eRD too here): cancel all line items; expects 200 and
//     a Bundle whose MedicationRequest.extension[0].extension[0].valueCoding
//     .display is "Prescription/item was cancelled".
//   - eps_fhir_dispensing/dispense_prescriptions.feature: nominated and
//     non-nominated x acute, repeat and eRD: create, release, dispense;
//     expects 200 and an OperationOutcome whose issue[0] is severity
//     information, code informational. "amend" (a new notification with
//     MessageHeader Extension-replacementOf the first) and "withdraw" (a Task
//     aborting the notification) expect the same. "$release rejects requests
//     that do not contain a practitioner role" expects 400.
//   - eps_fhir_dispensing/return_prescriptions.feature: nominated and
//     non-nominated x acute and repeat: create, release, return; 200 and an
//     informational OperationOutcome.
//   - eps_fhir_dispensing/claim.feature and a newer claim feature tagged
//     @eps_fhir @claim (its path is not in the stored tree listing): nominated
//     and non-nominated x acute, repeat, eRD (eRD also with the repeat
//     information in the item.detail.subDetail): dispensed, then claimed: 200;
//     a claim for a prescription released but not dispensed: 400
//     "PRESCRIPTION_INVALID_STATE_TRANSITION" (Spine's wording; the broker's
//     EPS code for it is INVALID_STATE_TRANSITION, CONTRACT.md).
//   - cpts_api/search_for_prescriptions.feature, cpts_api/get_prescription.feature
//     with methods/api/cpts_api_methods.py: RequestGroup?nhsNumber= and
//     ?prescriptionId= answer 200 with entry[0] the Patient
//     (identifier[0].value the NHS number) and entry[1] the RequestGroup
//     (identifier[0].value the prescription ID); unknown IDs answer 200 with
//     "entry" of length 0; both parameters answer 400 with issue[0].diagnostics
//     "Invalid query string parameters; only prescriptionId or nhsNumber must
//     be provided, not both."; RequestGroup/{id} answers 200 with the Patient
//     and RequestGroup as above (status To Be Dispensed after the order); an
//     unknown ID 404 with issue[0].code not-found; RequestGroup/ without an ID
//     400 with issue[0].code value; RequestGroup/{id}?issueNumber=2 of an eRD
//     prescription carries Extension-EPS-RepeatInformation numberOfRepeatsIssued
//     2; after "non-dispense a line item" the detail has a MedicationDispense of
//     the line item, "Item not dispensed" with its reason; after a
//     cancellation, the MedicationRequest is "Item Cancelled" with the reason.
//   - eps_fhir/eps_fhir.feature, */ping.feature: GET /_ping answers 200 and a
//     JSON object whose "version" is not empty (the step "I can see the ping
//     information in the response" under features/steps/; older versions
//     also read revision, releaseId and commitId).
//
// Messages (messages/eps_fhir/):
//   - prescription.py: one MedicationRequest (fullUrls those of the NHS example
//     order fhirgen.Order4Items is, so the suite started from that example),
//     prescription type 1001, category community
//     (system https://terminology.hl7.org/...), medicationCodeableConcept
//     322237000 (http://snomed.info/sct only), no authoredOn, requester the
//     PractitionerRole; dispenseRequest validityPeriod, expectedSupplyDuration
//     30 d, quantity 100 tablet; nominated: PerformerSiteType P1 and performer
//     FA565; non-nominated: PerformerSiteType 0004 and no performer.
//     MessageHeader.sender an identifier (A83008) without reference;
//     destination.receiver FA565 in both cases; no focus. Organization A83008
//     with partOf RBA; PractitionerRole code S8000:G8000:R8000, practitioner
//     a reference; Practitioner sds-user-id and nmc-number.
//     The stored prescription.py sets courseOfTherapyType acute and intent
//     order only; features/steps/eps_api_steps.py setup_new_prescription
//     chooses acute/order, continuous/instance-order and
//     continuous-repeat-dispensing/original-order; the repeat fields below are
//     taken from the suite's dispense notification, which copies the order
//     (dispense_notification.py medication_request: numberOfRepeatsAllowed as
//     the JSON string "6", basedOn Extension-EPS-RepeatInformation allowed 6,
//     for eRD Extension-UKCore-MedicationRepeatInformation and a 10 day
//     supply). The stored order's validityPeriod has fixed 2024 dates; here it
//     starts today (the dispense notification builder dates it today).
//   - signed_prescription.py: a Provenance, target the MedicationRequest,
//     agent.who and signature.who the PractitionerRole, recorded
//     2008-02-27T11:38:00+00:00, signature.when the $prepare timestamp (now).
//   - release.py: Parameters status accepted, group-identifier (always, also
//     for nominated prescriptions), owner an Organization (ODS FA565, type
//     123), agent a PractitionerRole whose practitioner is an identifier.
//   - cancel.py: the unsigned order (no Provenance) with every
//     MedicationRequest status cancelled and a statusReason
//     (medicationrequest-status-reason), eventCoding
//     prescription-order-update, a new Bundle id; no MessageHeader.reason.
//   - dispense_notification.py (the latest, taking DNProps): NO
//     MessageHeader.sender, no destination, no focus; source.endpoint
//     urn:nhs-uk:addressing:ods:<dispenser>; response a random identifier;
//     one MedicationDispense: identifier prescription-dispense-item-number =
//     the line item id, performer "#<PractitionerRole id>", contained
//     PractitionerRole (practitioner an identifier, organization a reference
//     to the Bundle's Organization) and MedicationRequest (prescription type
//     1001, intent as the type, category outpatient, authoredOn now,
//     validityPeriod today..tomorrow, repeat fields as above, basedOn
//     numberOfRepeatsIssued 0 and UKCore numberOfPrescriptionsIssued 1 for
//     issue 1); status completed; Extension-EPS-TaskBusinessStatus; the
//     Bundle's Organization is the dispenser with the reimbursementAuthority
//     T1450. Amendment: the same with MessageHeader Extension-replacementOf.
//   - dispense_notification_erd.py (older eRD builder): MessageHeader.sender
//     is the PRESCRIBER's ODS code (A83008), destination.receiver the
//     dispenser; MedicationDispense Extension-EPS-RepeatInformation issued 1,
//     contained MedicationRequest intent reflex-order, basedOn issued 0.
//   - prescription_return.py: Task status rejected, reason 0003, code
//     fulfill; contained Organization the PRESCRIBER's (A83008), no
//     Task.owner, focus a random UUID, authoredOn 2022-11-21.
//   - withdraw_dispense_notification.py: Task status in-progress, code abort,
//     reason MU; contained Organization the PRESCRIBER's (sender_ods_code),
//     no Task.owner; Task.id and focus context.dn_id (in some versions a
//     fresh UUID rather than the notification's Bundle.identifier; here the
//     notification's identifier, the only reading that names it).
//   - claim.py: the claim example with the dispenser's Organization, the
//     patient, prescription IDs, line item and (subDetail) dispense item
//     references; eRD: Extension-EPS-RepeatInformation in item and in
//     item.detail (or item.detail.subDetail), numberOfRepeatsIssued
//     ERD_DEFAULT_REPEATS_ISSUED (its value is not in the stored tree; 0 here,
//     issue 1 as the facade counts a claim's issue, dispense-claim.ts).
//
// Each builder below starts from the NHS example messages this repository
// keeps (fhirgen.Order4Items, fhirgen's lifecycle examples, the release
// example under testdata) and edits them with fhirgen.Mutate into the
// suite's shape. The dispensing organisation of each case is an ODS code of
// its own, so that nominated releases only hand over the case's
// prescription.

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The suite's fixed values.
const (
	regPrescriber   = "A83008" // PrescriptionValues.sender_ods_code
	regPrescriberUp = "RBA"    // the prescriber's Organization.partOf
	regSDSUser      = "3415870201"
	regSDSRole      = "555086415105"
	regMedication   = "322237000"
	regSystemODS    = "https://fhir.nhs.uk/Id/ods-organization-code"
	regSystemSNOMED = "http://snomed.info/sct"
	regSystemRFC    = "https://tools.ietf.org/html/rfc4122"
	regExtRepeat    = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"
	regExtUKRepeat  = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
	regExtType      = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType"
	regExtSiteType  = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType"
	regExtBusStatus = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	regExtStatusHx  = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory"
	regSystemItemID = "https://fhir.nhs.uk/Id/prescription-order-item-number"
)

// regType is a prescription type of the suite (common_maps.py THERAPY_TYPE_MAP, INTENT_MAP).
type regType struct{ name, therapy, therapyDisplay, intent string }

var regTypes = []regType{
	{"acute", "acute", "Short course (acute) therapy", "order"},
	{"repeat", "continuous", "Continuous long term therapy", "instance-order"},
	{"eRD", "continuous-repeat-dispensing", "Continuous long term (repeat dispensing)", "original-order"},
}

// regCase is one Examples row: nomination x type.
type regCase struct {
	nominated bool
	typ       regType
}

func (c regCase) name() string {
	n := "non-nominated"
	if c.nominated {
		n = "nominated"
	}
	return n + "-" + c.typ.name
}

func regCases(types ...string) []regCase {
	var out []regCase
	for _, typ := range regTypes {
		if len(types) > 0 && !regContains(types, typ.name) {
			continue
		}
		for _, nom := range []bool{true, false} {
			out = append(out, regCase{nom, typ})
		}
	}
	return out
}

func regContains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// regRx is one prescription of a scenario.
type regRx struct {
	t         *testing.T
	b         *testBroker
	c         regCase
	g         *fhirgen.Generated
	dispenser string // the suite's receiver_ods_code (FA565), one per case here
	itemID    string
	unsigned  []byte // the order before signing (the suite's prepare_body)
	dnID      string // Bundle.identifier of the latest dispense notification
	dnOrg     string // when set, the ODS code of the notification's Organization (the dispenser's otherwise)
}

var regTmpl = func() *fhirgen.Template {
	t, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		panic(err)
	}
	return t
}()

func regToday() time.Time { return time.Now().UTC() }

func regDay(t time.Time) string { return t.Format(time.DateOnly) }

// newRegRx makes the suite's order for case c (not posted).
func newRegRx(t *testing.T, b *testBroker, c regCase) *regRx {
	t.Helper()
	r := &regRx{t: t, b: b, c: c, dispenser: newODS("RG")}
	g, err := regTmpl.Order(fhirgen.Options{Sender: regPrescriber, Performer: r.dispenser})
	if err != nil {
		t.Fatal(err)
	}
	r.g, r.itemID = g, g.ItemIDs[0]
	g.ItemIDs = g.ItemIDs[:1]
	var body []byte
	body = fhirgen.Mutate(g.Body, func(m map[string]any) { r.shapeOrder(m) })
	r.unsigned = fhirgen.Mutate(body, func(m map[string]any) {
		var keep []any
		for _, e := range entries(m) {
			if resource(e)["resourceType"] != "Provenance" {
				keep = append(keep, e)
			}
		}
		m["entry"] = keep
	})
	g.Body = body
	return r
}

// shapeOrder edits the generated NHS example order into prescription.py +
// signed_prescription.py's shape.
func (r *regRx) shapeOrder(m map[string]any) {
	now := regToday()
	var keep []any
	var mrURL, roleURL, orgURL, practURL string
	seenMR := false
	for _, e := range entries(m) {
		res := resource(e)
		full, _ := e.(map[string]any)["fullUrl"].(string)
		switch res["resourceType"] {
		case "MedicationRequest":
			if seenMR {
				continue // the suite's orders have one line item
			}
			seenMR, mrURL = true, full
		case "PractitionerRole":
			roleURL = full
		case "Organization":
			orgURL = full
		case "Practitioner":
			practURL = full
		}
		keep = append(keep, e)
	}
	m["entry"] = keep
	for _, e := range keep {
		res := resource(e)
		switch res["resourceType"] {
		case "MessageHeader":
			res["sender"] = map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": regPrescriber}}
			res["source"] = map[string]any{"endpoint": "urn:nhs-uk:addressing:ods:" + regPrescriber}
			res["destination"] = []any{map[string]any{
				"endpoint": "https://sandbox.api.service.nhs.uk/electronic-prescriptions/$post-message",
				"receiver": map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": r.dispenser}}}}
			delete(res, "focus")
		case "MedicationRequest":
			r.shapeOrderItem(res, now)
		case "PractitionerRole":
			for k := range res {
				if k != "resourceType" && k != "id" {
					delete(res, k)
				}
			}
			res["identifier"] = []any{map[string]any{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": regSDSRole}}
			res["practitioner"] = map[string]any{"reference": practURL}
			res["organization"] = map[string]any{"reference": orgURL}
			res["code"] = []any{map[string]any{"coding": []any{map[string]any{
				"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": "S8000:G8000:R8000",
				"display": "Clinical Practitioner Access Role"}}}}
			res["telecom"] = []any{map[string]any{"system": "phone", "value": "01234567890", "use": "work"}}
		case "Practitioner":
			res["identifier"] = []any{
				map[string]any{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": regSDSUser},
				map[string]any{"system": "https://fhir.hl7.org.uk/Id/nmc-number", "value": "999999"},
			}
			res["name"] = []any{map[string]any{"family": "BOIN", "given": []any{"C"}, "prefix": []any{"DR"}}}
		case "Patient":
			res["birthDate"] = "1999-01-04"
			res["generalPractitioner"] = []any{map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": regPrescriber}}}
		case "Organization":
			for k := range res {
				if k != "resourceType" && k != "id" {
					delete(res, k)
				}
			}
			res["identifier"] = []any{map[string]any{"system": regSystemODS, "value": regPrescriber}}
			res["name"] = "SOMERSET BOWEL CANCER SCREENING CENTRE"
			res["address"] = []any{map[string]any{"use": "work", "line": []any{"MUSGROVE PARK HOSPITAL"}, "city": "TAUNTON", "postalCode": "TA1 5DA"}}
			res["telecom"] = []any{map[string]any{"system": "phone", "value": "01823 333444", "use": "work"}}
			res["partOf"] = map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": regPrescriberUp},
				"display": "TAUNTON AND SOMERSET NHS FOUNDATION TRUST"}
		case "Provenance":
			sig := res["signature"].([]any)[0].(map[string]any)
			res["target"] = []any{map[string]any{"reference": mrURL}}
			res["recorded"] = "2008-02-27T11:38:00+00:00"
			res["agent"] = []any{map[string]any{"who": map[string]any{"reference": roleURL}}}
			sig["who"] = map[string]any{"reference": roleURL}
			sig["when"] = now.Format("2006-01-02T15:04:05+00:00")
			delete(res, "id")
		}
	}
}

// shapeOrderItem makes the MedicationRequest prescription.py's, of the
// case's type and nomination.
func (r *regRx) shapeOrderItem(mr map[string]any, now time.Time) {
	c := r.c
	mr["extension"] = []any{map[string]any{"url": regExtType, "valueCoding": map[string]any{
		"system": "https://fhir.nhs.uk/CodeSystem/prescription-type", "code": "1001",
		"display": "Primary Care Prescriber - Medical Prescriber"}}}
	mr["status"], mr["intent"] = "active", c.typ.intent
	mr["category"] = []any{map[string]any{"coding": []any{map[string]any{
		"system": "https://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "community"}}}}
	mr["medicationCodeableConcept"] = map[string]any{"coding": []any{map[string]any{"system": regSystemSNOMED, "code": regMedication}}}
	delete(mr, "authoredOn")
	mr["courseOfTherapyType"] = map[string]any{"coding": []any{map[string]any{
		"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy", "code": c.typ.therapy}}}
	mr["dosageInstruction"] = []any{map[string]any{
		"text":   "4 times a day - Oral",
		"timing": map[string]any{"repeat": map[string]any{"frequency": 4, "period": 1, "periodUnit": "d"}},
		"route": map[string]any{"coding": []any{map[string]any{
			"system": "https://snomed.info/sct", "code": "26643006", "display": "Oral"}}},
	}}
	supply := 30
	if c.typ.name == "eRD" {
		supply = 10
	}
	dr := map[string]any{
		"validityPeriod":         map[string]any{"start": regDay(now), "end": regDay(now.AddDate(0, 0, 89))},
		"expectedSupplyDuration": map[string]any{"value": supply, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"},
		"quantity":               map[string]any{"value": 100, "unit": "tablet", "system": "https://snomed.info/sct", "code": "428673006"},
	}
	site := "0004"
	if c.nominated {
		site = "P1"
		dr["performer"] = map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": r.dispenser}}
	}
	dr["extension"] = []any{map[string]any{"url": regExtSiteType, "valueCoding": map[string]any{
		"system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference", "code": site}}}
	delete(mr, "basedOn")
	if c.typ.name != "acute" {
		dr["numberOfRepeatsAllowed"] = 6
		mr["basedOn"] = []any{map[string]any{"extension": []any{map[string]any{"url": regExtRepeat, "extension": []any{
			map[string]any{"url": "numberOfRepeatsAllowed", "valueInteger": 6}}}}}}
	}
	if c.typ.name == "eRD" {
		mr["extension"] = append(mr["extension"].([]any), map[string]any{"url": regExtUKRepeat, "extension": []any{
			map[string]any{"url": "authorisationExpiryDate", "valueDateTime": regDay(now.AddDate(0, 0, 89))}}})
	}
	mr["dispenseRequest"] = dr
	mr["substitution"] = map[string]any{"allowedBoolean": false}
}

func (r *regRx) id() string { return r.g.ShortID }

func (r *regRx) prescriberToken() string { return r.b.token(auth.RolePrescriber, regPrescriber) }
func (r *regRx) dispenserToken() string  { return r.b.token(auth.RoleDispenser, r.dispenser) }

// create posts the signed order (create_signed_prescription: 200).
func (r *regRx) create() {
	r.t.Helper()
	res := r.b.post(r.prescriberToken(), r.g.Body)
	if res.Status != 200 {
		r.t.Fatalf("create (prescription.py + signed_prescription.py): %d %s", res.Status, res.Body)
	}
	r.expectTracker("after create", "0001", "0007", 0)
}

// releaseBody is release.py's Parameters (from the NHS release example).
func (r *regRx) releaseBody(byID, withAgent bool) []byte {
	raw := readFile(r.t, filepath.Join(fixtures, "spec/dispense/Nominated-Pharmacy-Request-Release-200_OK.json"))
	return fhirgen.Mutate(raw, func(m map[string]any) {
		m["id"] = uuid.NewString()
		params := []any{map[string]any{"name": "status", "valueCode": "accepted"}}
		if byID {
			params = append(params, map[string]any{"name": "group-identifier", "valueIdentifier": map[string]any{
				"system": "https://fhir.nhs.uk/Id/prescription-order-number", "value": r.id()}})
		}
		params = append(params, map[string]any{"name": "owner", "resource": map[string]any{
			"resourceType": "Organization",
			"identifier":   []any{map[string]any{"system": regSystemODS, "value": r.dispenser}},
			"active":       true,
			"type": []any{map[string]any{"coding": []any{map[string]any{
				"system": "https://fhir.nhs.uk/CodeSystem/organisation-role", "code": "123"}}}},
			"name":    "SOMERSET BOWEL CANCER SCREENING CENTRE",
			"address": []any{map[string]any{"use": "work", "line": []any{"MUSGROVE PARK HOSPITAL"}, "city": "TAUNTON", "postalCode": "TA1 5DA"}},
			"telecom": []any{map[string]any{"system": "phone", "value": "01823 333444", "use": "work"}},
		}})
		if withAgent {
			params = append(params, map[string]any{"name": "agent", "resource": map[string]any{
				"resourceType": "PractitionerRole",
				"identifier":   []any{map[string]any{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": regSDSRole}},
				"practitioner": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": regSDSUser},
					"display": "Jackie Clark"},
				"code": []any{map[string]any{"coding": []any{map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": "S8000:G8000:R8000",
					"display": "Clinical Practitioner Access Role"}}}},
				"telecom": []any{map[string]any{"system": "phone", "value": "01234567890", "use": "work"}},
			}})
		}
		m["parameter"] = params
	})
}

// release releases the prescription: by ID as release.py always does, or
// by a nominated release (no group-identifier).
func (r *regRx) release(byID bool) {
	r.t.Helper()
	r.b.settle()
	res := r.b.do("POST", "/FHIR/R4/Task/$release", r.dispenserToken(), r.releaseBody(byID, true))
	if res.Status != 200 {
		r.t.Fatalf("release (release.py, by ID %v): %d %s", byID, res.Status, res.Body)
	}
	var p struct {
		Parameter []struct {
			Name     string
			Resource struct {
				Total int
				Entry []struct{ Resource json.RawMessage }
			}
		}
	}
	if err := json.Unmarshal(res.Body, &p); err != nil || len(p.Parameter) == 0 {
		r.t.Fatalf("release answer is not Parameters (%v): %.400s", err, res.Body)
	}
	if p.Parameter[0].Name != "passedPrescriptions" || p.Parameter[0].Resource.Total != 1 || len(p.Parameter[0].Resource.Entry) != 1 {
		r.t.Fatalf("release: parameter[0] %q total %d with %d entries, want passedPrescriptions total 1: %.600s",
			p.Parameter[0].Name, p.Parameter[0].Resource.Total, len(p.Parameter[0].Resource.Entry), res.Body)
	}
	released := p.Parameter[0].Resource.Entry[0].Resource
	if got := factsOf(r.t, released).ShortID; got != r.id() {
		r.t.Fatalf("release handed over %s, want %s", got, r.id())
	}
	if r.c.typ.name == "eRD" {
		// The suite's notification copies the released MedicationRequest's
		// basedOn: numberOfRepeatsIssued 0 for issue 1 (EPS
		// translation/response/release/release-medication-request.ts
		// createBasedOn: Spine's repeat number - 1).
		issued := map[string]bool{}
		for _, e := range asList(mustDecode(released)["entry"]) {
			mr := resource(e)
			if mr["resourceType"] != "MedicationRequest" {
				continue
			}
			for _, bo := range asList(mr["basedOn"]) {
				for _, x := range asList(bo.(map[string]any)["extension"]) {
					if xm := x.(map[string]any); xm["url"] == regExtRepeat {
						for _, part := range asList(xm["extension"]) {
							if pm := part.(map[string]any); pm["url"] == "numberOfRepeatsIssued" {
								issued[fmt.Sprint(pm["valueInteger"])] = true
							}
						}
					}
				}
			}
		}
		if len(issued) != 1 || !issued["0"] {
			r.t.Errorf("release: the released MedicationRequest's basedOn Extension-EPS-RepeatInformation numberOfRepeatsIssued %v, want 0 for issue 1", issued)
		}
	}
	r.expectTracker("after release", "0002", "0008", 0)
}

// cancelBody is cancel.py's: the unsigned order, every MedicationRequest
// cancelled with a reason, eventCoding prescription-order-update, a new
// Bundle id.
func (r *regRx) cancelBody(reason string) []byte {
	id := uuid.NewString()
	old := r.g.BundleID
	return fhirgen.Mutate(r.unsigned, func(m map[string]any) {
		if m["id"] == old {
			m["id"] = id
		}
		if ident, ok := m["identifier"].(map[string]any); ok && ident["value"] == old {
			ident["value"] = id
		}
		for _, e := range entries(m) {
			res := resource(e)
			switch res["resourceType"] {
			case "MedicationRequest":
				res["status"] = "cancelled"
				res["statusReason"] = map[string]any{"coding": []any{map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason", "code": reason}}}
			case "MessageHeader":
				res["eventCoding"] = map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/message-event",
					"code": "prescription-order-update", "display": "Prescription Order Update"}
			}
		}
	})
}

// dnBody is dispense_notification.py's (the latest builder) for the
// prescription: line item status, prescription status, and
// replacementOf for an amendment. erdStyle shapes it as
// dispense_notification_erd.py instead (MessageHeader.sender the
// prescriber).
func (r *regRx) dnBody(itemStatus, status, replacementOf string, erdStyle bool) (body []byte, id string) {
	base, id := fhirgen.DispenseNotification(r.g, r.dispenser, map[string]string{r.itemID: itemStatus}, status, "")
	now := time.Now().UTC()
	roleID, mrID := uuid.NewString(), uuid.NewString()
	body = fhirgen.Mutate(base, func(m map[string]any) {
		delete(m, "id")
		delete(m, "timestamp")
		var orgURL string
		for _, e := range entries(m) {
			if resource(e)["resourceType"] == "Organization" {
				orgURL, _ = e.(map[string]any)["fullUrl"].(string)
			}
		}
		for _, e := range entries(m) {
			res := resource(e)
			switch res["resourceType"] {
			case "MessageHeader":
				for k := range res {
					if k != "resourceType" {
						delete(res, k)
					}
				}
				res["eventCoding"] = map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/message-event",
					"code": "dispense-notification", "display": "Dispense Notification"}
				res["source"] = map[string]any{"endpoint": "urn:nhs-uk:addressing:ods:" + r.dispenser}
				res["response"] = map[string]any{"identifier": uuid.NewString(), "code": "ok"}
				if replacementOf != "" {
					res["extension"] = []any{map[string]any{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-replacementOf",
						"valueIdentifier": map[string]any{"system": regSystemRFC, "value": replacementOf}}}
				}
				if erdStyle {
					res["sender"] = map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": regPrescriber},
						"display": "NHS Digital Spine"}
					res["destination"] = []any{map[string]any{"endpoint": "urn:nhs-uk:addressing:ods:" + r.dispenser,
						"receiver": map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": r.dispenser}}}}
				}
			case "MedicationDispense":
				r.shapeDispense(res, itemStatus, status, roleID, mrID, orgURL, now, erdStyle)
			case "Organization":
				for k := range res {
					if k != "resourceType" && k != "id" {
						delete(res, k)
					}
				}
				res["extension"] = []any{map[string]any{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-ODS-OrganisationRelationships",
					"extension": []any{map[string]any{"url": "reimbursementAuthority",
						"valueIdentifier": map[string]any{"system": regSystemODS, "value": "T1450"}}}}}
				org := r.dispenser
				if r.dnOrg != "" {
					org = r.dnOrg
				}
				res["identifier"] = []any{map[string]any{"system": regSystemODS, "value": org}}
				res["address"] = []any{map[string]any{"city": "West Yorkshire", "use": "work",
					"line": []any{"17 Austhorpe Road", "Crossgates", "Leeds"}, "postalCode": "LS15 8BA"}}
				res["active"] = true
				res["type"] = []any{map[string]any{"coding": []any{map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/organisation-role", "code": "182", "display": "PHARMACY"}}}}
				res["name"] = "The Simple Pharmacy"
				res["telecom"] = []any{map[string]any{"system": "phone", "use": "work", "value": "0113 3180277"}}
			}
		}
	})
	return body, id
}

var regItemDisplays = map[string]string{"0001": "Item fully dispensed", "0002": "Item not dispensed",
	"0003": "Item dispensed - partial", "0004": "Item not dispensed - owing"}
var regStatusDisplays = map[string]string{"0003": "With Dispenser - Active", "0006": "Dispensed", "0007": "Not Dispensed"}

func (r *regRx) shapeDispense(md map[string]any, itemStatus, status, roleID, mrID, orgURL string, now time.Time, erdStyle bool) {
	c := r.c
	for k := range md {
		if k != "resourceType" {
			delete(md, k)
		}
	}
	role := map[string]any{
		"resourceType": "PractitionerRole", "id": roleID,
		"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": regSDSRole}},
		"practitioner": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": regSDSUser},
			"display": "Jackie Clark"},
		"organization": map[string]any{"reference": orgURL},
		"code": []any{map[string]any{"coding": []any{map[string]any{
			"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": "S8000:G8000:R8000",
			"display": "Clinical Practitioner Access Role"}}}},
		"telecom": []any{map[string]any{"system": "phone", "use": "work", "value": "02380798431"}},
	}
	intent := c.typ.intent
	if erdStyle {
		intent = "reflex-order"
	}
	mr := map[string]any{
		"resourceType": "MedicationRequest", "id": mrID,
		"extension": []any{map[string]any{"url": regExtType, "valueCoding": map[string]any{
			"system": "https://fhir.nhs.uk/CodeSystem/prescription-type", "code": "1001",
			"display": "Outpatient Community Prescriber - Medical Prescriber"}}},
		"identifier": []any{map[string]any{"system": regSystemItemID, "value": r.itemID}},
		"status":     "active", "intent": intent,
		"category": []any{map[string]any{"coding": []any{map[string]any{
			"system": "https://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "outpatient", "display": "Outpatient"}}}},
		"medicationCodeableConcept": map[string]any{"coding": []any{map[string]any{"system": regSystemSNOMED, "code": regMedication}}},
		"subject":                   map[string]any{"reference": "urn:uuid:" + uuid.NewString()},
		"authoredOn":                now.Format(time.RFC3339Nano),
		"requester":                 map[string]any{"reference": "urn:uuid:" + roleID},
		"groupIdentifier": map[string]any{
			"extension": []any{map[string]any{"url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
				"valueIdentifier": map[string]any{"system": "https://fhir.nhs.uk/Id/prescription", "value": r.g.LongID}}},
			"system": "https://fhir.nhs.uk/Id/prescription-order-number", "value": r.id()},
		"courseOfTherapyType": map[string]any{"coding": []any{map[string]any{
			"system": "https://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
			"code":   c.typ.therapy, "display": c.typ.therapyDisplay}}},
		"dosageInstruction": []any{map[string]any{"text": "4 times a day - Oral",
			"timing": map[string]any{"repeat": map[string]any{"frequency": 4, "period": 1, "periodUnit": "d"}}}},
		"dispenseRequest": map[string]any{
			"validityPeriod":         map[string]any{"start": regDay(now), "end": regDay(now.AddDate(0, 0, 1))},
			"expectedSupplyDuration": map[string]any{"value": 30, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"},
			"quantity":               map[string]any{"value": 100, "unit": "tablet", "system": "https://snomed.info/sct", "code": "428673006"},
		},
		"substitution": map[string]any{"allowedBoolean": false},
	}
	if c.typ.name == "eRD" {
		mr["extension"] = append(mr["extension"].([]any), map[string]any{"url": regExtUKRepeat, "extension": []any{
			map[string]any{"url": "authorisationExpiryDate", "valueDateTime": regDay(now.AddDate(0, 0, 30))},
			map[string]any{"url": "numberOfPrescriptionsIssued", "valueUnsignedInt": 1}}})
		mr["dispenseRequest"].(map[string]any)["expectedSupplyDuration"] = map[string]any{
			"unit": "days", "value": 10, "system": "http://unitsofmeasure.org", "code": "d"}
	}
	if c.typ.name != "acute" {
		mr["dispenseRequest"].(map[string]any)["numberOfRepeatsAllowed"] = "6"
		mr["basedOn"] = []any{map[string]any{"extension": []any{map[string]any{"url": regExtRepeat, "extension": []any{
			map[string]any{"url": "numberOfRepeatsAllowed", "valueInteger": 6},
			map[string]any{"url": "numberOfRepeatsIssued", "valueInteger": 0}}}}}}
	}
	md["medicationCodeableConcept"] = map[string]any{"coding": []any{map[string]any{"system": regSystemSNOMED,
		"code": regMedication, "display": "Paracetamol 500mg soluble tablet (product)"}}}
	md["subject"] = map[string]any{"type": "Patient", "identifier": map[string]any{
		"system": "https://fhir.nhs.uk/Id/nhs-number", "value": r.g.NHSNumber}, "display": "MR DONOTUSE XXTESTPATIENT-TGNP"}
	md["status"] = "completed"
	md["extension"] = []any{map[string]any{"url": regExtBusStatus, "valueCoding": map[string]any{
		"system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status", "code": status, "display": regStatusDisplays[status]}}}
	md["performer"] = []any{map[string]any{"actor": map[string]any{"reference": "#" + roleID}}}
	md["authorizingPrescription"] = []any{map[string]any{"reference": "#" + mrID}}
	md["quantity"] = map[string]any{"value": 100, "unit": "tablet", "system": regSystemSNOMED, "code": "3318611000001103"}
	md["contained"] = []any{role, mr}
	dispenseItem := r.itemID
	if erdStyle {
		dispenseItem = uuid.NewString()
		md["status"] = "unknown"
		md["extension"] = append(md["extension"].([]any), map[string]any{"url": regExtRepeat, "extension": []any{
			map[string]any{"url": "numberOfRepeatsIssued", "valueInteger": 1},
			map[string]any{"url": "numberOfRepeatsAllowed", "valueInteger": 6}}})
	}
	md["identifier"] = []any{map[string]any{"system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number", "value": dispenseItem}}
	md["type"] = map[string]any{"coding": []any{map[string]any{"system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
		"code": itemStatus, "display": regItemDisplays[itemStatus]}}}
	if itemStatus == "0002" {
		md["statusReasonCodeableConcept"] = map[string]any{"coding": []any{map[string]any{
			"system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason", "code": "0002", "display": "Clinically unsuitable"}}}
	}
	md["dosageInstruction"] = []any{map[string]any{"text": "4 times a day - Oral"}}
	md["whenHandedOver"] = now.Format(time.RFC3339Nano)
}

// regTask is common.py / prescription_return.py / withdraw_dispense_notification.py's
// Task shape: the contained PractitionerRole and Organization (the
// PRESCRIBER's ODS code), no owner, requester the contained role.
func (r *regRx) regTask(base []byte, focus, authoredOn string) []byte {
	roleID, orgID := "urn:uuid:"+uuid.NewString(), "urn:uuid:"+uuid.NewString()
	return fhirgen.Mutate(base, func(t map[string]any) {
		t["contained"] = []any{
			map[string]any{
				"resourceType": "PractitionerRole", "id": roleID,
				"identifier": []any{map[string]any{"system": "https://fhir.nhs.uk/Id/sds-role-profile-id", "value": regSDSRole}},
				"practitioner": map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/sds-user-id", "value": regSDSUser},
					"display": "Jackie Clark"},
				"organization": map[string]any{"reference": "#" + orgID},
				"code": []any{map[string]any{"coding": []any{map[string]any{
					"system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode", "code": "S8000:G8000:R8000",
					"display": "Clinical Practitioner Access Role"}}}},
				"telecom": []any{map[string]any{"system": "phone", "use": "work", "value": "02380798431"}},
			},
			map[string]any{
				"resourceType": "Organization", "id": orgID,
				"identifier": []any{map[string]any{"system": regSystemODS, "value": regPrescriber}},
				"name":       "SOMERSET BOWEL CANCER SCREENING CENTRE",
				"address":    []any{map[string]any{"use": "work", "line": []any{"MUSGROVE PARK HOSPITAL"}, "city": "TAUNTON", "postalCode": "TA1 5DA"}},
				"telecom":    []any{map[string]any{"system": "phone", "value": "01823 333444", "use": "work"}},
				"partOf": map[string]any{"identifier": map[string]any{"system": regSystemODS, "value": regPrescriberUp},
					"display": "TAUNTON AND SOMERSET NHS FOUNDATION TRUST"},
			},
		}
		delete(t, "owner")
		delete(t, "extension")
		t["identifier"] = []any{map[string]any{"system": regSystemRFC, "value": uuid.NewString()}}
		t["intent"] = "order"
		t["groupIdentifier"] = map[string]any{"system": "https://fhir.nhs.uk/Id/prescription-order-number", "value": r.id()}
		t["focus"] = map[string]any{"identifier": map[string]any{"system": regSystemRFC, "value": focus}}
		t["for"] = map[string]any{"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": r.g.NHSNumber}}
		t["authoredOn"] = authoredOn
		t["requester"] = map[string]any{"reference": "#" + roleID}
		t["reasonCode"] = map[string]any{"coding": []any{map[string]any{
			"system": "http://snomed.info/sct", "code": "33633005", "display": "Prescription of drug"}}}
	})
}

// returnBody is prescription_return.py's Task.
func (r *regRx) returnBody() []byte {
	return r.regTask(fhirgen.ReturnTask(r.g, r.dispenser, "0003"), uuid.NewString(), "2022-11-21T14:30:00+00:00")
}

// withdrawBody is withdraw_dispense_notification.py's Task (focus the
// latest dispense notification, the Task id that notification's id).
func (r *regRx) withdrawBody() []byte {
	return fhirgen.Mutate(r.regTask(fhirgen.WithdrawTask(r.g, r.dispenser, r.dnID, "MU"), r.dnID, time.Now().UTC().Format(time.RFC3339Nano)),
		func(t map[string]any) { t["id"] = r.dnID })
}

// claimBody is claim.py's Claim: the dispenser's Organization, the line
// item, the dispense item (the suite's notification names it by the line
// item id), and for eRD the repeat information (issue 1: 0) in the item and
// in item.detail, or in item.detail.subDetail.
func (r *regRx) claimBody(inSubDetail bool) []byte {
	base, _ := fhirgen.Claim(r.g, r.dispenser, "")
	return fhirgen.Mutate(base, func(c map[string]any) {
		ri := map[string]any{"url": regExtRepeat, "extension": []any{
			map[string]any{"url": "numberOfRepeatsIssued", "valueInteger": 0},
			map[string]any{"url": "numberOfRepeatsAllowed", "valueInteger": 6}}}
		for _, x := range asList(c["item"]) {
			item := x.(map[string]any)
			regDropExt(item, regExtRepeat)
			if r.c.typ.name == "eRD" {
				item["extension"] = append(asList(item["extension"]), ri)
			}
			for _, y := range asList(item["detail"]) {
				d := y.(map[string]any)
				regDropExt(d, regExtRepeat)
				if r.c.typ.name == "eRD" && !inSubDetail {
					d["extension"] = append(asList(d["extension"]), ri)
				}
				for _, z := range asList(d["subDetail"]) {
					s := z.(map[string]any)
					regDropExt(s, regExtRepeat)
					if r.c.typ.name == "eRD" && inSubDetail {
						s["extension"] = append(asList(s["extension"]), ri)
					}
					for _, e := range asList(s["extension"]) {
						em := e.(map[string]any)
						if strings.HasSuffix(fmt.Sprint(em["url"]), "Extension-ClaimMedicationDispenseReference") {
							em["valueReference"] = map[string]any{"identifier": map[string]any{
								"system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number", "value": r.itemID}}
						}
					}
				}
			}
		}
	})
}

func regDropExt(e map[string]any, url string) {
	var keep []any
	for _, x := range asList(e["extension"]) {
		if xm, ok := x.(map[string]any); !ok || xm["url"] != url {
			keep = append(keep, x)
		}
	}
	if len(keep) == 0 {
		delete(e, "extension")
	} else {
		e["extension"] = keep
	}
}

// informational expects what body_indicates_successful_action expects of
// a dispense, amend, withdraw and return: 200 and an OperationOutcome whose
// issue[0] is severity information, code informational.
func regInformational(t *testing.T, what string, res *response) bool {
	t.Helper()
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code string }
	}
	if res.Status != 200 || json.Unmarshal(res.Body, &oo) != nil || oo.ResourceType != "OperationOutcome" ||
		len(oo.Issue) == 0 || oo.Issue[0].Severity != "information" || oo.Issue[0].Code != "informational" {
		t.Errorf("%s: %d %.700s, want 200 and an informational OperationOutcome", what, res.Status, res.Body)
		return false
	}
	return true
}

// regDetail is what the tracker's RequestGroup/{id} says, read as the
// suite's cpts_api_methods.py and the NHS tracker clinicalView read it.
type regDetail struct {
	patientNHS, rgID, status string
	items                    map[string]string // line item id (lower case) -> dispense status
	itemReasons              map[string]string // line item id -> statusReason code of the MedicationRequest
	dispenses                map[string]string // line item id -> MedicationDispense.type code
	dispenseReasons          map[string]string // line item id -> MedicationDispense statusReason code
	repeatIssued             string            // RequestGroup Extension-EPS-RepeatInformation numberOfRepeatsIssued
}

func (r *regRx) detail(query string) (*response, regDetail) {
	r.t.Helper()
	res := r.b.do("GET", "/FHIR/R4/RequestGroup/"+url.PathEscape(r.id())+query, r.b.token(auth.RoleTracker, regPrescriber), nil)
	d := regDetail{items: map[string]string{}, itemReasons: map[string]string{}, dispenses: map[string]string{}, dispenseReasons: map[string]string{}}
	if res.Status != 200 {
		return res, d
	}
	m := mustDecode(res.Body)
	for _, e := range asList(m["entry"]) {
		res := resource(e)
		switch res["resourceType"] {
		case "Patient":
			d.patientNHS = regFirstIdent(res)
		case "RequestGroup":
			d.rgID = regFirstIdent(res)
			d.status = regSubCode(res, regExtStatusHx, "status")
			for _, x := range asList(res["extension"]) {
				xm := x.(map[string]any)
				if xm["url"] != regExtRepeat {
					continue
				}
				for _, s := range asList(xm["extension"]) {
					if sm := s.(map[string]any); sm["url"] == "numberOfRepeatsIssued" {
						d.repeatIssued = fmt.Sprint(sm["valueInteger"])
					}
				}
			}
		case "MedicationRequest":
			id := strings.ToLower(regIdentOf(res, regSystemItemID))
			d.items[id] = regSubCode(res, "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation", "dispenseStatus")
			d.itemReasons[id] = regCodingCode(res["statusReason"])
		case "MedicationDispense":
			id := strings.ToLower(regIdentOf(res, regSystemItemID))
			d.dispenses[id] = regCodingCode(res["type"])
			d.dispenseReasons[id] = regCodingCode(res["statusReasonCodeableConcept"])
		}
	}
	return res, d
}

func regFirstIdent(res map[string]any) string {
	if ids := asList(res["identifier"]); len(ids) > 0 {
		v, _ := ids[0].(map[string]any)["value"].(string)
		return v
	}
	if id, ok := res["identifier"].(map[string]any); ok {
		v, _ := id["value"].(string)
		return v
	}
	return ""
}

func regIdentOf(res map[string]any, system string) string {
	for _, x := range asList(res["identifier"]) {
		if xm := x.(map[string]any); xm["system"] == system {
			v, _ := xm["value"].(string)
			return v
		}
	}
	return ""
}

func regCodingCode(cc any) string {
	m, _ := cc.(map[string]any)
	for _, c := range asList(m["coding"]) {
		if v, ok := c.(map[string]any)["code"].(string); ok {
			return v
		}
	}
	return ""
}

func regSubCode(res map[string]any, url, name string) string {
	for _, x := range asList(res["extension"]) {
		xm := x.(map[string]any)
		if xm["url"] != url {
			continue
		}
		for _, s := range asList(xm["extension"]) {
			if sm := s.(map[string]any); sm["url"] == name {
				return regCodingCode(map[string]any{"coding": []any{sm["valueCoding"]}})
			}
		}
	}
	return ""
}

// expectTracker checks the detail view: the Patient and RequestGroup as the
// suite reads them, the prescription status, the line item status, and
// that there are as many MedicationDispense entries as dispensed items.
func (r *regRx) expectTracker(when, status, item string, dispensed int) regDetail {
	r.t.Helper()
	r.b.settle()
	res, d := r.detail("")
	if res.Status != 200 {
		r.t.Errorf("%s: tracker detail %d %.300s", when, res.Status, res.Body)
		return d
	}
	if d.patientNHS != r.g.NHSNumber || d.rgID != r.id() {
		r.t.Errorf("%s: tracker detail Patient %q RequestGroup %q, want %s and %s", when, d.patientNHS, d.rgID, r.g.NHSNumber, r.id())
	}
	if d.status != status {
		r.t.Errorf("%s: tracker status %s, want %s", when, d.status, status)
	}
	if got := d.items[strings.ToLower(r.itemID)]; got != item {
		r.t.Errorf("%s: tracker line item status %s, want %s", when, got, item)
	}
	if len(d.dispenses) != dispensed {
		r.t.Errorf("%s: tracker detail has MedicationDispenses %v, want %d (one per dispensed item)", when, d.dispenses, dispensed)
	}
	for _, q := range []string{"prescriptionId=" + url.QueryEscape(r.id()), "nhsNumber=" + r.g.NHSNumber} {
		patient, groups, res := r.search(q)
		switch {
		case res.Status != 200:
			r.t.Errorf("%s: tracker search %s: %d %.300s", when, q, res.Status, res.Body)
		case patient != r.g.NHSNumber || len(groups) == 0 || groups[0][0] != r.id():
			r.t.Errorf("%s: tracker search %s: entry[0] Patient %q, RequestGroups %v, want %s then %s (cpts_api_methods.py assert_prescription_list)",
				when, q, patient, groups, r.g.NHSNumber, r.id())
		case groups[0][1] != status:
			r.t.Errorf("%s: tracker search %s: status %s, want %s", when, q, groups[0][1], status)
		}
	}
	return d
}

// search runs a tracker search: the NHS number of entry[0] (a Patient) and
// the [ID, status] of each RequestGroup after it.
func (r *regRx) search(q string) (patient string, groups [][2]string, res *response) {
	r.t.Helper()
	res = r.b.do("GET", "/FHIR/R4/RequestGroup?"+q, r.b.token(auth.RoleTracker, regPrescriber), nil)
	if res.Status != 200 {
		return "", nil, res
	}
	m := mustDecode(res.Body)
	for i, e := range asList(m["entry"]) {
		rs := resource(e)
		switch {
		case i == 0 && rs["resourceType"] == "Patient":
			patient = regFirstIdent(rs)
		case rs["resourceType"] == "RequestGroup":
			groups = append(groups, [2]string{regFirstIdent(rs), regSubCode(rs, regExtStatusHx, "status")})
		}
	}
	return patient, groups, res
}

// dispense posts the suite's notification and expects success.
func (r *regRx) dispense(what, itemStatus, status, replacementOf string, erdStyle bool) bool {
	r.t.Helper()
	body, id := r.dnBody(itemStatus, status, replacementOf, erdStyle)
	res := r.b.post(r.dispenserToken(), body)
	if !regInformational(r.t, what, res) {
		return false
	}
	r.dnID = id
	return true
}

// --- Scenarios --------------------------------------------------------------

// create_prescriptions.feature: create, sign and release; nominated
// prescriptions also by a nominated release (no group-identifier).
func TestRegressionCreateAndRelease(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases() {
		for _, byID := range []bool{true, false} {
			if !byID && !c.nominated {
				continue // a non-nominated prescription is in no queue
			}
			name := c.name() + map[bool]string{true: "/by-id", false: "/nominated-release"}[byID]
			t.Run(name, func(t *testing.T) {
				r := newRegRx(t, b, c)
				r.create()
				r.release(byID)
			})
		}
	}
}

// dispense_prescriptions.feature "$release rejects requests that do not
// contain a practitioner role": 400.
func TestRegressionReleaseWithoutAgent(t *testing.T) {
	b := startBroker(t, "")
	r := newRegRx(t, b, regCase{true, regTypes[0]})
	r.create()
	before := b.events(r.id())
	res := b.do("POST", "/FHIR/R4/Task/$release", r.dispenserToken(), r.releaseBody(true, false))
	if res.Status != 400 {
		t.Errorf("release without agent: %d %.400s, want 400", res.Status, res.Body)
	}
	if after := b.events(r.id()); after != before {
		t.Errorf("release without agent: %d events about the prescription, want %d (a refused request changes nothing)", after, before)
	}
	r.expectTracker("after the refused release", "0001", "0007", 0)
}

// cancel_prescriptions.feature: cancel all line items after create.
func TestRegressionCancel(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases() {
		t.Run(c.name(), func(t *testing.T) {
			r := newRegRx(t, b, c)
			r.create()
			res := b.post(r.prescriberToken(), r.cancelBody("0004"))
			if res.Status != 200 {
				t.Fatalf("cancel (cancel.py): %d %.700s", res.Status, res.Body)
			}
			m := mustDecode(res.Body)
			found := false
			for _, e := range asList(m["entry"]) {
				mr := resource(e)
				if mr["resourceType"] != "MedicationRequest" {
					continue
				}
				found = true
				ext := asList(mr["extension"])
				disp := ""
				if len(ext) > 0 {
					if sub := asList(ext[0].(map[string]any)["extension"]); len(sub) > 0 {
						vc, _ := sub[0].(map[string]any)["valueCoding"].(map[string]any)
						disp, _ = vc["display"].(string)
					}
				}
				if disp != "Prescription/item was cancelled" {
					t.Errorf("cancel answer: MedicationRequest.extension[0].extension[0].valueCoding.display %q, want %q", disp, "Prescription/item was cancelled")
				}
			}
			if !found {
				t.Errorf("cancel answer has no MedicationRequest: %.500s", res.Body)
			}
			d := r.expectTracker("after cancel", "0005", "0005", 0)
			if got := d.itemReasons[strings.ToLower(r.itemID)]; got != "0004" {
				t.Errorf("tracker: the cancelled MedicationRequest's statusReason %q, want 0004 (get_prescription.feature cancellation reason)", got)
			}
		})
	}
}

// dispense_prescriptions.feature "I can dispense a prescription", then
// amend and withdraw (the suite runs those on a nominated acute
// prescription; here on every case).
func TestRegressionDispenseAmendWithdraw(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases() {
		t.Run(c.name(), func(t *testing.T) {
			r := newRegRx(t, b, c)
			r.create()
			r.release(true)
			first := ""
			t.Run("dispense", func(t *testing.T) {
				r.t = t
				if r.dispense("dispense (dispense_notification.py, no MessageHeader.sender)", "0001", "0006", "", false) {
					first = r.dnID
					d := r.expectTracker("after dispense", "0006", "0001", 1)
					if got := d.dispenses[strings.ToLower(r.itemID)]; got != "0001" {
						t.Errorf("tracker: MedicationDispense of the item %q, want 0001", got)
					}
				}
			})
			t.Run("amend", func(t *testing.T) {
				r.t = t
				if first == "" {
					t.Fatal("not run: the dispense notification it amends was refused")
				}
				if r.dispense("amend (replacementOf the notification)", "0001", "0006", first, false) {
					r.expectTracker("after amend", "0006", "0001", 1)
				}
			})
			t.Run("withdraw", func(t *testing.T) {
				r.t = t
				if first == "" {
					t.Fatal("not run: the dispense notification it withdraws was refused")
				}
				res := b.do("POST", "/FHIR/R4/Task", r.dispenserToken(), r.withdrawBody())
				if regInformational(t, "withdraw (withdraw_dispense_notification.py, contained Organization the prescriber's)", res) {
					// Back to With Dispenser; for eRD only as far as With
					// Dispenser - Active (eps-spine-shared repeat_dispense.py
					// get_withdrawn_status); the items to 0008 (record.py).
					want := "0002"
					if c.typ.name == "eRD" {
						want = "0003"
					}
					r.expectTracker("after withdraw", want, "0008", 0)
				}
			})
		})
	}
}

// dispense_notification_erd.py's eRD notification: MessageHeader.sender the
// prescriber's ODS code, Extension-EPS-RepeatInformation on the
// MedicationDispense.
func TestRegressionDispenseERDStyle(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases("eRD") {
		t.Run(c.name(), func(t *testing.T) {
			r := newRegRx(t, b, c)
			r.create()
			r.release(true)
			if r.dispense("dispense (dispense_notification_erd.py, MessageHeader.sender the prescriber)", "0001", "0006", "", true) {
				r.expectTracker("after dispense", "0006", "0001", 1)
			}
		})
	}
}

// Issue 10 ("Who sends a message"): a dispense notification without
// MessageHeader.sender whose Organization (the contained PractitionerRole's
// organization) names the prescriber's organisation, as the suite's Tasks
// do: the acting dispenser is the token's, the organisation named inside is
// recorded, not used to refuse.
func TestRegressionDispenseNamingPrescriber(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases("acute") {
		t.Run(c.name(), func(t *testing.T) {
			r := newRegRx(t, b, c)
			r.dnOrg = regPrescriber
			r.create()
			r.release(true)
			if r.dispense("dispense (no MessageHeader.sender, Organization "+regPrescriber+")", "0001", "0006", "", false) {
				r.expectTracker("after dispense", "0006", "0001", 1)
			}
		})
	}
}

// return_prescriptions.feature: create, release, return.
func TestRegressionReturn(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases() {
		t.Run(c.name(), func(t *testing.T) {
			r := newRegRx(t, b, c)
			r.create()
			r.release(true)
			res := b.do("POST", "/FHIR/R4/Task", r.dispenserToken(), r.returnBody())
			if regInformational(t, "return (prescription_return.py, contained Organization the prescriber's, no owner)", res) {
				r.expectTracker("after return", "0001", "0007", 0)
			}
		})
	}
}

// claim.feature: claim after dispensing (eRD also with the repeat
// information in the subDetail); a claim before dispensing is refused.
func TestRegressionClaim(t *testing.T) {
	b := startBroker(t, "")
	for _, c := range regCases() {
		variants := []bool{false}
		if c.typ.name == "eRD" {
			variants = append(variants, true)
		}
		for _, sub := range variants {
			name := c.name()
			if sub {
				name += "/repeat_in_subDetail"
			}
			t.Run(name, func(t *testing.T) {
				r := newRegRx(t, b, c)
				r.create()
				r.release(true)
				t.Run("not-dispensed", func(t *testing.T) {
					r.t = t
					before := b.events(r.id())
					res := b.do("POST", "/FHIR/R4/Claim", r.dispenserToken(), r.claimBody(sub))
					if after := b.events(r.id()); after != before {
						t.Errorf("claim before dispensing: %d events about the prescription, want %d (a refused request changes nothing)", after, before)
					}
					if res.Status != 400 {
						t.Errorf("claim before dispensing: %d %.500s, want 400", res.Status, res.Body)
					} else if oo := res.outcome(t); !oo.hasCode("INVALID_STATE_TRANSITION") {
						t.Errorf("claim before dispensing: codes %v, want INVALID_STATE_TRANSITION: %.600s", oo.codes(), res.Body)
					}
					r.expectTracker("after the refused claim", "0002", "0008", 0)
				})
				r.t = t
				if !r.dispense("dispense (dispense_notification.py)", "0001", "0006", "", false) {
					t.Fatal("claim not run: the dispense notification before it was refused")
				}
				res := b.do("POST", "/FHIR/R4/Claim", r.dispenserToken(), r.claimBody(sub))
				if res.Status != 200 {
					t.Errorf("claim (claim.py): %d %.700s, want 200", res.Status, res.Body)
					return
				}
				r.expectTracker("after claim", "0008", "0001", 1)
			})
		}
	}
}

// get_prescription.feature "non-dispensing reason": released, the line item
// not dispensed with reason 0002 Clinically unsuitable: the detail shows a
// MedicationDispense of the item, Item not dispensed, with the reason.
func TestRegressionNotDispensedReason(t *testing.T) {
	b := startBroker(t, "")
	r := newRegRx(t, b, regCase{true, regTypes[0]})
	r.create()
	r.release(true)
	if !r.dispense("non-dispense (dispense_notification.py, Item not dispensed)", "0002", "0007", "", false) {
		return
	}
	d := r.expectTracker("after non-dispensing", "0007", "0002", 1)
	id := strings.ToLower(r.itemID)
	if d.dispenses[id] != "0002" || d.dispenseReasons[id] != "0002" {
		t.Errorf("tracker: MedicationDispense of the item %q with reason %q, want 0002 with reason 0002", d.dispenses[id], d.dispenseReasons[id])
	}
}

// search_for_prescriptions.feature and get_prescription.feature: the
// tracker's searches and detail as the suite reads them.
func TestRegressionTrackerSearches(t *testing.T) {
	b := startBroker(t, "")
	tok := b.token(auth.RoleTracker, regPrescriber)
	r := newRegRx(t, b, regCase{true, regTypes[0]})
	r.create()
	b.settle()
	search := func(q string) (*response, map[string]any) {
		res := b.do("GET", "/FHIR/R4/RequestGroup?"+q, tok, nil)
		var m map[string]any
		json.Unmarshal(res.Body, &m)
		return res, m
	}
	for _, q := range []string{"nhsNumber=" + r.g.NHSNumber, "prescriptionId=" + url.QueryEscape(r.id())} {
		t.Run("list/"+strings.SplitN(q, "=", 2)[0], func(t *testing.T) {
			res, m := search(q)
			e := asList(m["entry"])
			if res.Status != 200 || len(e) < 2 {
				t.Fatalf("search %s: %d %.500s, want 200 with a Patient and a RequestGroup", q, res.Status, res.Body)
			}
			if got := regFirstIdent(resource(e[0])); got != r.g.NHSNumber {
				t.Errorf("entry[0].resource.identifier[0].value %q, want the NHS number %s", got, r.g.NHSNumber)
			}
			if got := regFirstIdent(resource(e[1])); got != r.id() {
				t.Errorf("entry[1].resource.identifier[0].value %q, want the prescription ID %s", got, r.id())
			}
		})
	}
	t.Run("list/none", func(t *testing.T) {
		for _, q := range []string{"nhsNumber=3152699093", "prescriptionId=" + url.QueryEscape("EBA388-000X26-44ABAC")} {
			res, m := search(q)
			e, ok := m["entry"].([]any)
			if res.Status != 200 || !ok || len(e) != 0 {
				t.Errorf("search %s: %d %.300s, want 200 with \"entry\": [] (assert_empty_prescription_list reads len(entry))", q, res.Status, res.Body)
			}
		}
	})
	t.Run("list/both", func(t *testing.T) {
		res, _ := search("prescriptionId=" + url.QueryEscape(r.id()) + "&nhsNumber=" + r.g.NHSNumber)
		if res.Status != 400 {
			t.Fatalf("both parameters: %d %.300s, want 400", res.Status, res.Body)
		}
		const want = "Invalid query string parameters; only prescriptionId or nhsNumber must be provided, not both."
		if oo := res.outcome(t); oo.Issue[0].Diagnostics != want {
			t.Errorf("both parameters: issue[0].diagnostics %q, want %q", oo.Issue[0].Diagnostics, want)
		}
	})
	t.Run("detail", func(t *testing.T) {
		r.t = t
		d := r.expectTracker("detail", "0001", "0007", 0)
		_ = d
	})
	t.Run("detail/unknown", func(t *testing.T) {
		res := b.do("GET", "/FHIR/R4/RequestGroup/F281C0-000X26-4811B5", tok, nil)
		if res.Status != 404 {
			t.Fatalf("unknown prescription: %d %.300s, want 404", res.Status, res.Body)
		}
		if oo := res.outcome(t); oo.Issue[0].Code != "not-found" {
			t.Errorf("unknown prescription: issue[0].code %q, want not-found", oo.Issue[0].Code)
		}
	})
	t.Run("detail/no-id", func(t *testing.T) {
		res := b.do("GET", "/FHIR/R4/RequestGroup/", tok, nil)
		if res.Status != 400 {
			t.Fatalf("RequestGroup/ without an ID: %d %.300s, want 400", res.Status, res.Body)
		}
		if oo := res.outcome(t); oo.Issue[0].Code != "value" {
			t.Errorf("RequestGroup/ without an ID: issue[0].code %q, want value", oo.Issue[0].Code)
		}
	})
	t.Run("detail/erd-issue-2", func(t *testing.T) {
		e := newRegRx(t, b, regCase{true, regTypes[2]})
		e.create()
		res, d := e.detail("?issueNumber=2")
		if res.Status != 200 {
			t.Fatalf("eRD detail issueNumber=2: %d %.300s", res.Status, res.Body)
		}
		if d.rgID != e.id() || d.patientNHS != e.g.NHSNumber {
			t.Errorf("eRD detail issueNumber=2: RequestGroup %q Patient %q, want %s %s", d.rgID, d.patientNHS, e.id(), e.g.NHSNumber)
		}
		if d.repeatIssued != "2" {
			t.Errorf("eRD detail issueNumber=2: RequestGroup Extension-EPS-RepeatInformation numberOfRepeatsIssued %q, want 2", d.repeatIssued)
		}
	})
}

// eps_fhir_dispensing/validator.feature and validate.feature: a dispenser
// posts to $validate the suite's order as prescription.py builds it,
// unsigned, non-nominated (0004), acute (eps_api_steps.py
// i_make_a_request_to_the_validator_endpoint, x-show-validation-warnings
// false): 200 and exactly one issue, of severity information, none an
// error; "foo": 400 and error issues (the suite also looks for the HAPI
// validator's message number HAPI-1861, which only the HAPI FHIR validator
// writes). The EPS API's $validate (electronic-prescription-service-api
// packages/coordinator/src/routes/debug/validate.ts) runs only the external
// FHIR validator before answering that one information issue: an unsigned
// order is valid FHIR. Nothing is stored either way.
func TestRegressionValidator(t *testing.T) {
	b := startBroker(t, "")
	r := newRegRx(t, b, regCase{false, regTypes[0]})
	tok := r.dispenserToken()
	severities := func(res *response) map[string]int {
		var oo struct {
			ResourceType string
			Issue        []struct{ Severity string }
		}
		n := map[string]int{}
		if json.Unmarshal(res.Body, &oo) != nil || oo.ResourceType != "OperationOutcome" {
			return nil
		}
		for _, is := range oo.Issue {
			n[is.Severity]++
		}
		return n
	}
	t.Run("valid", func(t *testing.T) {
		res := b.do("POST", "/FHIR/R4/$validate", tok, r.unsigned, "x-show-validation-warnings", "false")
		if n := severities(res); res.Status != 200 || n == nil || n["information"] != 1 || n["error"] != 0 || len(n) != 1 {
			t.Errorf("$validate of the suite's order: %d %.600s, want 200 with one information issue", res.Status, res.Body)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		res := b.do("POST", "/FHIR/R4/$validate", tok, []byte("foo"), "x-show-validation-warnings", "false")
		if n := severities(res); res.Status != 400 || n == nil || n["error"] == 0 {
			t.Errorf("$validate of foo: %d %.300s, want 400 with error issues", res.Status, res.Body)
		}
	})
	b.settle()
	if n := b.events(""); n != 0 {
		t.Errorf("$validate stored %d events, want none", n)
	}
}

// eps_fhir_dispensing/unauthorised.feature: a release by an application
// that sends only an API key (no user's bearer token) is unauthorised
// (401), and changes nothing.
func TestRegressionUnauthorised(t *testing.T) {
	b := startBroker(t, "")
	r := newRegRx(t, b, regCase{true, regTypes[0]})
	r.create()
	before := b.events(r.id())
	res := b.do("POST", "/FHIR/R4/Task/$release", "", r.releaseBody(true, true), "apikey", "an-application-key")
	if res.Status != 401 {
		t.Errorf("release with an API key only: %d %.300s, want 401", res.Status, res.Body)
	} else {
		res.outcome(t)
	}
	if after := b.events(r.id()); after != before {
		t.Errorf("release with an API key only: %d events, want %d", after, before)
	}
	r.expectTracker("after the unauthorised release", "0001", "0007", 0)
}

// ping.feature: GET /_ping answers 200 with a version.
func TestRegressionPing(t *testing.T) {
	b := startBroker(t, "")
	res := b.do("GET", "/_ping", "", nil)
	var ping struct{ Version any }
	if res.Status != 200 || json.Unmarshal(res.Body, &ping) != nil || ping.Version == nil || ping.Version == "" {
		t.Errorf("GET /_ping: %d %.200s, want 200 and a JSON object with a version", res.Status, res.Body)
	}
}
