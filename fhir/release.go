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
// prescription-order Bundles exactly as they were posted (their bytes are
// copied in, never decoded and encoded again), and whose
// failedPrescriptions is an empty searchset Bundle. The entry of a repeat
// dispensing issue carries Extension-EPS-RepeatInformation (the issue
// released as numberOfRepeatsIssued, counted from 0 as EPS counts it: 0 for
// issue 1; and numberOfRepeatsAllowed, issues - 1): the order's bytes
// cannot say which issue it is.
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
		b.Write(bytes.TrimSpace(o.Raw))
		b.WriteString(`,"search":{"mode":"match"}}`)
	}
	b.WriteString(`]}},{"name":"failedPrescriptions","resource":{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}}]}`)
	return b.Bytes()
}
