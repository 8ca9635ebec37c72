package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// TestCancelResponseKeepsRequest: the answer to a cancellation forwards the
// request as it was written (every entry but the MessageHeader and the
// MedicationRequest byte for byte, members in their order) and sets only
// the response's elements, for the R-code answered.
func TestCancelResponseKeepsRequest(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	body := readFixture(t, cancelFixture)
	req, err := ojson.Parse(body)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rcode       rx.CancelCode
		url, status string
	}{
		{rx.RCancelled, "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionTaskStatusReason", "cancelled"},
		{rx.RPendingWith, "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionStatusHistory", "active"},
	} {
		out, err := CancelResponse(body, tc.rcode, now)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ojson.Parse(out)
		if err != nil {
			t.Fatalf("%s: not JSON: %v", tc.rcode, err)
		}
		if got := resp.Get("identifier").Get("value").Str(); got == "" || got == req.Get("identifier").Get("value").Str() {
			t.Errorf("%s: identifier %q: want a new one", tc.rcode, got)
		}
		if got := resp.Get("meta").Get("lastUpdated").Str(); got != "2026-06-01T12:00:00Z" {
			t.Errorf("%s: lastUpdated %q", tc.rcode, got)
		}
		in, got := req.Get("entry").Items(), resp.Get("entry").Items()
		if len(got) != len(in) {
			t.Fatalf("%s: %d entries, want %d", tc.rcode, len(got), len(in))
		}
		for i := range in {
			r := got[i].Get("resource")
			switch typ := r.Get("resourceType").Str(); typ {
			case "MessageHeader":
				if c := r.Get("eventCoding"); c.Get("code").Str() != EventPrescriptionOrderResponse || c.Get("system").Str() != SystemMessageEvent {
					t.Errorf("%s: eventCoding %s", tc.rcode, c.Encode(""))
				}
				if rs := r.Get("response"); rs.Get("identifier").Str() != req.Get("identifier").Get("value").Str() || rs.Get("code").Str() != "ok" {
					t.Errorf("%s: response %s", tc.rcode, rs.Encode(""))
				}
				if r.Get("reason") != nil {
					t.Errorf("%s: the response keeps the request's reason", tc.rcode)
				}
			case "MedicationRequest":
				ext := r.Get("extension").Items()
				if len(ext) != len(in[i].Get("resource").Get("extension").Items())+1 || ext[0].Get("url").Str() != tc.url {
					t.Fatalf("%s: extension %s", tc.rcode, r.Get("extension").Encode(""))
				}
				parts := ext[0].Get("extension").Items()
				if len(parts) != 2 || parts[0].Get("valueCoding").Get("code").Str() != string(tc.rcode) ||
					parts[0].Get("valueCoding").Get("display").Str() != tc.rcode.Display() ||
					parts[1].Get("valueDateTime").Str() != "2026-06-01T12:00:00Z" {
					t.Errorf("%s: R-code extension %s", tc.rcode, ext[0].Encode(""))
				}
				if r.Get("status").Str() != tc.status {
					t.Errorf("%s: status %s, want %s", tc.rcode, r.Get("status").Encode(""), tc.status)
				}
				for j, e := range ext[1:] {
					if !bytes.Equal(e.Encode(""), in[i].Get("resource").Get("extension").Items()[j].Encode("")) {
						t.Errorf("%s: extension %d changed", tc.rcode, j)
					}
				}
			default:
				if a, b := got[i].Encode(""), in[i].Encode(""); !bytes.Equal(a, b) {
					t.Errorf("%s: %s entry changed:\n got %s\nwant %s", tc.rcode, typ, a, b)
				}
			}
		}
		if !json.Valid(out) {
			t.Errorf("%s: not valid JSON", tc.rcode)
		}
	}
}
