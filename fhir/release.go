package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
)

// ReleasedOrder is one prescription handed to a dispenser: its original
// order message, byte for byte, and that message's Bundle.identifier. For
// a repeat dispensing prescription, Issue is the issue released (1..Issues).
type ReleasedOrder struct {
	BundleID string
	Raw      []byte
	Issue    int
	Issues   int
}

// ReleaseResponse is the answer to Task/$release: a Parameters resource
// whose passedPrescriptions is a searchset Bundle of the released
// prescription-order Bundles as they were posted (their bytes are copied
// in, never decoded and encoded again), and whose failedPrescriptions is an
// empty searchset Bundle.
//
// The order's bytes cannot say which issue of a repeat dispensing
// prescription is released. For one, as EPS's release answer says it
// (translation/response/release/release-medication-request.ts:
// createBasedOn, createRepeatInformationExtension), every MedicationRequest
// of the released Bundle gets basedOn[0] Extension-EPS-RepeatInformation
// with numberOfRepeatsIssued the issue counted from 0 (0 for issue 1) and
// numberOfRepeatsAllowed issues - 1, and Extension-UKCore-
// MedicationRepeatInformation numberOfPrescriptionsIssued the issue (from
// 1): that Bundle is the order re-encoded with those elements set (see
// forIssue); its entry also carries the Extension-EPS-RepeatInformation.
func ReleaseResponse(orders []ReleasedOrder) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Parameters","parameter":[{"name":"passedPrescriptions","resource":{"resourceType":"Bundle","type":"searchset","total":`)
	b.WriteString(strconv.Itoa(len(orders)))
	b.WriteString(`,"entry":[`)
	for i, o := range orders {
		if i > 0 {
			b.WriteByte(',')
		}
		url, _ := json.Marshal("urn:uuid:" + o.BundleID)
		b.WriteString(`{"fullUrl":`)
		b.Write(url)
		if o.Issues > 1 && o.Issue > 0 {
			// Counted from 0, as EPS's release answer counts
			// (release-medication-request.ts: Spine's issue - 1).
			fmt.Fprintf(&b, `,"extension":[{"url":%q,"extension":[{"url":"numberOfRepeatsIssued","valueInteger":%d},{"url":"numberOfRepeatsAllowed","valueInteger":%d}]}]`,
				ExtRepeatInformation, o.Issue-1, o.Issues-1)
		}
		b.WriteString(`,"resource":`)
		raw := bytes.TrimSpace(o.Raw)
		if o.Issues > 1 && o.Issue > 0 {
			if rb, err := forIssue(raw, o.Issue, o.Issues); err == nil {
				raw = rb
			}
		}
		b.Write(raw)
		b.WriteString(`,"search":{"mode":"match"}}`)
	}
	b.WriteString(`]}},{"name":"failedPrescriptions","resource":{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}}]}`)
	return b.Bytes()
}

// forIssue is the order Bundle raw with each MedicationRequest naming issue
// (of issues) as EPS's release answer names it: basedOn[0]
// Extension-EPS-RepeatInformation numberOfRepeatsAllowed issues - 1 and
// numberOfRepeatsIssued issue - 1 (a basedOn is added when there is none;
// the reference it has is kept), and Extension-UKCore-
// MedicationRepeatInformation numberOfPrescriptionsIssued issue (its other
// parts kept). Everything else keeps its place and its text: members stay
// in their order and strings and numbers as written (only insignificant
// white space goes).
func forIssue(raw []byte, issue, issues int) ([]byte, error) {
	bundle, err := ojson.Parse(raw)
	if err != nil {
		return nil, err
	}
	num := func(n int) *ojson.Node { return &ojson.Node{Scalar: strconv.Itoa(n)} }
	part := func(url, value string, v *ojson.Node) *ojson.Node {
		return &ojson.Node{Kind: '{', Members: []ojson.Member{{Name: "url", Value: ojson.String(url)}, {Name: value, Value: v}}}
	}
	for _, e := range bundle.Get("entry").Items() {
		mr := e.Get("resource")
		if mr.Get("resourceType").Str() != "MedicationRequest" {
			continue
		}
		repeat := &ojson.Node{Kind: '{', Members: []ojson.Member{
			{Name: "url", Value: ojson.String(ExtRepeatInformation)},
			{Name: "extension", Value: &ojson.Node{Kind: '[', Elems: []*ojson.Node{
				part(RepeatPartAllowed, "valueInteger", num(issues-1)),
				part(RepeatPartIssued, "valueInteger", num(issue-1)),
			}}},
		}}
		basedOn := mr.Get("basedOn")
		if basedOn == nil || basedOn.Kind != '[' {
			basedOn = &ojson.Node{Kind: '['}
			mr.Set("basedOn", basedOn)
		}
		if len(basedOn.Elems) == 0 || basedOn.Elems[0].Kind != '{' {
			basedOn.Elems = append([]*ojson.Node{{Kind: '{'}}, basedOn.Elems...)
		}
		setExtension(basedOn.Elems[0], ExtRepeatInformation, repeat)

		uk := findExtensionNode(mr, ExtUKCoreRepeatInformation)
		if uk == nil {
			uk = &ojson.Node{Kind: '{', Members: []ojson.Member{{Name: "url", Value: ojson.String(ExtUKCoreRepeatInformation)}}}
			setExtension(mr, ExtUKCoreRepeatInformation, uk)
		}
		setExtension(uk, RepeatPartPrescriptons, part(RepeatPartPrescriptons, "valueUnsignedInt", num(issue)))
	}
	return bundle.Encode(""), nil
}

// findExtensionNode is the first extension of n whose url is url, or nil.
func findExtensionNode(n *ojson.Node, url string) *ojson.Node {
	for _, x := range n.Get("extension").Items() {
		if x.Get("url").Str() == url {
			return x
		}
	}
	return nil
}

// setExtension puts ext in n's extension list in place of those whose url
// is url (where the first of them stood), or last when there is none.
func setExtension(n *ojson.Node, url string, ext *ojson.Node) {
	list := n.Get("extension")
	if list == nil || list.Kind != '[' {
		list = &ojson.Node{Kind: '['}
		n.Set("extension", list)
	}
	out := make([]*ojson.Node, 0, len(list.Elems)+1)
	placed := false
	for _, x := range list.Elems {
		if x.Get("url").Str() != url {
			out = append(out, x)
		} else if !placed {
			out, placed = append(out, ext), true
		}
	}
	if !placed {
		out = append(out, ext)
	}
	list.Elems = out
}
