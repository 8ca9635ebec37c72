package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The released orders are inside the answer byte for byte, and the answer
// is valid JSON of the NHS release response's shape.
func TestReleaseResponse(t *testing.T) {
	order := readFixture(t, order4Items)
	out := ReleaseResponse([]ReleasedOrder{{BundleID: "46183abc-9fad-4673-85db-ce2cb6614732", Raw: order}})
	if !bytes.Contains(out, bytes.TrimSpace(order)) {
		t.Error("the order is not in the answer byte for byte")
	}
	var p struct {
		ResourceType string
		Parameter    []struct {
			Name     string
			Resource struct {
				ResourceType, Type string
				Total              int
				Entry              []struct{ Resource json.RawMessage }
			}
		}
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if p.ResourceType != "Parameters" || len(p.Parameter) != 2 || p.Parameter[0].Name != "passedPrescriptions" ||
		p.Parameter[0].Resource.Total != 1 || p.Parameter[1].Name != "failedPrescriptions" || p.Parameter[1].Resource.Total != 0 {
		t.Errorf("shape: %+v", p)
	}
	if empty := ReleaseResponse(nil); !json.Valid(empty) || !bytes.Contains(empty, []byte(`"total":0,"entry":[]`)) {
		t.Errorf("empty release: %s", empty)
	}
}
