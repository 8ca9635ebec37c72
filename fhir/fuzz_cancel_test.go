package fhir

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// FuzzCancelResponse holds the answer to a cancellation to its promises: for
// every message that DecodeMessage and Cancellation accept (the NHS
// cancellations, whole or with one value replaced), CancelResponse builds a
// prescription-order-response Bundle, JSON, whose response names the
// request, for each R-code the broker answers with; it never panics.
func FuzzCancelResponse(f *testing.F) {
	for _, rel := range findFixtures(f, func(rel string) bool { return strings.Contains(rel, "Cancel") }) {
		f.Add(readFixture(f, rel), uint16(0), "", uint8(0))
	}
	f.Add(readFixture(f, cancelFixture), uint16(3), `null`, uint8(1))
	f.Add(readFixture(f, cancelFixture), uint16(40), `{"value":7}`, uint8(2))
	codes := []rx.CancelCode{"R-0001", "R-0002", "R-0003", "R-0004", "R-0005", "R-0008", "R-5000", "R-9999"}
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte, p uint16, v string, code uint8) {
		if p != 0 {
			var doc any
			if json.Unmarshal(body, &doc) != nil {
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
			var err error
			if body, err = json.Marshal(doc); err != nil {
				return
			}
		}
		m, err := DecodeMessage(body)
		if err != nil {
			checkOutcome(t, err)
			return
		}
		if m.Event != EventPrescriptionOrderUpdate {
			return
		}
		if _, err := m.Cancellation(); err != nil {
			checkOutcome(t, err)
			return
		}
		rcode := codes[int(code)%len(codes)]
		out, err := CancelResponse(m.Raw, rcode, now)
		if err != nil {
			t.Fatalf("CancelResponse of an accepted cancellation: %v", err)
		}
		var resp struct {
			ResourceType string `json:"resourceType"`
			Entry        []struct {
				Resource struct {
					ResourceType string `json:"resourceType"`
					Response     struct {
						Identifier string `json:"identifier"`
					} `json:"response"`
				} `json:"resource"`
			} `json:"entry"`
		}
		if err := json.Unmarshal(out, &resp); err != nil || resp.ResourceType != "Bundle" || len(resp.Entry) == 0 ||
			resp.Entry[0].Resource.ResourceType != "MessageHeader" || resp.Entry[0].Resource.Response.Identifier == "" {
			t.Fatalf("CancelResponse: %v: %s", err, out)
		}
	})
}
