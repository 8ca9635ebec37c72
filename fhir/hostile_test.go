package fhir

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// Hostile bodies: one array of many bad elements (issue 11). Before the
// reader kept its path as it went, each bad element re-walked the body from
// the top to name its FHIRPath, so that the cost grew with the square of the
// body.

// hostile is a message with one array (at the sentinel) filled with copies
// of elem, and the decoder that reads it.
type hostile struct {
	name  string
	array string         // the FHIRPath of the array
	kind  string         // asOrder, asDN, asRelease, asTask or asClaim
	base  string         // the fixture edited, "" for bare
	bare  string         // the body when there is no fixture: the array is at the sentinel
	at    func(b bundle) // puts the sentinel where the array goes
	elem  string         // one bad element
}

// asOrder decodes a prescription-order message and validates it.
const asOrder = "order"

// sentinel marks where the hostile array goes.
const sentinel = "\x00HOSTILE"

var hostiles = []hostile{
	{name: "bare Bundle entry [{}]", array: "Bundle.entry", kind: asOrder, bare: `{"resourceType":"Bundle","type":"message","entry":` + sentinel + `}`, elem: `{}`},
	{name: "Bundle entry [{}]", array: "Bundle.entry", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{}`},
	{name: "Bundle entry [1]", array: "Bundle.entry", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `1`},
	{name: "Bundle entry [{resource:{}}]", array: "Bundle.entry", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{"resource":{}}`},
	{name: "Bundle entry [{resource:1}]", array: "Bundle.entry", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{"resource":1}`},
	{name: "MessageHeader destination [1]", array: "Bundle.entry[0].resource.destination", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 0)["destination"] = sentinel }, elem: `1`},
	{name: "MedicationRequest identifier [1]", array: "Bundle.entry[1].resource.identifier", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 1)["identifier"] = sentinel }, elem: `1`},
	{name: "MedicationRequest dosageInstruction [1]", array: "Bundle.entry[1].resource.dosageInstruction", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 1)["dosageInstruction"] = sentinel }, elem: `1`},
	{name: "Patient identifier [1]", array: "Bundle.entry[5].resource.identifier", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 5)["identifier"] = sentinel }, elem: `1`},
	{name: "Organization telecom [1]", array: "Bundle.entry[8].resource.telecom", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 8)["telecom"] = sentinel }, elem: `1`},
	{name: "Organization telecom [{}]", array: "Bundle.entry[8].resource.telecom", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 8)["telecom"] = sentinel }, elem: `{}`},
	{name: "MedicationDispense contained [1]", array: "Bundle.entry[1].resource.contained", kind: asDN, base: dnFixture, at: func(b bundle) { res(b, 1)["contained"] = sentinel }, elem: `1`},
	{name: "MedicationDispense extension [1]", array: "Bundle.entry[1].resource.extension", kind: asDN, base: dnFixture, at: func(b bundle) { res(b, 1)["extension"] = sentinel }, elem: `1`},
	{name: "release parameter [1]", array: "Parameters.parameter", kind: asRelease, base: releaseFixture, at: func(b bundle) { b["parameter"] = sentinel }, elem: `1`},
	{name: "release parameter [{}]", array: "Parameters.parameter", kind: asRelease, base: releaseFixture, at: func(b bundle) { b["parameter"] = sentinel }, elem: `{}`},
	{name: "Task contained [1]", array: "Task.contained", kind: asTask, base: returnFixture, at: func(b bundle) { b["contained"] = sentinel }, elem: `1`},
	{name: "Task identifier [1]", array: "Task.identifier", kind: asTask, base: returnFixture, at: func(b bundle) { b["identifier"] = sentinel }, elem: `1`},
	{name: "Claim item [1]", array: "Claim.item", kind: asClaim, base: claimFixture, at: func(b bundle) { b["item"] = sentinel }, elem: `1`},
	{name: "Claim item [{}]", array: "Claim.item", kind: asClaim, base: claimFixture, at: func(b bundle) { b["item"] = sentinel }, elem: `{}`},
	{name: "Claim item detail [1]", array: "Claim.item[0].detail", kind: asClaim, base: claimFixture, at: func(b bundle) { set(b, sentinel, "item", 0, "detail") }, elem: `1`},
}

// frame returns the body of h around its array: prefix, then the elements
// separated by commas, then suffix.
func (h hostile) frame(t testing.TB) (prefix, suffix []byte) {
	t.Helper()
	body := []byte(h.bare)
	mark := []byte(sentinel)
	if h.base != "" {
		body = mutate(t, readFixture(t, h.base), h.at)
		mark = []byte(`"\u0000HOSTILE"`)
	}
	before, after, ok := bytes.Cut(body, mark)
	if !ok {
		t.Fatalf("%s: no sentinel in %.200s", h.name, body)
	}
	return append(before[:len(before):len(before)], '['), append([]byte{']'}, after...)
}

// body returns the body of h with n elements.
func (h hostile) body(t testing.TB, n int) []byte {
	prefix, suffix := h.frame(t)
	var b bytes.Buffer
	b.Grow(len(prefix) + n*(len(h.elem)+1) + len(suffix))
	b.Write(prefix)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(h.elem)
	}
	b.Write(suffix)
	return b.Bytes()
}

// sized returns the body of h of about size bytes.
func (h hostile) sized(t testing.TB, size int) []byte {
	prefix, suffix := h.frame(t)
	n := max(1, (size-len(prefix)-len(suffix))/(len(h.elem)+1))
	return h.body(t, n)
}

// decodeKind runs the decoder kind on body, as the broker does.
func decodeKind(kind string, body []byte) error {
	switch kind {
	case asRelease:
		_, err := DecodeReleaseRequest(body)
		return err
	case asTask:
		_, err := DecodeTaskRequest(body)
		return err
	case asClaim:
		_, err := DecodeClaim(body)
		return err
	}
	m, err := DecodeMessage(body)
	if err != nil {
		return err
	}
	switch kind {
	case asDN:
		_, err = m.DispenseNotification()
	default:
		_, err = m.Order(written(body))
	}
	return err
}

// TestHostileArrays checks that a body made of many bad elements is refused
// with the same OperationOutcome as the same body with a few of them: the
// first bad element, named by its FHIRPath.
func TestHostileArrays(t *testing.T) {
	for _, h := range hostiles {
		t.Run(h.name, func(t *testing.T) {
			small := fhirErr(t, decodeKind(h.kind, h.body(t, 3)))
			large := fhirErr(t, decodeKind(h.kind, h.body(t, MaxJSONArray)))
			if large.Code != small.Code || large.IssueType != small.IssueType || large.Diagnostics != small.Diagnostics ||
				!slices.Equal(large.Expression, small.Expression) {
				t.Errorf("%d elements: %s %s %q %s; 3 elements: %s %s %q %s", MaxJSONArray,
					large.Code, large.IssueType, large.Expression, large.Diagnostics,
					small.Code, small.IssueType, small.Expression, small.Diagnostics)
			}
		})
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

var _ = json.Valid

// TestHostileBounds checks the answers to a body past the limits: each names
// the array or the container at fault, whatever reads the body.
func TestHostileBounds(t *testing.T) {
	for _, h := range hostiles {
		t.Run(h.name, func(t *testing.T) {
			e := fhirErr(t, decodeKind(h.kind, h.body(t, MaxJSONArray+1)))
			if e.Code != CodeInvalidValue || e.IssueType != "too-long" || e.Expression[0] != h.array ||
				e.Diagnostics != h.array+" has more than 1000 elements: no array of a "+noun(h.kind)+" may hold more" {
				t.Errorf("%s %s %q %s", e.Code, e.IssueType, e.Expression, e.Diagnostics)
			}
		})
	}
	for _, tc := range []struct {
		name, kind string
		body       string
		expr       string
	}{
		{"Bundle", asOrder, `{"resourceType":"Bundle","entry":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`, "Bundle.entry" + strings.Repeat("[0]", MaxJSONDepth-1)},
		{"Parameters", asRelease, `{"resourceType":"Parameters","parameter":[{"resource":` + strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70) + `}]}`,
			"Parameters.parameter[0].resource" + strings.Repeat(".a", MaxJSONDepth-3)},
		{"Task", asTask, strings.Repeat("[", 65) + strings.Repeat("]", 65), "Task" + strings.Repeat("[0]", MaxJSONDepth)},
	} {
		e := fhirErr(t, decodeKind(tc.kind, []byte(tc.body)))
		if e.Code != CodeInvalidValue || e.IssueType != "structure" || e.Expression[0] != tc.expr ||
			e.Diagnostics != tc.expr+" is nested too deep: a "+noun(tc.kind)+" may nest objects and arrays at most 64 deep" {
			t.Errorf("%s nested: %s %s %q %s", tc.name, e.Code, e.IssueType, e.Expression, e.Diagnostics)
		}
	}
}

// noun is what the answers call a body read by the decoder kind.
func noun(kind string) string {
	if kind == asRelease || kind == asTask || kind == asClaim {
		return "request"
	}
	return "message"
}

// TestDuplicateMembers checks that a member given twice anywhere, read or
// not, is refused at the second copy, in every kind of body, names compared
// after unescaping.
func TestDuplicateMembers(t *testing.T) {
	for _, tc := range []struct {
		name, kind, base string
		anchor, insert   string // insert goes before the first anchor of the compacted fixture
		expr             string
	}{
		{"MessageHeader.sender", asOrder, order4Items, `"sender":`, `"sender":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"B81001"}},`,
			"Bundle.entry[0].resource.sender"},
		{"NHS number", asOrder, order4Items, `"system":"https://fhir.nhs.uk/Id/nhs-number",`, `"value":"9990548609",`,
			"Bundle.entry[5].resource.identifier[0].value"},
		{"performer", asOrder, order4Items, `"performer":`, `"performer":{"identifier":{"system":"https://fhir.nhs.uk/Id/ods-organization-code","value":"FCG71"}},`,
			"Bundle.entry[1].resource.dispenseRequest.performer"},
		{"prescription ID", asOrder, order4Items, `"system":"https://fhir.nhs.uk/Id/prescription-order-number",`, `"value":"A7B86F-A83008-1EFE36",`,
			"Bundle.entry[1].resource.groupIdentifier.value"},
		{"a member EPS does not read", asOrder, order4Items, `"display":`, `"display":"x",`, "Bundle.entry[0].resource.eventCoding.display"},
		{"escaped name", asOrder, order4Items, `"resourceType":"Bundle"`, `"resource\u0054ype":"Bundle",`, "Bundle.resourceType"},
		{"entry resource", asOrder, order4Items, `"resource":`, `"resource":{"resourceType":"MessageHeader"},`, "Bundle.entry[0].resource"},
		{"dispense notification sender", asDN, dnFixture, `"sender":`, `"sender":{"reference":"urn:uuid:x"},`, "Bundle.entry[0].resource.sender"},
		{"release owner", asRelease, releaseFixture, `"name":"owner",`, `"name":"status",`, "Parameters.parameter[1].name"},
		{"Task status", asTask, returnFixture, `"status":"rejected"`, `"status":"in-progress",`, "Task.status"},
		{"Claim patient", asClaim, claimFixture, `"patient":`, `"patient":{"identifier":{"system":"https://fhir.nhs.uk/Id/nhs-number","value":"9990548609"}},`, "Claim.patient"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var compact bytes.Buffer
			if err := json.Compact(&compact, readFixture(t, tc.base)); err != nil {
				t.Fatal(err)
			}
			body := compact.Bytes()
			if decodeKind(tc.kind, body) != nil && tc.kind != asDN && tc.kind != asOrder {
				t.Fatalf("the fixture itself is refused: %v", decodeKind(tc.kind, body))
			}
			i := bytes.Index(body, []byte(tc.anchor))
			if i < 0 {
				t.Fatalf("no %s", tc.anchor)
			}
			body = slices.Concat(body[:i], []byte(tc.insert), body[i:])
			e := fhirErr(t, decodeKind(tc.kind, body))
			if e.Code != CodeInvalidValue || e.IssueType != "structure" || e.Expression[0] != tc.expr || e.Diagnostics != tc.expr+" appears more than once" {
				t.Errorf("%s %s %q %s, want %s", e.Code, e.IssueType, e.Expression, e.Diagnostics, tc.expr)
			}
		})
	}
}
