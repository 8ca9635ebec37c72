package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
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

// An issue of a repeat dispensing prescription is released as EPS releases
// it (release-medication-request.ts createBasedOn,
// createRepeatInformationExtension): every MedicationRequest names the issue
// in basedOn[0] Extension-EPS-RepeatInformation, counted from 0, and in
// the UK Core numberOfPrescriptionsIssued, counted from 1; the entry too.
// Any other release keeps the order's bytes.
func TestReleaseResponseRepeatIssue(t *testing.T) {
	order := readFixture(t, order4Items)
	out := ReleaseResponse([]ReleasedOrder{{BundleID: "46183abc-9fad-4673-85db-ce2cb6614732", Raw: order, Issue: 1, Issues: 7}})
	var p struct {
		Parameter []struct {
			Resource struct {
				Entry []struct {
					Extension []testExtension `json:"extension"`
					Resource  struct {
						Entry []struct {
							Resource struct {
								ResourceType string          `json:"resourceType"`
								Extension    []testExtension `json:"extension"`
								BasedOn      []struct {
									Extension []testExtension `json:"extension"`
								} `json:"basedOn"`
							} `json:"resource"`
						} `json:"entry"`
					} `json:"resource"`
				} `json:"entry"`
			} `json:"resource"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	entry := p.Parameter[0].Resource.Entry[0]
	if got := entry.Extension[0].part(RepeatPartIssued); got != "0" {
		t.Errorf("entry numberOfRepeatsIssued %s, want 0", got)
	}
	n := 0
	for _, e := range entry.Resource.Entry {
		r := e.Resource
		if r.ResourceType != "MedicationRequest" {
			continue
		}
		n++
		if len(r.BasedOn) == 0 || len(r.BasedOn[0].Extension) == 0 {
			t.Fatalf("MedicationRequest without basedOn repeat information")
		}
		ri := r.BasedOn[0].Extension[len(r.BasedOn[0].Extension)-1]
		if ri.URL != ExtRepeatInformation || ri.part(RepeatPartIssued) != "0" || ri.part(RepeatPartAllowed) != "6" {
			t.Errorf("basedOn %+v, want issued 0 of allowed 6", ri)
		}
		uk := ""
		for _, x := range r.Extension {
			if x.URL == ExtUKCoreRepeatInformation {
				uk = x.part(RepeatPartPrescriptons)
			}
		}
		if uk != "1" {
			t.Errorf("UK Core numberOfPrescriptionsIssued %q, want 1", uk)
		}
	}
	if n != 4 {
		t.Errorf("%d MedicationRequests, want 4", n)
	}
	acute := ReleaseResponse([]ReleasedOrder{{BundleID: "46183abc-9fad-4673-85db-ce2cb6614732", Raw: order}})
	if !bytes.Contains(acute, bytes.TrimSpace(order)) {
		t.Error("an acute order is not released byte for byte")
	}
}

// testExtension is an extension as the tests read it.
type testExtension struct {
	URL           string          `json:"url"`
	ValueInteger  json.Number     `json:"valueInteger"`
	ValueUnsigned json.Number     `json:"valueUnsignedInt"`
	Extension     []testExtension `json:"extension"`
}

// part is the value of the part url of x, as text.
func (x testExtension) part(url string) string {
	for _, p := range x.Extension {
		if p.URL == url {
			return string(p.ValueInteger) + string(p.ValueUnsigned)
		}
	}
	return ""
}

// The release answer of a repeat dispensing issue adds the issue to the
// order and changes nothing else: every member of the order keeps its
// place and every string and number its text.
func TestReleaseResponseRepeatIssueKeepsTheOrder(t *testing.T) {
	order := readFixture(t, order4Items)
	got, err := forIssue(order, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := ojson.Parse(order)
	back, _ := ojson.Parse(got)
	// Take the added elements out again: what is left is the order as it was.
	for _, e := range back.Get("entry").Items() {
		mr := e.Get("resource")
		if mr.Get("resourceType").Str() != "MedicationRequest" {
			continue
		}
		if f := mr.Get("basedOn").Items(); len(f) != 1 || findExtensionNode(f[0], ExtRepeatInformation) == nil {
			t.Fatalf("basedOn %s", mr.Get("basedOn").Encode(""))
		}
		drop(mr, "basedOn")
		exts := mr.Get("extension")
		var kept []*ojson.Node
		for _, x := range exts.Items() {
			if x.Get("url").Str() != ExtUKCoreRepeatInformation {
				kept = append(kept, x)
			}
		}
		exts.Elems = kept
	}
	if a, b := string(back.Encode("")), string(orig.Encode("")); a != b {
		t.Errorf("the order changed beyond the issue:\n got %s\nwant %s", a, b)
	}
}

func drop(n *ojson.Node, name string) {
	for i, m := range n.Members {
		if m.Name == name {
			n.Members = append(n.Members[:i], n.Members[i+1:]...)
			return
		}
	}
}

// A release whose owner's ODS identifier has no value names no dispenser:
// 400 at that value, not a release for the organisation "" (found by
// FuzzLifecycle).
func TestReleaseOwnerWithoutValue(t *testing.T) {
	body := readFixture(t, releaseFixture)
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	owner := p["parameter"].([]any)[1].(map[string]any)["resource"].(map[string]any)
	id := owner["identifier"].([]any)[0].(map[string]any)
	delete(id, "value")
	body, _ = json.Marshal(p)
	_, err := DecodeReleaseRequest(body)
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeMissingValue || e.Expression[0] != "Parameters.parameter[1].resource.identifier[0].value" {
		t.Fatalf("owner without value: %v", err)
	}
}
