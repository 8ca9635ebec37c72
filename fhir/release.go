package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
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
// parts kept). Numbers keep their text.
func forIssue(raw []byte, issue, issues int) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var bundle map[string]any
	if err := d.Decode(&bundle); err != nil {
		return nil, err
	}
	num := func(n int) json.Number { return json.Number(strconv.Itoa(n)) }
	entries, _ := bundle["entry"].([]any)
	for _, e := range entries {
		em, _ := e.(map[string]any)
		mr, _ := em["resource"].(map[string]any)
		if mr == nil || mr["resourceType"] != "MedicationRequest" {
			continue
		}
		repeat := map[string]any{"url": ExtRepeatInformation, "extension": []any{
			map[string]any{"url": RepeatPartAllowed, "valueInteger": num(issues - 1)},
			map[string]any{"url": RepeatPartIssued, "valueInteger": num(issue - 1)},
		}}
		basedOn, _ := mr["basedOn"].([]any)
		first := map[string]any{}
		if len(basedOn) > 0 {
			if f, ok := basedOn[0].(map[string]any); ok {
				first = f
			}
		} else {
			basedOn = []any{first}
		}
		first["extension"] = append(withoutURL(first["extension"], ExtRepeatInformation), repeat)
		basedOn[0] = first
		mr["basedOn"] = basedOn

		exts, _ := mr["extension"].([]any)
		var uk map[string]any
		for _, x := range exts {
			if xm, ok := x.(map[string]any); ok && xm["url"] == ExtUKCoreRepeatInformation {
				uk = xm
			}
		}
		if uk == nil {
			uk = map[string]any{"url": ExtUKCoreRepeatInformation}
			exts = append(exts, uk)
		}
		uk["extension"] = append(withoutURL(uk["extension"], RepeatPartPrescriptons),
			map[string]any{"url": RepeatPartPrescriptons, "valueUnsignedInt": num(issue)})
		mr["extension"] = exts
	}
	return json.Marshal(bundle)
}

// withoutURL is the extension list exts (decoded JSON) without those whose
// url is url.
func withoutURL(exts any, url string) []any {
	list, _ := exts.([]any)
	out := make([]any, 0, len(list)+1)
	for _, x := range list {
		if xm, ok := x.(map[string]any); ok && xm["url"] == url {
			continue
		}
		out = append(out, x)
	}
	return out
}
