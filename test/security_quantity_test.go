package test

import (
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// entryOf returns the resource of entry k of a decoded Bundle.
func entryOf(m map[string]any, k int) map[string]any {
	return m["entry"].([]any)[k].(map[string]any)["resource"].(map[string]any)
}

// Negative and out-of-range quantities are refused end to end with a 400
// naming the value's FHIRPath, and change nothing; a dispenser's quantity 0
// for an item not dispensed is accepted.
func TestQuantitiesRefusedEndToEnd(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	presc := b.token(auth.RolePrescriber, "A83008")
	disp := b.token(auth.RoleDispenser, "FCG71")

	expect := func(name string, res *response, expr string) {
		t.Helper()
		if res.Status != 400 {
			t.Fatalf("%s: %d %s", name, res.Status, res.Body)
		}
		oo := res.outcome(t)
		if !oo.hasCode("INVALID_VALUE") || oo.Issue[0].Code != "value" || len(oo.Issue[0].Expression) != 1 || oo.Issue[0].Expression[0] != expr {
			t.Errorf("%s: %s", name, res.Body)
		}
	}

	// An order with a negative quantity: refused, nothing stored.
	bad, _ := tmpl.Order(fhirgen.Options{})
	body := fhirgen.Mutate(bad.Body, func(m map[string]any) {
		entryOf(m, 1)["dispenseRequest"].(map[string]any)["quantity"].(map[string]any)["value"] = -28
	})
	expect("order quantity -28", b.post(presc, body), "Bundle.entry[1].resource.dispenseRequest.quantity.value")
	if n := b.events(bad.ShortID); n != 0 {
		t.Errorf("refused order stored %d events", n)
	}
	// A million and one.
	body = fhirgen.Mutate(bad.Body, func(m map[string]any) {
		entryOf(m, 2)["dispenseRequest"].(map[string]any)["quantity"].(map[string]any)["value"] = 1000001
	})
	expect("order quantity 1000001", b.post(presc, body), "Bundle.entry[2].resource.dispenseRequest.quantity.value")

	// A released prescription: a dispense notification or a claim with a
	// negative quantity is refused and leaves it with the dispenser.
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	if res := b.release("FCG71", g.ShortID); res.Status != 200 {
		t.Fatalf("release: %d %s", res.Status, res.Body)
	}
	all := map[string]string{}
	for _, id := range g.ItemIDs {
		all[id] = "0001"
	}
	dn, _ := fhirgen.DispenseNotification(g, "FCG71", all, "0006", "")
	negative := fhirgen.Mutate(dn, func(m map[string]any) { entryOf(m, 1)["quantity"].(map[string]any)["value"] = -1 })
	expect("dispensed quantity -1", b.post(disp, negative), "Bundle.entry[1].resource.quantity.value")
	claim, _ := fhirgen.Claim(g, "FCG71", "")
	negClaim := fhirgen.Mutate(claim, func(m map[string]any) {
		m["item"].([]any)[0].(map[string]any)["detail"].([]any)[0].(map[string]any)["quantity"].(map[string]any)["value"] = -20
	})
	expect("claimed quantity -20", b.do("POST", "/FHIR/R4/Claim", disp, negClaim), "Claim.item[0].detail[0].quantity.value")
	if st, holder := b.status(g.ShortID); st != "0002" || holder != "FCG71" {
		t.Errorf("after refused messages: status %s held by %s, want 0002 with FCG71", st, holder)
	}

	// Quantity 0 on an item not dispensed (what dispensing systems send).
	partial := map[string]string{}
	for i, id := range g.ItemIDs {
		partial[id] = "0001"
		if i == 0 {
			partial[id] = "0002"
		}
	}
	dn, _ = fhirgen.DispenseNotification(g, "FCG71", partial, "0006", "")
	zero := fhirgen.Mutate(dn, func(m map[string]any) { entryOf(m, 1)["quantity"].(map[string]any)["value"] = 0 })
	if res := b.post(disp, zero); res.Status != 200 {
		t.Errorf("dispense notification with quantity 0 on an item not dispensed: %d %s", res.Status, res.Body)
	}
}
