package test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Hostile bodies (issue 11): arrays of many bad elements, which took the
// reader time growing with the square of the body (a 96 KB body 18 s of
// CPU), deep nesting, and members given twice, which the broker read one way
// and a parser keeping the first copy another. Each is refused with a 400
// OperationOutcome naming where, and nothing is stored.
func TestSecurityHostileBodiesRefused(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const dispenser = "FA565"
	dn, _ := fhirgen.DispenseNotification(g, dispenser, map[string]string{g.ItemIDs[0]: "0001"}, "0006", "")
	claim, _ := fhirgen.Claim(g, dispenser, "")
	var (
		prescriber = b.token(auth.RolePrescriber, g.Sender)
		pharmacy   = b.token(auth.RoleDispenser, dispenser)
		tracker    = b.token(auth.RoleTracker, g.Sender)
	)
	const (
		message = "/FHIR/R4/$process-message"
		release = "/FHIR/R4/Task/$release"
		task    = "/FHIR/R4/Task"
		claims  = "/FHIR/R4/Claim"
		maxBody = 1000 << 10 // under the default --max-body of 1 MiB
		bound   = fhir.MaxJSONArray
	)
	bare := []byte(`{"resourceType":"Bundle","type":"message","entry":` + sentinelJSON + `}`)
	org := func(m map[string]any) map[string]any { return firstOfType(m, "Organization") }
	cases := []struct {
		name, path, token string
		body              []byte
		code, issueType   string
		expr              string // the expression, or its start when it ends with "*"
	}{
		// Many bad elements: within the bound, the first is named; past
		// it, the array.
		{"bare Bundle entry [{}], 1 MiB", message, tracker, fill(t, bare, `{}`, 0, maxBody),
			fhir.CodeInvalidValue, "too-long", "Bundle.entry"},
		{"Bundle entry [{}]", message, prescriber, fill(t, withSentinel(g.Body, func(m map[string]any) { m["entry"] = sentinel }), `{}`, bound, 0),
			fhir.CodeMissingValue, "required", "Bundle.entry[0].resource"},
		{"Bundle entry [1], 1 MiB", message, prescriber, fill(t, withSentinel(g.Body, func(m map[string]any) { m["entry"] = sentinel }), `1`, 0, maxBody),
			fhir.CodeInvalidValue, "too-long", "Bundle.entry"},
		{"Organization telecom [1]", message, prescriber, fill(t, withSentinel(g.Body, func(m map[string]any) { org(m)["telecom"] = sentinel }), `1`, bound, 0),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[*"},
		{"Organization telecom [1], 1 MiB", message, prescriber, fill(t, withSentinel(g.Body, func(m map[string]any) { org(m)["telecom"] = sentinel }), `1`, 0, maxBody),
			fhir.CodeInvalidValue, "too-long", "Bundle.entry[*"},
		{"MedicationDispense contained [1]", message, pharmacy, fill(t, withSentinel(dn, func(m map[string]any) { medicationDispenses(m)[0]["contained"] = sentinel }), `1`, bound, 0),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[1].resource.contained[0]"},
		{"release parameter [1]", release, pharmacy, fill(t, withSentinel(fhirgen.Release(dispenser, g.ShortID), func(m map[string]any) { m["parameter"] = sentinel }), `1`, bound, 0),
			fhir.CodeInvalidValue, "structure", "Parameters.parameter[0]"},
		{"release parameter [1], 1 MiB", release, pharmacy, fill(t, withSentinel(fhirgen.Release(dispenser, g.ShortID), func(m map[string]any) { m["parameter"] = sentinel }), `1`, 0, maxBody),
			fhir.CodeInvalidValue, "too-long", "Parameters.parameter"},
		{"Task identifier [1]", task, pharmacy, fill(t, withSentinel(fhirgen.ReturnTask(g, dispenser, "0003"), func(m map[string]any) { m["identifier"] = sentinel }), `1`, bound, 0),
			fhir.CodeInvalidValue, "structure", "Task.identifier[0]"},
		{"Claim item [1]", claims, pharmacy, fill(t, withSentinel(claim, func(m map[string]any) { m["item"] = sentinel }), `1`, bound, 0),
			fhir.CodeInvalidValue, "structure", "Claim.item[0]"},
		{"Claim item [1], 1 MiB", claims, pharmacy, fill(t, withSentinel(claim, func(m map[string]any) { m["item"] = sentinel }), `1`, 0, maxBody),
			fhir.CodeInvalidValue, "too-long", "Claim.item"},
		// Nesting.
		{"entry nested 100 deep", message, prescriber, []byte(`{"resourceType":"Bundle","type":"message","entry":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`),
			fhir.CodeInvalidValue, "structure", "Bundle.entry" + strings.Repeat("[0]", fhir.MaxJSONDepth-1)},
		{"Claim item nested 100 deep", claims, pharmacy, fill(t, withSentinel(claim, func(m map[string]any) { m["item"] = sentinel }), strings.Repeat("[", 100)+strings.Repeat("]", 100), 1, 0),
			fhir.CodeInvalidValue, "structure", "Claim.item[0]*"},
		// Members given twice: the first copy is what a parser keeping the
		// first would read.
		{"MessageHeader.sender twice", message, prescriber, twice(t, g.Body, `"sender":`,
			`"sender":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"B81001"}},`),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[0].resource.sender"},
		{"NHS number twice", message, prescriber, twice(t, g.Body, `"system":"https://fhir.nhs.uk/Id/nhs-number",`, `"value":"9990548609",`),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[*"},
		{"performer twice", message, prescriber, twice(t, g.Body, `"performer":`,
			`"performer":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FCG71"}},`),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[1].resource.dispenseRequest.performer"},
		{"prescription ID twice", message, prescriber, twice(t, g.Body, `"system":"https://fhir.nhs.uk/Id/prescription-order-number",`, `"value":"`+fhirgen.ShortID("A83008")+`",`),
			fhir.CodeInvalidValue, "structure", "Bundle.entry[1].resource.groupIdentifier.value"},
		{"escaped name twice", message, prescriber, twice(t, g.Body, `"resourceType":"Bundle"`, `"resource\u0054ype":"Bundle",`),
			fhir.CodeInvalidValue, "structure", "Bundle.resourceType"},
		{"release owner twice", release, pharmacy, twice(t, fhirgen.Release(dispenser, g.ShortID), `"name":"owner",`, `"name":"status",`),
			fhir.CodeInvalidValue, "structure", "Parameters.parameter[*"},
		{"Task status twice", task, pharmacy, twice(t, fhirgen.ReturnTask(g, dispenser, "0003"), `"status":"rejected"`, `"status":"in-progress",`),
			fhir.CodeInvalidValue, "structure", "Task.status"},
		{"Claim patient twice", claims, pharmacy, twice(t, claim, `"patient":`, `"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990548609"}},`),
			fhir.CodeInvalidValue, "structure", "Claim.patient"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := b.do("POST", tc.path, tc.token, tc.body)
			if res.Status != 400 {
				t.Fatalf("status %d, want 400: %.300s", res.Status, res.Body)
			}
			is := res.outcome(t).Issue[0]
			expr := strings.Join(is.Expression, " ")
			ok := expr == tc.expr
			if prefix, found := strings.CutSuffix(tc.expr, "*"); found {
				ok = strings.HasPrefix(expr, prefix)
			}
			if is.Severity != "error" || is.Code != tc.issueType || len(is.Details.Coding) == 0 || is.Details.Coding[0].Code != tc.code ||
				!ok || !strings.Contains(is.Diagnostics, expr) {
				t.Errorf("%s %s %q %q, want %s %s at %s", is.Details.Coding, is.Code, is.Expression, is.Diagnostics, tc.code, tc.issueType, tc.expr)
			}
		})
	}
	if n := b.events(""); n != 0 {
		t.Errorf("hostile bodies left %d events stored", n)
	}
	// The order the duplicates were made from is accepted.
	if res := b.post(prescriber, g.Body); res.Status != 200 {
		t.Errorf("the order itself: %d %s", res.Status, res.Body)
	}
}

// sentinel marks where fill puts its array; json.Marshal writes it as
// sentinelJSON.
const (
	sentinel     = "\x00HOSTILE"
	sentinelJSON = `"\u0000HOSTILE"`
)

// withSentinel returns body with edit applied (which puts the sentinel
// where the array goes).
func withSentinel(body []byte, edit func(m map[string]any)) []byte {
	return fhirgen.Mutate(body, edit)
}

// fill replaces the sentinel of body by an array of n copies of elem, or,
// when n is 0, of as many as make the body size bytes.
func fill(t *testing.T, body []byte, elem string, n, size int) []byte {
	t.Helper()
	before, after, ok := bytes.Cut(body, []byte(sentinelJSON))
	if !ok {
		t.Fatalf("no sentinel in %.200s", body)
	}
	if n == 0 {
		n = (size - len(before) - len(after) - 2) / (len(elem) + 1)
	}
	var out bytes.Buffer
	out.Write(before)
	out.WriteByte('[')
	for i := range n {
		if i > 0 {
			out.WriteByte(',')
		}
		out.WriteString(elem)
	}
	out.WriteByte(']')
	out.Write(after)
	return out.Bytes()
}

// twice returns body, compacted, with insert written before the first
// occurrence of anchor, which makes a member appear twice.
func twice(t *testing.T, body []byte, anchor, insert string) []byte {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		t.Fatal(err)
	}
	body = compact.Bytes()
	i := bytes.Index(body, []byte(anchor))
	if i < 0 {
		t.Fatalf("no %s in %.200s", anchor, body)
	}
	return append(append(append([]byte{}, body[:i]...), insert...), body[i:]...)
}

// medicationDispenses returns the MedicationDispense resources of a bundle.
func medicationDispenses(m map[string]any) []map[string]any {
	var out []map[string]any
	for _, e := range entries(m) {
		if r := resource(e); r["resourceType"] == "MedicationDispense" {
			out = append(out, r)
		}
	}
	return out
}
