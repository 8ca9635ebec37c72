package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Fixtures the lifecycle tests start from.
const (
	releaseFixture  = "spec/dispensing/release/acute-primary-example-req.json"                                                      // parameter: 0 group-identifier, 1 owner, 2 status, 3 agent
	returnFixture   = "spec/dispensing/return/acute-primary-example-req.json"                                                       // contained: 0 PractitionerRole, 1 Organization
	withdrawFixture = "spec/dispensing/withdraw/acute-primary-example-req.json"                                                     // owner identifier VNE51
	dnFixture       = "spec/dispensing/dispense-notification/acute-primary-example-01-req.json"                                     // 0 MessageHeader, 1-4 MedicationDispense (contained: 0 PractitionerRole, 1 MedicationRequest), 5 Organization
	cancelFixture   = "primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Cancel-200_OK.json" // 0 MessageHeader, 1 MedicationRequest, 2 Patient, 5 Organization
	claimFixture    = "spec/dispensing/claim/acute-primary-example-req.json"                                                        // contained: 0 PractitionerRole, 1 Organization; item[0].detail[0-3]
	dnNHSError      = "errors/3-Process-Request-Dispense-400_Invalid_Value.json"
	dnNHSResponse   = "errors/3-Process-Response-Dispense-400_Invalid_Value.json"
)

// The fixtures' line items (the four-item order 24F5DA-A83008-7EFE6Z).
const (
	item1 = "a54219b8-f741-4c47-b662-e4f8dfa49ab6"
	item2 = "6989b7bd-8db6-428c-a593-4022e3044c00"
	item3 = "2868554c-5565-4d31-b92a-c5b8dab8b90a"
	item4 = "5cb17f5a-11ac-4e18-825f-6470467238b3"
	rx4   = "24F5DA-A83008-7EFE6Z"
	long4 = "20ba5fb5-cb58-462c-923e-22d180b09356"
)

var okReleases = map[string]ReleaseRequest{
	"spec/dispensing/release/acute-primary-example-req.json":                                      {Owner: "VNE51", PrescriptionID: rx4, AgentUserID: "3415870201", AgentRoleID: "555086415105"},
	"spec/dispensing/release/eRD-primary-example-req.json":                                        {Owner: "VNFKT", PrescriptionID: "060CC0-A83008-5A2E6T", AgentUserID: "3415870201", AgentRoleID: "555086415105"},
	"spec/dispensing/release/repeat-primary-example-req.json":                                     {Owner: "VNE51", PrescriptionID: rx4, AgentUserID: "3415870201", AgentRoleID: "555086415105"},
	"primary-care/acute/nominated-pharmacy/medical-prescriber/1-Task-Request-Release-200_OK.json": {Owner: "VNE51", PrescriptionID: rx4, AgentUserID: "3415870201", AgentRoleID: "555086415105"},
	"spec/dispense/Nominated-Pharmacy-Request-Release-200_OK.json":                                {Owner: "VNE51", AgentUserID: "3415870201", AgentRoleID: "555086415105"},
	"spec/dispense/Patient-Request-Release-200_OK.json":                                           {Owner: "VNE51", PrescriptionID: "A0548B-A99968-451485", AgentUserID: "3415870201", AgentRoleID: "555086415105"},
}

var (
	okReturn = TaskRequest{Kind: TaskKindReturn, ID: "ee1b55f8-113c-4725-99a3-25fbad366dd6", PrescriptionID: rx4, NHSNumber: "9449304130",
		Owner: "VNE51", FocusID: "a5d77265-8ba5-4c74-b8ce-ea0dbaafbdb8", Reason: "0003", ReasonDisplay: "Patient requested release"}
	okWithdraw = TaskRequest{Kind: TaskKindWithdraw, ID: "5AC84C11-DB8B-44DA-8FCF-8980B3D13596", PrescriptionID: rx4, NHSNumber: "9449304130",
		Owner: "VNE51", FocusID: "a14d4fc1-82a2-4a82-aae2-50e212e7b907", Reason: "MU", ReasonDisplay: "Medication Update"}
)

// The eRD and repeat examples give Extension-EPS-RepeatInformation
// numberOfRepeatsIssued 2, the acute ones none: a return counts it from 0
// (issue 3, return.ts adds 1), a withdraw from 1 (issue 2, withdraw.ts sends
// it as it is).
var okTasks = map[string]TaskRequest{
	"spec/dispensing/return/acute-primary-example-req.json":    okReturn,
	"spec/dispensing/return/eRD-primary-example-req.json":      withIssue(okReturn, 3),
	"spec/dispensing/return/repeat-primary-example-req.json":   withIssue(okReturn, 3),
	"spec/dispensing/withdraw/acute-primary-example-req.json":  okWithdraw,
	"spec/dispensing/withdraw/eRD-primary-example-req.json":    withIssue(okWithdraw, 3), // numberOfRepeatsIssued 2, from 0 as the return's
	"spec/dispensing/withdraw/repeat-primary-example-req.json": withIssue(okWithdraw, 3),
}

// withIssue is tr naming the repeat dispensing issue n.
func withIssue(tr TaskRequest, n int) TaskRequest {
	tr.Issue = n
	return tr
}

// okDispense is what a dispense notification fixture states: its
// prescription status, replacementOf and the status of each line item.
type okDispense struct {
	status, replacementOf string
	items                 []ClaimItem // line item id and dispensed status
	issue                 int         // the repeat dispensing issue named
}

var okDispenses = map[string]okDispense{
	"spec/dispensing/dispense-notification/acute-primary-example-01-req.json": {"0003", "", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0004"}, {item4, "0005"}}, 0},
	"spec/dispensing/dispense-notification/acute-primary-example-02-req.json": {"0003", "", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0003"}, {item4, "0005"}}, 0},
	"spec/dispensing/dispense-notification/acute-primary-example-03-req.json": {"0006", "", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0001"}, {item4, "0005"}}, 0},
	"spec/dispensing/dispense-notification/acute-primary-example-04-req.json": {"0006", "a14d4fc1-82a2-4a82-aae2-50e212e7b907", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0001"}, {item4, "0005"}}, 0},
	"spec/dispensing/dispense-notification/eRD-primary-example-req.json":      {"0003", "", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0004"}, {item4, "0005"}}, 3},
	"spec/dispensing/dispense-notification/repeat-primary-example-req.json":   {"0003", "", []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0004"}, {item4, "0005"}}, 3},
}

// badDispenses are the dispense notification fixtures that must be refused
// as the NHS EPS API refused errors/3 (acute-primary-example-05 is the same
// message: its two MedicationDispenses give different non-dispensing
// reasons, 0008 and 0004).
var badDispenses = []string{
	dnNHSError,
	"spec/dispensing/dispense-notification/acute-primary-example-05-req.json",
}

func cancellation(bundleID, rx, long, nhs, item, reason, display string) Cancellation {
	return Cancellation{BundleID: bundleID, Sender: "A83008", PrescriptionID: rx, LongID: long, NHSNumber: nhs, LineItemID: item, Reason: reason, ReasonDisplay: display}
}

const (
	cancelDir  = "primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/"
	cancelItem = "299c610b-f4f1-4eac-a7d7-4fb6b0556e11"
)

var okCancellations = map[string]Cancellation{
	cancelDir + "1-Process-Request-Cancel-200_OK.json":                                                               cancellation("22d28bbf-e9ed-4c77-8374-3aaf88596109", "58E241-A83008-4E2F8R", "942fd768-d9a6-4062-8768-6e2faa486c38", "9990548609", cancelItem, "0001", "Prescribing Error"),
	cancelDir + "2-Process-Request-Cancel-200_OK.json":                                                               cancellation("46183abc-9fad-4673-85db-ce2cb6614732", rx4, long4, "9449304130", item4, "0002", "Clinical contra-indication"),
	cancelDir + "3-Process-Request-Cancel-200_OK.json":                                                               cancellation("fcf0d0d0-d976-43e6-9c10-6dbe67816428", "7388B7-A83008-40BB9A", "a5d38e66-570f-4e65-855e-0514ed4f1049", "9990548609", cancelItem, "0003", "Change to medication treatment regime"),
	cancelDir + "4-Process-Request-Cancel-200_OK.json":                                                               cancellation("eaead81f-10d1-4918-a349-1412c9e33e2f", "C293C8-A83008-470B8U", "c7dfe8e3-6e92-46c8-935f-fc94016dd20c", "9990548609", cancelItem, "0004", "Clinical grounds"),
	cancelDir + "5-Process-Request-Cancel-200_OK.json":                                                               cancellation("b3d06c45-0c63-403c-a9da-810a4fafd453", "B29396-A83008-4FE9AK", "18a69c7a-0f65-47e3-a02c-4dedb930c695", "9990548609", cancelItem, "0005", "At the Patient's request"),
	cancelDir + "6-Process-Request-Cancel-200_OK.json":                                                               cancellation("e4b68f98-df8d-4a85-b878-39b13f214f42", "507FE8-A83008-4A859+", "c49a07c9-294f-4d66-bbc9-5dc5b8bff422", "9990548609", cancelItem, "0006", "At the Pharmacist's request"),
	cancelDir + "7-Process-Request-Cancel-200_OK.json":                                                               cancellation("a3b677a4-a18f-4042-82be-18b344ce70fd", "A48D9E-A83008-45CE9Q", "2b348970-89bb-46ef-a003-72a45d71330c", "9990548609", cancelItem, "0007", "Notification of Death"),
	cancelDir + "8-Process-Request-Cancel-200_OK.json":                                                               cancellation("06964c82-2b88-4898-ae86-c74c3b482502", "124C9E-A83008-49E282", "9e7b3d2e-c711-4cb7-99d3-fdc9d993fb65", "9990548609", cancelItem, "0008", "Patient deducted - other reason"),
	cancelDir + "9-Process-Request-Cancel-200_OK.json":                                                               cancellation("26c2db27-c887-40d4-9379-079c1a798399", "7EE792-A83008-4EC8BZ", "5dfe61bc-57ab-42ce-b65a-a96a9b1c3aa7", "9990548609", cancelItem, "0009", "Patient deducted - registered with new practice"),
	"primary-care/acute/nominated-pharmacy/responsible-party-org/cancellations/3-Process-Request-Cancel-200_OK.json": cancellation("46183abc-9fad-4673-85db-ce2cb6614732", rx4, long4, "9449304130", item1, "0002", "Clinical contra-indication"),
	"spec/prescribing/prescription-order-update/eRD-primary-example-req.json":                                        cancellation("46183abc-9fad-4673-85db-ce2cb6614732", rx4, long4, "9449304130", item4, "0002", "Clinical contra-indication"),
	"spec/prescribing/prescription-order-update/repeat-primary-example-req.json":                                     cancellation("46183abc-9fad-4673-85db-ce2cb6614732", rx4, long4, "9449304130", item4, "0002", "Clinical contra-indication"),
}

var okClaim = ClaimRequest{ID: "737dcf8d-fc7a-436d-b692-7d3c4f258083", PrescriptionID: rx4, LongID: long4, NHSNumber: "9449304130",
	Provider: "VNE51", PrescriptionStatus: "0006", Items: []ClaimItem{{item1, "0001"}, {item2, "0001"}, {item3, "0001"}, {item4, "0005"}}}

var okClaims = map[string]ClaimRequest{
	"spec/dispensing/claim/acute-primary-example-req.json":  okClaim,
	"spec/dispensing/claim/eRD-primary-example-req.json":    claimOfIssue(3), // numberOfRepeatsIssued 2, from 0
	"spec/dispensing/claim/repeat-primary-example-req.json": claimOfIssue(3),
}

// claimOfIssue is okClaim naming the repeat dispensing issue n.
func claimOfIssue(n int) ClaimRequest {
	c := okClaim
	c.Issue = n
	return c
}

// TestLifecycleFixturesFound checks that the tables above list every
// lifecycle request among the fixtures.
func TestLifecycleFixturesFound(t *testing.T) {
	listed := func(rel string) bool {
		_, r := okReleases[rel]
		_, tk := okTasks[rel]
		_, d := okDispenses[rel]
		_, c := okCancellations[rel]
		_, cl := okClaims[rel]
		return r || tk || d || c || cl || slices.Contains(badDispenses, rel) ||
			rel == "primary-care/acute/nominated-pharmacy/medical-prescriber/2-Claim-Request-400_Missing_Endorsement_Code.json"
	}
	n := 0
	for _, rel := range findFixtures(t, func(string) bool { return true }) {
		base := path.Base(rel)
		dir := path.Base(path.Dir(rel))
		req := strings.HasSuffix(base, "-req.json") &&
			slices.Contains([]string{"release", "return", "withdraw", "dispense-notification", "claim", "prescription-order-update"}, dir)
		named := strings.Contains(base, "-Request-Release") || strings.Contains(base, "Request-Cancel") ||
			strings.Contains(base, "Request-Dispense") || strings.Contains(base, "Claim-Request")
		if !req && !named {
			continue
		}
		n++
		if !listed(rel) {
			t.Errorf("%s is a lifecycle request that no table lists", rel)
		}
	}
	if n < 35 {
		t.Errorf("found %d lifecycle requests, want at least 35: are the fixtures there?", n)
	}
}

func TestReleaseFixtures(t *testing.T) {
	for rel, want := range okReleases {
		got, err := DecodeReleaseRequest(readFixture(t, rel))
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: got %+v %v, want %+v", rel, got, err, want)
		}
	}
}

func TestTaskFixtures(t *testing.T) {
	for rel, want := range okTasks {
		got, err := DecodeTaskRequest(readFixture(t, rel))
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: got %+v %v, want %+v", rel, got, err, want)
		}
	}
}

func TestDispenseNotificationFixtures(t *testing.T) {
	for rel, want := range okDispenses {
		m, err := DecodeMessage(readFixture(t, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		dn, err := m.DispenseNotification()
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		var items []ClaimItem
		for _, it := range dn.Items {
			items = append(items, ClaimItem{it.LineItemID, it.Status})
		}
		if dn.BundleID != "b240434e-cb85-40bb-899c-1c61410c93a7" || dn.Sender != "VNE51" || dn.PrescriptionID != rx4 ||
			dn.NHSNumber != "9449304130" || dn.PrescriptionStatus != want.status || dn.ReplacementOf != want.replacementOf ||
			dn.NonDispensingReason != "" || !slices.Equal(items, want.items) || dn.Issue != want.issue {
			t.Errorf("%s: got %+v, want %+v", rel, dn, want)
		}
	}
	// The items' medication and quantity.
	m, _ := DecodeMessage(readFixture(t, "spec/dispensing/dispense-notification/acute-primary-example-02-req.json"))
	dn, err := m.DispenseNotification()
	if err != nil {
		t.Fatal(err)
	}
	want := DispensedItem{LineItemID: item3, Status: "0003", MedicationCode: "321080004",
		MedicationDisplay: "Pseudoephedrine hydrochloride 60mg tablets", Quantity: 15, QuantityUnit: "tablet"}
	if dn.Items[2] != want {
		t.Errorf("item 3: got %+v, want %+v", dn.Items[2], want)
	}
}

// TestDispenseNotificationNHSError checks that the notifications the NHS
// EPS API refused answer as it did (3-Process-Response-Dispense-400_Invalid_Value).
func TestDispenseNotificationNHSError(t *testing.T) {
	var resp OperationOutcome
	if err := json.Unmarshal(readFixture(t, dnNHSResponse), &resp); err != nil || len(resp.Issue) != 1 {
		t.Fatalf("response: %v", err)
	}
	want := resp.Issue[0]
	for _, rel := range badDispenses {
		m, err := DecodeMessage(readFixture(t, rel))
		if err != nil {
			t.Fatalf("%s: DecodeMessage: %v", rel, err)
		}
		_, err = m.DispenseNotification()
		e := fhirErr(t, err)
		got := IssueFor(e)
		if got.Severity != want.Severity || got.Code != want.Code || got.Diagnostics != want.Diagnostics ||
			!slices.Equal(got.Expression, want.Expression) || got.Details == nil || len(got.Details.Coding) != 1 ||
			got.Details.Coding[0].System != want.Details.Coding[0].System || got.Details.Coding[0].Code != want.Details.Coding[0].Code {
			t.Errorf("%s: got %+v, want %+v", rel, got, want)
		}
	}
}

func TestCancellationFixtures(t *testing.T) {
	for rel, want := range okCancellations {
		m, err := DecodeMessage(readFixture(t, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		got, err := m.Cancellation()
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: got %+v %v, want %+v", rel, got, err, want)
		}
	}
}

func TestClaimFixtures(t *testing.T) {
	for rel, want := range okClaims {
		got, err := DecodeClaim(readFixture(t, rel))
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: got %+v %v, want %+v", rel, got, err, want)
		}
	}
	// The NHS EPS API refused this claim: its items have no endorsement.
	_, err := DecodeClaim(readFixture(t, "primary-care/acute/nominated-pharmacy/medical-prescriber/2-Claim-Request-400_Missing_Endorsement_Code.json"))
	if e := fhirErr(t, err); e.Code != CodeMissingValue || e.Expression[0] != "Claim.item.detail.programCode" ||
		e.Diagnostics != "The claim is missing the required endorsement code." {
		t.Errorf("claim without endorsement: %v %q", err, e.Expression)
	}
}

// Decoders, by name, for the table tests.
const (
	asRelease = "release"
	asTask    = "task"
	asDN      = "dispense-notification"
	asCancel  = "cancellation"
	asClaim   = "claim"
)

// decodeAs decodes body with the decoder kind; for messages, after
// DecodeMessage, which must accept it.
func decodeAs(t *testing.T, kind string, body []byte) (any, error) {
	t.Helper()
	switch kind {
	case asRelease:
		return DecodeReleaseRequest(body)
	case asTask:
		return DecodeTaskRequest(body)
	case asClaim:
		return DecodeClaim(body)
	}
	m, err := DecodeMessage(body)
	if err != nil {
		t.Fatalf("DecodeMessage: %v", err)
	}
	if kind == asDN {
		return m.DispenseNotification()
	}
	return m.Cancellation()
}

// opOf is the Op of each decoder's errors.
var opOf = map[string]string{
	asRelease: "decode release request", asTask: "decode task", asClaim: "decode claim",
	asDN: "validate dispense-notification", asCancel: "validate cancellation",
}

// lcDelete deletes the member at path (the last step a key) under v.
func lcDelete(v any, path ...any) {
	delete(at(v, path[:len(path)-1]...).(map[string]any), path[len(path)-1].(string))
}

// eachMD applies fn to the resource of every MedicationDispense.
func eachMD(fn func(r map[string]any)) func(b bundle) {
	return func(b bundle) { eachOfType(b, "MedicationDispense", fn) }
}

// setAll sets val at path in every MedicationDispense.
func setAll(val any, path ...any) func(b bundle) {
	return eachMD(func(r map[string]any) { set(r, val, path...) })
}

const (
	taskStatusExt = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	groupIDExt    = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-GroupIdentifier"
)

func TestLifecycleBadInputs(t *testing.T) {
	other := validShortID("ABCDEF-A83008-12345")
	for _, tc := range []struct {
		name, kind, base            string
		edit                        func(b bundle)
		code, issueType, expression string
	}{
		// Release
		{"release: bad check character", asRelease, releaseFixture, func(b bundle) { set(b, "24F5DA-A83008-7EFE6Y", "parameter", 0, "valueIdentifier", "value") },
			CodeInvalidChecksum, "processing", "Parameters.parameter[0].valueIdentifier.value"},
		{"release: malformed short ID", asRelease, releaseFixture, func(b bundle) { set(b, "24F5DA-A83008-7EFE6", "parameter", 0, "valueIdentifier", "value") },
			CodeInvalidValue, "value", "Parameters.parameter[0].valueIdentifier.value"},
		{"release: missing owner", asRelease, releaseFixture, func(b bundle) {
			p := b["parameter"].([]any)
			b["parameter"] = append(p[:1:1], p[2:]...)
		}, CodeMissingValue, "invalid", "Parameters.parameter"},
		{"release: owner without ODS code", asRelease, releaseFixture, func(b bundle) { set(b, []any{}, "parameter", 1, "resource", "identifier") },
			CodeTooFewValues, "invalid", "Organization.identifier"},
		{"release: owner not an Organization", asRelease, releaseFixture, func(b bundle) { set(b, "Patient", "parameter", 1, "resource", "resourceType") },
			CodeMissingValue, "invalid", "Parameters.parameter"},
		{"release: owner neither resource nor identifier", asRelease, releaseFixture, func(b bundle) { lcDelete(b, "parameter", 1, "resource") },
			CodeMissingValue, "invalid", "Parameters.parameter"},
		{"release: parameter without name", asRelease, releaseFixture, func(b bundle) { lcDelete(b, "parameter", 3, "name") },
			CodeInvalidValue, "invalid", "Parameters.parameter"},
		{"release: agent not a PractitionerRole", asRelease, releaseFixture, func(b bundle) { set(b, "Organization", "parameter", 3, "resource", "resourceType") },
			CodeInvalidValue, "invalid", "Parameters.parameter[3].resource"},
		{"release: a Task", asRelease, releaseFixture, func(b bundle) { b["resourceType"] = "Task" },
			CodeInvalidValue, "value", "Parameters.resourceType"},
		{"release: no parameters", asRelease, releaseFixture, func(b bundle) { b["parameter"] = []any{} },
			CodeInvalidValue, "invalid", "Parameters.parameter"},
		{"release: parameter an object", asRelease, releaseFixture, func(b bundle) { b["parameter"] = map[string]any{} },
			CodeInvalidValue, "structure", "Parameters.parameter"},
		{"release: valueCode a number", asRelease, releaseFixture, func(b bundle) { set(b, 1, "parameter", 2, "valueCode") },
			CodeInvalidValue, "structure", "Parameters.parameter[2].valueCode"},

		// Return and withdraw
		{"task: status completed", asTask, returnFixture, func(b bundle) { b["status"] = "completed" },
			CodeInvalidValue, "value", "Task.status"},
		{"task: no status", asTask, returnFixture, func(b bundle) { delete(b, "status") },
			CodeInvalidValue, "value", "Task.status"},
		{"task: withdraw with code fulfill", asTask, withdrawFixture, func(b bundle) { set(b, "fulfill", "code", "coding", 0, "code") },
			CodeInvalidValue, "value", "Task.code.coding.code"},
		{"task: in-progress without code", asTask, withdrawFixture, func(b bundle) { delete(b, "code") },
			CodeMissingValue, "value", "Task.code"},
		{"task: intent plan", asTask, returnFixture, func(b bundle) { b["intent"] = "plan" },
			CodeInvalidValue, "value", "Task.intent"},
		{"task: unknown return reason", asTask, returnFixture, func(b bundle) { set(b, "0009", "statusReason", "coding", 0, "code") },
			CodeInvalidValue, "value", "Task.statusReason.coding[0].code"},
		{"task: unknown withdraw reason", asTask, withdrawFixture, func(b bundle) { set(b, "XX", "statusReason", "coding", 0, "code") },
			CodeInvalidValue, "value", "Task.statusReason.coding[0].code"},
		{"task: withdraw with a return reason", asTask, withdrawFixture, func(b bundle) { b["statusReason"] = clone(readJSON(t, returnFixture)["statusReason"]) },
			CodeInvalidValue, "value", "Task.reasonCode"},
		{"task: no reason", asTask, returnFixture, func(b bundle) { delete(b, "statusReason") },
			CodeInvalidValue, "value", "Task.reasonCode"},
		{"task: bad check character", asTask, returnFixture, func(b bundle) { set(b, "24F5DA-A83008-7EFE6+", "groupIdentifier", "value") },
			CodeInvalidChecksum, "processing", "Task.groupIdentifier.value"},
		{"task: no prescription ID", asTask, withdrawFixture, func(b bundle) { delete(b, "groupIdentifier") },
			CodeMissingValue, "required", "Task.groupIdentifier.value"},
		{"task: bad NHS number (a withdraw's: a return's is not read)", asTask, withdrawFixture, func(b bundle) { set(b, "9449304131", "for", "identifier", "value") },
			CodeInvalidValue, "value", "Task.for.identifier.value"},
		{"task: bad Task.identifier", asTask, withdrawFixture, func(b bundle) { set(b, "5AC84C11", "identifier", 0, "value") },
			CodeInvalidValue, "value", "Task.identifier[0].value"},
		{"task: no owner", asTask, returnFixture, func(b bundle) { delete(b, "contained"); delete(b, "requester") },
			CodeInvalidValue, "invalid", "task.requester"},
		{"task: withdraw without focus", asTask, withdrawFixture, func(b bundle) { delete(b, "focus") },
			CodeMissingValue, "required", "Task.focus.identifier"},
		{"task: withdraw focus not a UUID", asTask, withdrawFixture, func(b bundle) { set(b, "a14d4fc1", "focus", "identifier", "value") },
			CodeInvalidValue, "value", "Task.focus.identifier.value"},
		{"task: a Claim", asTask, returnFixture, func(b bundle) { b["resourceType"] = "Claim" },
			CodeInvalidValue, "value", "Task.resourceType"},
		{"task: status an array", asTask, returnFixture, func(b bundle) { b["status"] = []any{"rejected"} },
			CodeInvalidValue, "structure", "Task.status"},

		// Dispense notification
		{"dispense: mismatched prescription IDs", asDN, dnFixture, func(b bundle) { set(res(b, 2), other, "contained", 1, "groupIdentifier", "value") },
			CodeInvalidValue, "invalid", "Bundle.entry[2].resource.contained[1].groupIdentifier.value"},
		{"dispense: bad check character", asDN, dnFixture, setAll("24F5DA-A83008-7EFE6Y", "contained", 1, "groupIdentifier", "value"),
			CodeInvalidChecksum, "processing", "Bundle.entry[1].resource.contained[1].groupIdentifier.value"},
		{"dispense: unknown dispense type", asDN, dnFixture, func(b bundle) { set(res(b, 3), "0009", "type", "coding", 0, "code") },
			CodeInvalidValue, "value", "Bundle.entry[3].resource.type.coding[0].code"},
		{"dispense: dispense type to be dispensed", asDN, dnFixture, func(b bundle) { set(res(b, 2), "0007", "type", "coding", 0, "code") },
			CodeInvalidValue, "value", "Bundle.entry[2].resource.type.coding[0].code"},
		{"dispense: dispense type of another system", asDN, dnFixture, func(b bundle) { set(res(b, 1), "https://example.org/cs", "type", "coding", 0, "system") },
			CodeTooFewValues, "invalid", "MedicationDispense.type.coding"},
		{"dispense: no dispense type", asDN, dnFixture, func(b bundle) { delete(res(b, 4), "type") },
			CodeTooFewValues, "invalid", "MedicationDispense.type.coding"},
		{"dispense: contradictory statuses of one line item", asDN, dnFixture, func(b bundle) { set(res(b, 3), item1, "contained", 1, "identifier", 0, "value") },
			CodeInvalidValue, "invalid", "Bundle.entry[3].resource.type.coding"},
		{"dispense: prescription status to be dispensed", asDN, dnFixture, setAll("0001", "extension", 0, "valueCoding", "code"),
			CodeInvalidValue, "value", "Bundle.entry[1].resource.extension[0].valueCoding.code"},
		{"dispense: no prescription status", asDN, dnFixture, func(b bundle) { delete(res(b, 1), "extension") },
			CodeTooFewValues, "invalid", "MedicationDispense.extension"},
		{"dispense: bad NHS number", asDN, dnFixture, setAll("9449304131", "subject", "identifier", "value"),
			CodeInvalidValue, "value", "Bundle.entry[1].resource.subject.identifier.value"},
		{"dispense: no NHS number", asDN, dnFixture, func(b bundle) { delete(res(b, 1), "subject") },
			CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationDispense).subject.identifier.value"},
		{"dispense: mixed NHS numbers", asDN, dnFixture, func(b bundle) { set(res(b, 3), "9990548609", "subject", "identifier", "value") },
			CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationDispense).subject.identifier.value"},
		{"dispense: authorizingPrescription not a MedicationRequest", asDN, dnFixture, func(b bundle) { set(res(b, 1), "#performer", "authorizingPrescription", 0, "reference") },
			CodeInvalidValue, "invalid", "Bundle.entry[1].resource.authorizingPrescription[0].reference"},
		{"dispense: no authorizingPrescription", asDN, dnFixture, func(b bundle) { delete(res(b, 2), "authorizingPrescription") },
			CodeMissingValue, "required", "Bundle.entry[2].resource.authorizingPrescription"},
		{"dispense: line item id not a UUID", asDN, dnFixture, func(b bundle) { set(res(b, 1), "a54219b8", "contained", 1, "identifier", 0, "value") },
			CodeInvalidValue, "value", "Bundle.entry[1].resource.contained[1].identifier[0].value"},
		{"dispense: no line item id", asDN, dnFixture, func(b bundle) { set(res(b, 1), []any{}, "contained", 1, "identifier") },
			CodeTooFewValues, "invalid", "MedicationDispense.contained[0].identifier"},
		{"dispense: no MedicationDispense", asDN, dnFixture, func(b bundle) {
			b["entry"] = []any{entries(b)[0], entries(b)[5]}
			delete(res(b, 0), "focus")
		}, CodeMissingValue, "required", "Bundle.entry.resource.ofType(MedicationDispense)"},
		{"dispense: replacementOf not a UUID", asDN, dnFixture, func(b bundle) {
			res(b, 0)["extension"] = []any{map[string]any{"url": ExtReplacementOf, "valueIdentifier": map[string]any{"value": "a14d4fc1"}}}
		}, CodeInvalidValue, "value", "MessageHeader.extension('" + ExtReplacementOf + "').valueIdentifier.value"},
		{"dispense: a cancellation", asDN, cancelFixture, nil,
			CodeInvalidValue, "value", "MessageHeader.eventCoding.code"},
		{"dispense: quantity a string", asDN, dnFixture, func(b bundle) { set(res(b, 2), "20", "quantity", "value") },
			CodeInvalidValue, "structure", "Bundle.entry[2].resource.quantity.value"},
		{"dispense: contained MedicationRequest's groupIdentifier a string", asDN, dnFixture, func(b bundle) { set(res(b, 1), rx4, "contained", 1, "groupIdentifier") },
			CodeInvalidValue, "structure", "Bundle.entry[1].resource.contained[1].groupIdentifier"},

		// Cancellation
		{"cancel: two MedicationRequests", asCancel, cancelFixture, func(b bundle) {
			second := clone(entries(b)[1]).(map[string]any)
			second["fullUrl"] = newURN()
			b["entry"] = append(entries(b), second)
		}, CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest)"},
		{"cancel: no MedicationRequest", asCancel, cancelFixture, func(b bundle) { res(b, 1)["resourceType"] = "Basic" },
			CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest)"},
		{"cancel: status active", asCancel, cancelFixture, func(b bundle) { res(b, 1)["status"] = "active" },
			CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).status"},
		{"cancel: no status", asCancel, cancelFixture, func(b bundle) { delete(res(b, 1), "status") },
			CodeInvalidValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).status"},
		{"cancel: no statusReason", asCancel, cancelFixture, func(b bundle) { delete(res(b, 1), "statusReason") },
			CodeMissingValue, "value", "Bundle.entry.resource.ofType(MedicationRequest).statusReason"},
		{"cancel: unknown reason", asCancel, cancelFixture, func(b bundle) { set(res(b, 1), "0010", "statusReason", "coding", 0, "code") },
			CodeInvalidValue, "value", "Bundle.entry[1].resource.statusReason.coding[0].code"},
		{"cancel: reason of another system", asCancel, cancelFixture, func(b bundle) { set(res(b, 1), SystemReturnReason, "statusReason", "coding", 0, "system") },
			CodeTooFewValues, "invalid", "MedicationRequest.statusReason"},
		{"cancel: bad check character", asCancel, cancelFixture, func(b bundle) { set(res(b, 1), "58E241-A83008-4E2F8S", "groupIdentifier", "value") },
			CodeInvalidChecksum, "processing", "Bundle.entry[1].resource.groupIdentifier.value"},
		{"cancel: no long-form ID", asCancel, cancelFixture, func(b bundle) { set(res(b, 1), []any{}, "groupIdentifier", "extension") },
			CodeTooFewValues, "invalid", "MedicationRequest.groupIdentifier.extension"},
		{"cancel: no line item id", asCancel, cancelFixture, func(b bundle) { set(res(b, 1), []any{}, "identifier") },
			CodeTooFewValues, "invalid", "MedicationRequest.identifier"},
		{"cancel: bad NHS number", asCancel, cancelFixture, func(b bundle) { set(res(b, 2), "9990548608", "identifier", 0, "value") },
			CodeInvalidValue, "value", "Bundle.entry[2].resource.identifier[0].value"},
		{"cancel: a dispense notification", asCancel, dnFixture, nil,
			CodeInvalidValue, "value", "MessageHeader.eventCoding.code"},
		{"cancel: statusReason a string", asCancel, cancelFixture, func(b bundle) { res(b, 1)["statusReason"] = "0001" },
			CodeInvalidValue, "structure", "Bundle.entry[1].resource.statusReason"},

		// Claim
		{"claim: not NHSBSA", asClaim, claimFixture, func(b bundle) { set(b, "RBA", "insurance", 0, "coverage", "identifier", "value") },
			CodeInvalidValue, "value", "Claim.insurance[0].coverage.identifier.value"},
		{"claim: second insurer", asClaim, claimFixture, func(b bundle) {
			ins := clone(at(b, "insurance", 0))
			set(ins, "X26", "coverage", "identifier", "value")
			b["insurance"] = append(b["insurance"].([]any), ins)
		}, CodeInvalidValue, "invalid", "Claim.insurance"},
		{"claim: no insurance", asClaim, claimFixture, func(b bundle) { delete(b, "insurance") },
			CodeInvalidValue, "invalid", "Claim.insurance"},
		{"claim: bad check character", asClaim, claimFixture, func(b bundle) {
			set(b, "24F5DA-A83008-7EFE6Y", "prescription", "extension", 0, "extension", 0, "valueIdentifier", "value")
		}, CodeInvalidChecksum, "processing", "Claim.prescription.extension[0].extension[0].valueIdentifier.value"},
		{"claim: no group identifier", asClaim, claimFixture, func(b bundle) { set(b, []any{}, "prescription", "extension") },
			CodeMissingValue, "required", "Claim.prescription.extension('" + groupIDExt + "')"},
		{"claim: bad long-form ID", asClaim, claimFixture, func(b bundle) {
			set(b, "{{prescription_uuid}}", "prescription", "extension", 0, "extension", 1, "valueIdentifier", "value")
		}, CodeInvalidValue, "value", "Claim.prescription.extension[0].extension[1].valueIdentifier.value"},
		{"claim: no provider", asClaim, claimFixture, func(b bundle) { delete(b, "contained"); delete(b, "provider"); delete(b, "payee") },
			CodeInvalidValue, "invalid", "Claim.provider"},
		{"claim: no identifier", asClaim, claimFixture, func(b bundle) { delete(b, "identifier") },
			CodeInvalidValue, "invalid", "Claim.identifier"},
		{"claim: identifier not a UUID", asClaim, claimFixture, func(b bundle) { set(b, "737dcf8d", "identifier", 0, "value") },
			CodeInvalidValue, "value", "Claim.identifier[0].value"},
		{"claim: prescription status with dispenser", asClaim, claimFixture, func(b bundle) { set(b, "0003", "item", 0, "extension", 0, "valueCoding", "code") },
			CodeInvalidValue, "value", "Claim.item[0].extension[0].valueCoding.code"},
		{"claim: no items", asClaim, claimFixture, func(b bundle) { b["item"] = []any{} },
			CodeMissingValue, "invalid", "Claim.item.detail.programCode"},
		{"claim: detail without line item", asClaim, claimFixture, func(b bundle) {
			exts := at(b, "item", 0, "detail", 2, "extension").([]any)
			set(b, slices.DeleteFunc(exts, func(e any) bool { return e.(map[string]any)["url"] == ExtClaimLineItemRef }), "item", 0, "detail", 2, "extension")
		}, CodeTooFewValues, "invalid", "Claim.item.detail.extension"},
		{"claim: unknown line item status", asClaim, claimFixture, func(b bundle) { set(b, "0009", "item", 0, "detail", 1, "modifier", 0, "coding", 0, "code") },
			CodeInvalidValue, "value", "Claim.item[0].detail[1].modifier[0].coding[0].code"},
		{"claim: replacementOf not a UUID", asClaim, claimFixture, func(b bundle) {
			b["extension"] = append(b["extension"].([]any), map[string]any{"url": ExtReplacementOf, "valueIdentifier": map[string]any{"value": "x"}})
		}, CodeInvalidValue, "value", "Claim.extension[1].valueIdentifier.value"},
		{"claim: a Task", asClaim, claimFixture, func(b bundle) { b["resourceType"] = "Task" },
			CodeInvalidValue, "value", "Claim.resourceType"},
		{"claim: item an object", asClaim, claimFixture, func(b bundle) { b["item"] = map[string]any{} },
			CodeInvalidValue, "structure", "Claim.item"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := readFixture(t, tc.base)
			if tc.edit != nil {
				body = mutate(t, body, tc.edit)
			}
			got, err := decodeAs(t, tc.kind, body)
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			e := fhirErr(t, err)
			if e.Code != tc.code || e.IssueType != tc.issueType || e.Expression[0] != tc.expression || e.Op != opOf[tc.kind] {
				t.Errorf("got %s %s %q (%s: %s), want %s %s %q", e.Code, e.IssueType, e.Expression, e.Op, e.Diagnostics, tc.code, tc.issueType, tc.expression)
			}
			if !reflect.ValueOf(got).IsNil() {
				t.Errorf("a value with the error: %+v", got)
			}
		})
	}
}

// TestLifecycleBadBodies checks what the standalone decoders answer to
// bodies that are not a JSON object.
func TestLifecycleBadBodies(t *testing.T) {
	task := readFixture(t, returnFixture)
	for _, tc := range []struct {
		name string
		body []byte
		only string // the one decoder that must answer structure, when not all
	}{
		{"empty", nil, ""},
		{"not JSON", task[:len(task)/2], ""},
		{"trailing garbage", append(bytes.Clone(task), '}'), ""},
		{"not UTF-8", bytes.Replace(task, []byte("Austhorpe"), []byte("Aust\xffhorpe"), 1), ""},
		{"array", []byte(`[{"resourceType":"Task"}]`), ""},
		{"string", []byte(`"Task"`), ""},
		{"resourceType twice", bytes.Replace(task, []byte(`"resourceType": "Task",`), []byte(`"resourceType": "Task", "resourceType": "Task",`), 1), ""},
		{"status twice", bytes.Replace(task, []byte(`"status": "rejected",`), []byte(`"status": "rejected", "status": "in-progress",`), 1), asTask},
	} {
		for kind, root := range map[string]string{asRelease: "Parameters", asTask: "Task", asClaim: "Claim"} {
			if tc.only != "" && kind != tc.only {
				continue
			}
			_, err := decodeAs(t, kind, tc.body)
			e := fhirErr(t, err)
			if e.Code != CodeInvalidValue || e.IssueType != "structure" || !strings.HasPrefix(e.Expression[0], root) {
				t.Errorf("%s as %s: %s %s %q %s", tc.name, kind, e.Code, e.IssueType, e.Expression, e.Diagnostics)
			}
		}
	}
}

// TestLifecycleGoodVariants checks forms of the messages that the fixtures
// do not show but that the decoders accept.
func TestLifecycleGoodVariants(t *testing.T) {
	t.Run("return with owner and long-form ID", func(t *testing.T) {
		body := mutate(t, readFixture(t, returnFixture), func(b bundle) {
			b["owner"] = map[string]any{"identifier": map[string]any{"system": SystemODSCode, "value": "FA565"}}
			set(b, []any{map[string]any{"url": ExtPrescriptionLongID, "valueIdentifier": map[string]any{"value": long4}}}, "groupIdentifier", "extension")
			delete(b, "for")
		})
		tr, err := DecodeTaskRequest(body)
		if err != nil || tr.Owner != "FA565" || tr.LongID != long4 || tr.NHSNumber != "" {
			t.Errorf("got %+v %v", tr, err)
		}
	})
	t.Run("return owned by the requester's organization identifier", func(t *testing.T) {
		body := mutate(t, readFixture(t, returnFixture), func(b bundle) {
			set(b, map[string]any{"identifier": map[string]any{"system": SystemODSCode, "value": "FCG71"}}, "contained", 0, "organization")
		})
		tr, err := DecodeTaskRequest(body)
		if err != nil || tr.Owner != "FCG71" {
			t.Errorf("got %+v %v", tr, err)
		}
	})
	t.Run("dispense with one non-dispensing reason", func(t *testing.T) {
		body := mutate(t, readFixture(t, dnNHSError), eachMD(func(r map[string]any) { set(r, "0004", "extension", 1, "valueCoding", "code") }))
		m, err := DecodeMessage(body)
		if err != nil {
			t.Fatal(err)
		}
		dn, err := m.DispenseNotification()
		want := []DispensedItem{
			{LineItemID: item1, Status: "0001", MedicationCode: "13892511000001100", MedicationDisplay: "Amlodipine 5mg/5ml oral solution", Quantity: 5, QuantityUnit: "ml"},
			{LineItemID: "a54219b8-f741-4c47-b662-e4f8dfa49ab7", Status: "0001", MedicationCode: "317972000", MedicationDisplay: "Furosemide 40mg tablets", Quantity: 28, QuantityUnit: "tablet"},
		}
		if err != nil || dn.NonDispensingReason != "0004" || dn.PrescriptionStatus != "0007" || dn.Sender != "VNCEL" ||
			dn.PrescriptionID != "A0548B-A99968-451485" || dn.NHSNumber != "9449304106" || !slices.Equal(dn.Items, want) {
			t.Errorf("got %+v %v", dn, err)
		}
	})
	// The NHS number is the one Patient's (cancellation.ts getPatient): the
	// subject is not read.
	t.Run("cancellation naming the patient by identifier", func(t *testing.T) {
		body := mutate(t, readFixture(t, cancelFixture), func(b bundle) {
			set(res(b, 1), map[string]any{"identifier": map[string]any{"system": SystemNHSNumber, "value": "9449304130"}}, "subject")
		})
		m, err := DecodeMessage(body)
		if err != nil {
			t.Fatal(err)
		}
		c, err := m.Cancellation()
		if err != nil || c.NHSNumber != "9990548609" {
			t.Errorf("got %+v %v", c, err)
		}
	})
	t.Run("release, task and cancellation forms EPS does not refuse", func(t *testing.T) {
		rr, err := DecodeReleaseRequest(mutate(t, readFixture(t, releaseFixture), func(b bundle) {
			set(b, "https://example.org/id", "parameter", 0, "valueIdentifier", "system")
			set(b, "VNE 51", "parameter", 1, "resource", "identifier", 0, "value")
		}))
		if err != nil || rr.Owner != "VNE 51" {
			t.Errorf("release: %+v %v", rr, err)
		}
		tr, err := DecodeTaskRequest(mutate(t, readFixture(t, returnFixture), func(b bundle) {
			set(b, []any{map[string]any{"url": ExtPrescriptionLongID, "valueIdentifier": map[string]any{"value": "20ba5fb5"}}}, "groupIdentifier", "extension")
		}))
		if err != nil || tr.LongID != "" {
			t.Errorf("task: %+v %v", tr, err)
		}
		m, err := DecodeMessage(mutate(t, readFixture(t, cancelFixture), func(b bundle) {
			res(b, 0)["reason"] = map[string]any{"coding": []any{map[string]any{"system": SystemMessageReason, "code": "notification"}}}
			set(res(b, 1), at(b, "entry", 5, "fullUrl"), "subject", "reference")
			set(res(b, 1), "FCG 71", "dispenseRequest", "performer", "identifier", "value")
			set(res(b, 5), "A83 008", "identifier", 0, "value")
		}))
		if err != nil {
			t.Fatal(err)
		}
		if c, err := m.Cancellation(); err != nil {
			t.Errorf("cancellation: %+v %v", c, err)
		}
	})
}

// TestReferencesWhereRead checks that a message's references are resolved
// only where EPS reads them (nhs-eps-api translation/common: resolveReference
// by fullUrl, getContained...ViaReference by "#id"); DecodeMessage resolves
// none, and a reference nobody reads may name anything.
func TestReferencesWhereRead(t *testing.T) {
	for _, tc := range []struct {
		name, kind, base string
		edit             func(b bundle)
		code, expr       string // the refusal, or "" when accepted
	}{
		{"dispense: contained MedicationRequest names the order's patient", asDN, dnFixture,
			func(b bundle) { set(res(b, 1), map[string]any{"reference": newURN()}, "contained", 1, "subject") }, "", ""},
		{"dispense: a local reference inside contained that EPS does not read", asDN, dnFixture,
			func(b bundle) { set(res(b, 1), map[string]any{"reference": "#nowhere"}, "contained", 1, "subject") }, "", ""},
		{"dispense: the performer names no contained resource", asDN, dnFixture,
			func(b bundle) { set(res(b, 1), newURN(), "performer", 0, "actor", "reference") },
			CodeInvalidValue, "Bundle.entry[1].resource.performer[0].actor.reference"},
		{"dispense: the contained PractitionerRole's organization names no entry", asDN, dnFixture,
			func(b bundle) {
				eachOfType(b, "MedicationDispense", func(r map[string]any) { set(r, newURN(), "contained", 0, "organization", "reference") })
			},
			CodeTooFewValues, "Bundle.entry"},
		{"cancellation: contained resource names one elsewhere", asCancel, cancelFixture,
			func(b bundle) {
				res(b, 1)["contained"] = []any{map[string]any{"resourceType": "Provenance", "id": "p", "target": []any{map[string]any{"reference": newURN()}}}}
			}, "", ""},
		{"cancellation: the requester names no entry", asCancel, cancelFixture,
			func(b bundle) { set(res(b, 1), newURN(), "requester", "reference") }, CodeTooFewValues, "Bundle.entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeAs(t, tc.kind, mutate(t, readFixture(t, tc.base), tc.edit))
			if tc.code == "" {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if e := fhirErr(t, err); e.Code != tc.code || e.Expression[0] != tc.expr {
				t.Errorf("got %v %q, want %s at %s", err, e.Expression, tc.code, tc.expr)
			}
		})
	}
	// An order's references are resolved where EPS reads them (Order):
	// DecodeMessage resolves none.
	if _, err := DecodeMessage(mutate(t, readFixture(t, order4Items), func(b bundle) {
		res(b, 1)["contained"] = []any{map[string]any{"resourceType": "Provenance", "id": "p", "target": []any{map[string]any{"reference": "urn:uuid:0d0a3a3e-5c2b-4c7e-9b1a-000000000000"}}}}
	})); err != nil {
		t.Errorf("order: %v", err)
	}
}

// readJSON reads a fixture as a JSON object.
func readJSON(t testing.TB, rel string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(readFixture(t, rel), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// FuzzLifecycle feeds every lifecycle decoder with the fixtures, their byte
// mutations and, to reach past the JSON syntax, the same fixtures with one
// value (chosen by p among all of them) replaced by v (as JSON, or else as a
// string). The decoders must never panic, every error must be a complete
// *Error of KindInvalid, and what they accept must hold what they promise.
func FuzzLifecycle(f *testing.F) {
	for _, rel := range findFixtures(f, func(string) bool { return true }) {
		f.Add(readFixture(f, rel), uint16(0), "")
	}
	f.Add(readFixture(f, dnFixture), uint16(300), `"0007"`)
	f.Add(readFixture(f, claimFixture), uint16(120), `{"reference":"#provider"}`)
	for _, s := range repeatSeeds {
		f.Add(readFixture(f, s.rel), pathIndex(f, s.rel, s.path...), s.v)
	}
	f.Fuzz(func(t *testing.T, body []byte, p uint16, v string) {
		checkLifecycle(t, body)
		var doc any
		if p == 0 || json.Unmarshal(body, &doc) != nil {
			return
		}
		paths := jsonPaths(doc, nil)
		path := paths[int(p)%len(paths)]
		if len(path) == 0 {
			return
		}
		var val any
		if json.Unmarshal([]byte(v), &val) != nil {
			val = v
		}
		set(doc, val, path...)
		edited, err := json.Marshal(doc)
		if err != nil {
			return
		}
		checkLifecycle(t, edited)
	})
}

// checkLifecycle runs every lifecycle decoder on body.
func checkLifecycle(t *testing.T, body []byte) {
	t.Helper()
	isNil := func(v any) bool { return reflect.ValueOf(v).IsNil() }
	check := func(v any, err error, ok func() bool) {
		t.Helper()
		if err != nil {
			checkOutcome(t, err)
			if !isNil(v) {
				t.Fatalf("a value with the error %v: %+v", err, v)
			}
			return
		}
		if !ok() {
			t.Fatalf("accepted %+v", v)
		}
	}
	rr, err := DecodeReleaseRequest(body)
	check(rr, err, func() bool {
		return ValidODSCode(rr.Owner) && (rr.PrescriptionID == "" || ValidShortID(rr.PrescriptionID))
	})
	tr, err := DecodeTaskRequest(body)
	check(tr, err, func() bool {
		reasons := ReturnReasons
		if tr.Kind == TaskKindWithdraw {
			reasons = WithdrawReasons
			if !ValidUUID(tr.FocusID) {
				return false
			}
		}
		return (tr.Kind == TaskKindReturn || tr.Kind == TaskKindWithdraw) && ValidShortID(tr.PrescriptionID) && validIssue(tr.Issue) &&
			(tr.Owner == "" || ValidODSCode(tr.Owner)) && slices.Contains(reasons, tr.Reason) &&
			(tr.NHSNumber == "" || ValidNHSNumber(tr.NHSNumber)) && (tr.ID == "" || ValidUUID(tr.ID))
	})
	cl, err := DecodeClaim(body)
	check(cl, err, func() bool {
		ok := ValidUUID(cl.ID) && ValidShortID(cl.PrescriptionID) && ValidUUID(cl.LongID) && ValidNHSNumber(cl.NHSNumber) &&
			(cl.Provider == "" || ValidODSCode(cl.Provider)) && len(cl.Items) > 0 && slices.Contains(ClaimPrescriptionStatuses, cl.PrescriptionStatus) && validIssue(cl.Issue)
		for _, it := range cl.Items {
			ok = ok && ValidUUID(it.LineItemID) && slices.Contains(DispensedItemStatuses, it.Status)
		}
		return ok
	})
	m, err := DecodeMessage(body)
	if err != nil {
		checkOutcome(t, err)
		return
	}
	dn, err := m.DispenseNotification()
	check(dn, err, func() bool {
		ok := m.Event == EventDispenseNotification && ValidShortID(dn.PrescriptionID) && ValidNHSNumber(dn.NHSNumber) &&
			(dn.Sender == "" || ValidODSCode(dn.Sender)) && len(dn.Items) > 0 && slices.Contains(DispensePrescriptionStatuses, dn.PrescriptionStatus) && validIssue(dn.Issue)
		for _, it := range dn.Items {
			ok = ok && ValidUUID(it.LineItemID) && slices.Contains(DispensedItemStatuses, it.Status)
		}
		return ok
	})
	c, err := m.Cancellation()
	check(c, err, func() bool {
		return m.Event == EventPrescriptionOrderUpdate && ValidShortID(c.PrescriptionID) && ValidUUID(c.LongID) &&
			ValidNHSNumber(c.NHSNumber) && ValidUUID(c.LineItemID) && slices.Contains(CancellationReasons, c.Reason)
	})
	var e *Error
	if err != nil && !errors.As(err, &e) {
		t.Fatalf("%T", err)
	}
}
