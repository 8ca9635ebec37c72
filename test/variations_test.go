package test

import (
	"fmt"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Every message of a prescription's life is accepted by the broker in each
// of its variations (fhirgen.Variations: members, entries and codings in
// other orders, other whitespace, elements EPS does not read), and moves
// the prescription as the message as generated would: nominated and
// non-nominated, acute and repeat prescribing orders, released, dispensed
// and claimed.
func TestLifecycleMessageVariationsAccepted(t *testing.T) {
	b := startBroker(t, "")
	for _, k := range rxKinds(t) {
		for i := range len(fhirgen.Variations(fhirgen.Order4Items, 0)) {
			t.Run(fmt.Sprintf("%s/%d", k.name, i), func(t *testing.T) {
				r := newRx(t, b, k)
				vary := func(body []byte) (string, []byte) {
					v := fhirgen.Variations(body, uint64(i)+1)[i]
					return v.Name, v.Body
				}
				name, order := vary(r.g.Body)
				t.Logf("variation %s", name)
				if res := b.post(b.token(auth.RolePrescriber, prescriber), order); res.Status != 200 {
					t.Fatalf("order: %d %s", res.Status, res.Body)
				}
				r.want = state{status: "0001", items: r.all("0007"), title: hUpload}
				r.history, r.events = 1, 1
				r.check(t)
				r.release(t)

				body, _ := fhirgen.DispenseNotification(r.g, r.home, r.statuses(r.all("0001")), "0006", "")
				_, body = vary(body)
				r.ok(t, "dispense notification", b.post(r.token(auth.RoleDispenser, r.home), body),
					state{status: "0006", items: r.all("0001"), dispenser: r.home, title: hDispense})

				claim, _ := fhirgen.Claim(r.g, r.home, "")
				_, claim = vary(claim)
				r.ok(t, "claim", b.do("POST", "/FHIR/R4/Claim", r.token(auth.RoleDispenser, r.home), claim),
					state{status: "0008", items: r.all("0001"), dispenser: r.home, title: hClaim})
			})
		}
	}
}
