package httpapi

import (
	"encoding/json"
	"slices"
	"testing"

	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// The CapabilityStatement is written from samply's type: it reads back as
// one, lists the broker's endpoints, and holds no empty element (a samply
// field without omitempty would write one).
func TestCapabilityStatement(t *testing.T) {
	cs, err := fm.UnmarshalCapabilityStatement(capabilityStatement)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(capabilityStatement, &top); err != nil || top["resourceType"] != "CapabilityStatement" {
		t.Fatalf("resourceType %v (%v)", top["resourceType"], err)
	}
	if cs.Status != fm.PublicationStatusActive || cs.Kind != fm.CapabilityStatementKindInstance || cs.FhirVersion != fm.FHIRVersion4_0_1 ||
		cs.Software == nil || cs.Software.Name != "epsbroker" || len(cs.Rest) != 1 || len(cs.Messaging) != 1 {
		t.Fatalf("%s", capabilityStatement)
	}
	var resources, operations, messages []string
	for _, r := range cs.Rest[0].Resource {
		for _, in := range r.Interaction {
			resources = append(resources, r.Type.Code()+" "+in.Code.Code())
		}
	}
	for _, op := range cs.Rest[0].Operation {
		operations = append(operations, op.Name)
	}
	for _, m := range cs.Messaging[0].SupportedMessage {
		messages = append(messages, m.Mode.Code()+" "+m.Definition)
	}
	for _, c := range []struct{ got, want []string }{
		{resources, []string{"Task create", "Claim create", "RequestGroup read", "RequestGroup search-type"}},
		{operations, []string{"validate", "process-message", "release"}},
		{messages, []string{"receiver https://fhir.nhs.uk/MessageDefinition/prescription-order",
			"receiver https://fhir.nhs.uk/MessageDefinition/prescription-order-update",
			"receiver https://fhir.nhs.uk/MessageDefinition/dispense-notification"}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%q, want %q", c.got, c.want)
		}
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			t.Errorf("%s: null", path)
		case string:
			if v == "" {
				t.Errorf("%s: empty", path)
			}
		case []any:
			if len(v) == 0 {
				t.Errorf("%s: empty array", path)
			}
			for _, x := range v {
				walk(path+"[]", x)
			}
		case map[string]any:
			if len(v) == 0 {
				t.Errorf("%s: empty object", path)
			}
			for k, x := range v {
				walk(path+"."+k, x)
			}
		}
	}
	walk("CapabilityStatement", top)
}
