package test

import (
	"encoding/json"
	"testing"
)

// TestPing: GET /_ping answers 200 without a token, with the ping
// information the EPS API's ping gives (the NHS regression suite's
// features/eps_fhir/ping.feature: version, revision, releaseId and
// commitId, none empty); HEAD too; other methods 405.
func TestPing(t *testing.T) {
	b := startBroker(t, "")
	res := b.do("GET", "/_ping", "", nil)
	if res.Status != 200 {
		t.Fatalf("ping: %d %s", res.Status, res.Body)
	}
	var ping map[string]any
	if err := json.Unmarshal(res.Body, &ping); err != nil {
		t.Fatalf("ping is not JSON (%v): %s", err, res.Body)
	}
	for _, k := range []string{"version", "revision", "releaseId", "commitId"} {
		if s, _ := ping[k].(string); s == "" {
			t.Errorf("ping %s is %v, want a string that is not empty: %s", k, ping[k], res.Body)
		}
	}
	if res := b.do("HEAD", "/_ping", "", nil); res.Status != 200 || len(res.Body) != 0 {
		t.Errorf("HEAD ping: %d %q", res.Status, res.Body)
	}
	if res := b.do("POST", "/_ping", "", []byte("{}")); res.Status != 405 || res.Header.Get("Allow") == "" {
		t.Errorf("POST ping: %d, Allow %q", res.Status, res.Header.Get("Allow"))
	}
	// The CapabilityStatement lists $validate and tells of the ping.
	res = b.do("GET", "/FHIR/R4/metadata", "", nil)
	var cs struct {
		Rest []struct {
			Documentation string
			Operation     []struct{ Name string }
		}
	}
	if err := json.Unmarshal(res.Body, &cs); err != nil || len(cs.Rest) != 1 {
		t.Fatalf("metadata: %v %s", err, res.Body)
	}
	found := false
	for _, op := range cs.Rest[0].Operation {
		found = found || op.Name == "validate"
	}
	if !found || cs.Rest[0].Documentation == "" {
		t.Errorf("CapabilityStatement: operations %v, documentation %q", cs.Rest[0].Operation, cs.Rest[0].Documentation)
	}
}
