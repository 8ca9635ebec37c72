package fhir

import (
	"bytes"
	"encoding/json"
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
	name string
	kind string                         // asOrder, asDN, asRelease, asTask or asClaim
	base string                         // the fixture edited, "" for bare
	bare string                         // the body when there is no fixture: the array is at the sentinel
	at   func(b bundle)                 // puts the sentinel where the array goes
	elem string                         // one bad element
	want func(t *testing.T, err *Error) // extra checks on the error, may be nil
}

// asOrder decodes a prescription-order message and validates it.
const asOrder = "order"

// sentinel marks where the hostile array goes.
const sentinel = "\x00HOSTILE"

var hostiles = []hostile{
	{name: "bare Bundle entry [{}]", kind: asOrder, bare: `{"resourceType":"Bundle","type":"message","entry":` + sentinel + `}`, elem: `{}`},
	{name: "Bundle entry [{}]", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{}`},
	{name: "Bundle entry [1]", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `1`},
	{name: "Bundle entry [{resource:{}}]", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{"resource":{}}`},
	{name: "Bundle entry [{resource:1}]", kind: asOrder, base: order4Items, at: func(b bundle) { b["entry"] = sentinel }, elem: `{"resource":1}`},
	{name: "MessageHeader destination [1]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 0)["destination"] = sentinel }, elem: `1`},
	{name: "MedicationRequest identifier [1]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 1)["identifier"] = sentinel }, elem: `1`},
	{name: "MedicationRequest dosageInstruction [1]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 1)["dosageInstruction"] = sentinel }, elem: `1`},
	{name: "Patient identifier [1]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 5)["identifier"] = sentinel }, elem: `1`},
	{name: "Organization telecom [1]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 8)["telecom"] = sentinel }, elem: `1`},
	{name: "Organization telecom [{}]", kind: asOrder, base: order4Items, at: func(b bundle) { res(b, 8)["telecom"] = sentinel }, elem: `{}`},
	{name: "MedicationDispense contained [1]", kind: asDN, base: dnFixture, at: func(b bundle) { res(b, 1)["contained"] = sentinel }, elem: `1`},
	{name: "MedicationDispense extension [1]", kind: asDN, base: dnFixture, at: func(b bundle) { res(b, 1)["extension"] = sentinel }, elem: `1`},
	{name: "release parameter [1]", kind: asRelease, base: releaseFixture, at: func(b bundle) { b["parameter"] = sentinel }, elem: `1`},
	{name: "release parameter [{}]", kind: asRelease, base: releaseFixture, at: func(b bundle) { b["parameter"] = sentinel }, elem: `{}`},
	{name: "Task contained [1]", kind: asTask, base: returnFixture, at: func(b bundle) { b["contained"] = sentinel }, elem: `1`},
	{name: "Task identifier [1]", kind: asTask, base: returnFixture, at: func(b bundle) { b["identifier"] = sentinel }, elem: `1`},
	{name: "Claim item [1]", kind: asClaim, base: claimFixture, at: func(b bundle) { b["item"] = sentinel }, elem: `1`},
	{name: "Claim item [{}]", kind: asClaim, base: claimFixture, at: func(b bundle) { b["item"] = sentinel }, elem: `{}`},
	{name: "Claim item detail [1]", kind: asClaim, base: claimFixture, at: func(b bundle) { set(b, sentinel, "item", 0, "detail") }, elem: `1`},
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
			large := fhirErr(t, decodeKind(h.kind, h.body(t, 1000)))
			if large.Code != small.Code || large.IssueType != small.IssueType || large.Diagnostics != small.Diagnostics ||
				!slicesEqual(large.Expression, small.Expression) {
				t.Errorf("%d elements: %s %s %q %s; 3 elements: %s %s %q %s", 1000,
					large.Code, large.IssueType, large.Expression, large.Diagnostics,
					small.Code, small.IssueType, small.Expression, small.Diagnostics)
			}
			t.Logf("%s %s %q %s", large.Code, large.IssueType, large.Expression, large.Diagnostics)
		})
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

var _ = json.Valid
