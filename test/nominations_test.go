package test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

type nominationsAnswer struct {
	NHSNumber   string `json:"nhsNumber"`
	Nominations map[string]struct {
		ODS string `json:"ods"`
		By  struct {
			User, Org, Role string
			OnBehalfOf      bool `json:"onBehalfOfPatient"`
		} `json:"by"`
	} `json:"nominations"`
	History []struct {
		Type, From, To string
		By             struct{ Org, Role string }
	} `json:"history"`
}

func (b *testBroker) nominations(nhs string) nominationsAnswer {
	b.t.Helper()
	res := b.do("GET", "/api/v1/nominations/"+nhs, b.token(auth.RoleAdmin, "X26"), nil)
	var a nominationsAnswer
	if res.Status != 200 || json.Unmarshal(res.Body, &a) != nil {
		b.t.Fatalf("nominations: %d %s", res.Status, res.Body)
	}
	return a
}

func TestNominationRegistryAPI(t *testing.T) {
	b := startBroker(t, "")
	nhs := fhirgen.NHSNumber()
	put := func(role auth.Role, ods, typ, body string) *response {
		return b.do("PUT", "/api/v1/nominations/"+nhs+"/"+typ, b.token(role, ods), []byte(body), "Content-Type", "application/json")
	}
	if res := put(auth.RolePrescriber, "A83008", "P1", `{"ods":"FA565"}`); res.Status != 200 {
		t.Fatalf("set: %d %s", res.Status, res.Body)
	}
	a := b.nominations(nhs)
	if n := a.Nominations["P1"]; n.ODS != "FA565" || n.By.Org != "A83008" || !n.By.OnBehalfOf {
		t.Errorf("after set: %+v", a)
	}
	if res := put(auth.RoleDispenser, "FCG71", "P1", `{"ods":"FCG71"}`); res.Status != 200 {
		t.Fatalf("change: %d %s", res.Status, res.Body)
	}
	put(auth.RoleAdmin, "X26", "P3", `{"ods":"A83008"}`)
	if res := b.do("DELETE", "/api/v1/nominations/"+nhs+"/P1", b.token(auth.RoleAdmin, "X26"), nil); res.Status != 200 {
		t.Fatalf("remove: %d %s", res.Status, res.Body)
	}
	a = b.nominations(nhs)
	if a.Nominations["P1"].ODS != "" || a.Nominations["P3"].ODS != "A83008" || a.Nominations["P3"].By.OnBehalfOf {
		t.Errorf("after remove: %+v", a.Nominations)
	}
	if len(a.History) != 4 {
		t.Fatalf("history: %+v, want 4 changes", a.History)
	}
	if h := a.History[1]; h.Type != "P1" || h.From != "FA565" || h.To != "FCG71" || h.By.Org != "FCG71" || h.By.Role != "dispenser" {
		t.Errorf("the change of pharmacy: %+v", h)
	}
	if h := a.History[3]; h.From != "FCG71" || h.To != "" {
		t.Errorf("the removal: %+v", h)
	}
	// Bad input: 400 and nothing changes; a role that may not: 403; no token: 401.
	for _, tc := range []struct {
		path, body string
		role       auth.Role
		status     int
	}{
		{"/api/v1/nominations/9449305553/P1", `{"ods":"FA565"}`, auth.RoleAdmin, 400},
		{"/api/v1/nominations/" + nhs + "/P7", `{"ods":"FA565"}`, auth.RoleAdmin, 400},
		{"/api/v1/nominations/" + nhs + "/P1", `{"ods":"FA.565"}`, auth.RoleAdmin, 400},
		{"/api/v1/nominations/" + nhs + "/P1", `not json`, auth.RoleAdmin, 400},
		{"/api/v1/nominations/" + nhs + "/P1", `{"ods":"FA565"}`, auth.RoleTracker, 403},
	} {
		res := b.do("PUT", tc.path, b.token(tc.role, "X26"), []byte(tc.body), "Content-Type", "application/json")
		if res.Status != tc.status {
			t.Errorf("PUT %s %s as %s: %d, want %d", tc.path, tc.body, tc.role, res.Status, tc.status)
		} else {
			res.outcome(t)
		}
	}
	if res := b.do("GET", "/api/v1/nominations/"+nhs, "", nil); res.Status != 401 {
		t.Errorf("no token: %d", res.Status)
	}
	// Who changed what is for investigators (admin): other roles see the
	// nominations only.
	var seen nominationsAnswer
	res := b.do("GET", "/api/v1/nominations/"+nhs, b.token(auth.RoleDispenser, "FCG71"), nil)
	if json.Unmarshal(res.Body, &seen); res.Status != 200 || seen.Nominations["P3"].ODS != "A83008" || len(seen.History) != 0 {
		t.Errorf("a dispenser's view: %d %s", res.Status, res.Body)
	}
	if got := b.nominations(nhs); len(got.History) != 4 {
		t.Errorf("refused changes changed the history: %d", len(got.History))
	}
}

// An order with a nominated site type but no performer goes to the patient's
// nominated dispenser of that type; one naming a performer keeps it; with no
// nomination on record it is accepted as non-nominated, with a warning.
func TestNominationResolutionAtIntake(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := b.token(auth.RolePrescriber, "A83008")
	withoutPerformer := func(g *fhirgen.Generated) []byte {
		return fhirgen.Mutate(g.Body, func(m map[string]any) {
			for _, e := range entries(m) {
				if r := resource(e); r["resourceType"] == "MedicationRequest" {
					delete(r["dispenseRequest"].(map[string]any), "performer")
				}
			}
		})
	}
	nominated := fhirgen.NHSNumber()
	if res := b.do("PUT", "/api/v1/nominations/"+nominated+"/P1", b.token(auth.RoleAdmin, "X26"), []byte(`{"ods":"FCG71"}`), "Content-Type", "application/json"); res.Status != 200 {
		t.Fatal(res.Status)
	}
	g1, _ := tmpl.Order(fhirgen.Options{NHSNumber: nominated})
	if res := b.post(tok, withoutPerformer(g1)); res.Status != 200 {
		t.Fatalf("%d %s", res.Status, res.Body)
	}
	g2, _ := tmpl.Order(fhirgen.Options{NHSNumber: nominated}) // names FA565 itself
	b.post(tok, g2.Body)
	g3, _ := tmpl.Order(fhirgen.Options{})
	res := b.post(tok, withoutPerformer(g3))
	if res.Status != 200 {
		t.Fatalf("%d %s", res.Status, res.Body)
	}
	oo := res.outcome(t)
	if len(oo.Issue) < 2 || oo.Issue[1].Severity != "warning" || oo.Issue[1].Diagnostics == "" {
		t.Errorf("no warning for an order that could not be routed: %s", res.Body)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		g         *fhirgen.Generated
		nominated string
		source    string
	}{{g1, "FCG71", "registry"}, {g2, "FA565", "order"}, {g3, "", "none"}} {
		cur, err := b.App.Store.Current(ctx, tc.g.ShortID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Record.Nominated != tc.nominated || cur.Record.NominationSource != tc.source {
			t.Errorf("%s: nominated %q (%s), want %q (%s)", tc.g.ShortID, cur.Record.Nominated, cur.Record.NominationSource, tc.nominated, tc.source)
		}
	}
	// The tracker shows how the dispenser was found.
	detail := b.do("GET", "/FHIR/R4/RequestGroup/"+g1.ShortID, b.token(auth.RoleTracker, "X26"), nil)
	if !bytes.Contains(detail.Body, []byte(`"url":"https://github.com/nhs-eps/epsbroker/StructureDefinition/nomination-source","valueString":"registry"`)) {
		t.Errorf("the tracker does not say the dispenser came from the registry: %.400s", detail.Body)
	}
	b.settle()
	if q, _ := b.readyQueue(ctx, "FCG71", 25); len(q) != 1 || q[0].PrescriptionID != g1.ShortID {
		t.Errorf("FCG71's queue: %+v", q)
	}
	if q, _ := b.readyQueue(ctx, "FA565", 25); len(q) != 1 || q[0].PrescriptionID != g2.ShortID {
		t.Errorf("FA565's queue: %+v", q)
	}
}

// When a patient's nomination changes, prescriptions already waiting in the
// old dispenser's queue stay there; new orders go to the new dispenser.
func TestNominationChangeLeavesQueuedPrescriptions(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := b.token(auth.RolePrescriber, "A83008")
	admin := b.token(auth.RoleAdmin, "X26")
	nhs := fhirgen.NHSNumber()
	noPerformer := func(g *fhirgen.Generated) []byte {
		return fhirgen.Mutate(g.Body, func(m map[string]any) {
			for _, e := range entries(m) {
				if r := resource(e); r["resourceType"] == "MedicationRequest" {
					delete(r["dispenseRequest"].(map[string]any), "performer")
				}
			}
		})
	}
	b.do("PUT", "/api/v1/nominations/"+nhs+"/P1", admin, []byte(`{"ods":"FCG71"}`), "Content-Type", "application/json")
	first, _ := tmpl.Order(fhirgen.Options{NHSNumber: nhs})
	if res := b.post(tok, noPerformer(first)); res.Status != 200 {
		t.Fatal(res.Status)
	}
	b.do("PUT", "/api/v1/nominations/"+nhs+"/P1", admin, []byte(`{"ods":"VNE51"}`), "Content-Type", "application/json")
	second, _ := tmpl.Order(fhirgen.Options{NHSNumber: nhs})
	if res := b.post(tok, noPerformer(second)); res.Status != 200 {
		t.Fatal(res.Status)
	}
	b.settle()
	ctx := context.Background()
	if q, _ := b.readyQueue(ctx, "FCG71", 25); len(q) != 1 || q[0].PrescriptionID != first.ShortID {
		t.Errorf("the old dispenser's queue: %+v, want the first prescription still there", q)
	}
	if q, _ := b.readyQueue(ctx, "VNE51", 25); len(q) != 1 || q[0].PrescriptionID != second.ShortID {
		t.Errorf("the new dispenser's queue: %+v", q)
	}
}

// Every change is kept, beyond the key-value default of 64 revisions, and a
// restart (which opens the existing bucket) trims nothing.
func TestNominationHistoryIsNeverTrimmed(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	nhs := fhirgen.NHSNumber()
	admin := b.token(auth.RoleAdmin, "X26")
	for i := 0; i < 70; i++ {
		ods := []string{"FA565", "FCG71"}[i%2]
		if res := b.do("PUT", "/api/v1/nominations/"+nhs+"/P1", admin, []byte(`{"ods":"`+ods+`"}`), "Content-Type", "application/json"); res.Status != 200 {
			t.Fatal(res.Status)
		}
	}
	if n := len(b.nominations(nhs).History); n != 70 {
		t.Fatalf("%d changes kept, want 70", n)
	}
	b.stop()
	b2 := startBroker(t, dir)
	b2.do("PUT", "/api/v1/nominations/"+nhs+"/P3", b2.token(auth.RoleAdmin, "X26"), []byte(`{"ods":"A83008"}`), "Content-Type", "application/json")
	if n := len(b2.nominations(nhs).History); n != 71 {
		t.Errorf("after a restart and a change: %d changes kept, want 71", n)
	}
}
