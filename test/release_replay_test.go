package test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// largeOrders posts n orders nominated to performer, each with a dosage
// text of pad bytes on every line item, and returns them in posting order.
func largeOrders(t *testing.T, b *testBroker, n, pad int, performer string) []*fhirgen.Generated {
	t.Helper()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	tok := b.token(auth.RolePrescriber, "A83008")
	text := strings.Repeat("Take one tablet with water after food. ", pad/39+1)[:pad]
	var out []*fhirgen.Generated
	for i := 0; i < n; i++ {
		g, err := tmpl.Order(fhirgen.Options{Performer: performer})
		if err != nil {
			t.Fatal(err)
		}
		g.Body = fhirgen.Mutate(g.Body, func(m map[string]any) {
			for _, e := range m["entry"].([]any) {
				r := e.(map[string]any)["resource"].(map[string]any)
				if r["resourceType"] == "MedicationRequest" {
					r["dosageInstruction"].([]any)[0].(map[string]any)["text"] = text
				}
			}
		})
		if res := b.post(tok, g.Body); res.Status != 200 {
			t.Fatalf("order %d: %d %.500s", i, res.Status, res.Body)
		}
		out = append(out, g)
	}
	return out
}

// A nominated release whose answer is larger than one NATS message, retried
// with the same X-Request-ID: the same prescriptions, byte for byte, and
// nothing changed; the 26th stays in the queue for the next release.
func TestReleaseReplayLargeAnswer(t *testing.T) {
	// 128 KiB bodies: the embedded server's max payload is then 1 MiB.
	b := startBroker(t, "", func(c *config.Config) { c.MaxBodyBytes = 128 << 10 })
	maxPayload := int(b.App.NATS.Conn.MaxPayload())
	orders := largeOrders(t, b, 26, 12<<10, "FA565")
	b.settle()
	tok := b.token(auth.RoleDispenser, "FA565")
	body := releaseBody(t, "FA565", "")
	key := "0b7f3c52-3f7e-4a51-9d0c-6c2f0a1e7d21"

	before := b.events("")
	first := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	ids, raws := released(t, first)
	if len(ids) != 25 {
		t.Fatalf("first release handed over %d prescriptions, want 25", len(ids))
	}
	if len(first.Body) <= maxPayload {
		t.Fatalf("the answer is %d bytes, not larger than the NATS max payload %d: the test proves nothing", len(first.Body), maxPayload)
	}
	for i, raw := range raws {
		if !bytes.Equal(bytes.TrimSpace(raw), bytes.TrimSpace(orders[i].Body)) || ids[i] != orders[i].ShortID {
			t.Fatalf("entry %d is %s, want the order %s byte for byte (oldest first)", i, ids[i], orders[i].ShortID)
		}
	}
	last := orders[25].ShortID
	if slices.Contains(ids, last) {
		t.Fatal("the 26th prescription was released by the first request")
	}
	afterFirst := b.events("")
	if afterFirst != before+25 {
		t.Fatalf("the release wrote %d events, want 25", afterFirst-before)
	}
	b.settle()

	// Retries, one after another: each gets the first answer, byte for byte.
	for i := 0; i < 2; i++ {
		again := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
		if again.Status != 200 || again.Header.Get("X-Idempotent-Replay") != "true" {
			t.Fatalf("retry %d: %d replay=%q %.300s", i, again.Status, again.Header.Get("X-Idempotent-Replay"), again.Body)
		}
		if !bytes.Equal(again.Body, first.Body) {
			againIDs, _ := released(t, again)
			t.Fatalf("retry %d answered differently (%d bytes, IDs %v; first %d bytes, IDs %v)", i, len(again.Body), againIDs, len(first.Body), ids)
		}
		if n := b.events(""); n != afterFirst {
			t.Fatalf("retry %d wrote %d events", i, n-afterFirst)
		}
	}
	if st, _ := b.status(last); st != "0001" {
		t.Fatalf("the 26th prescription is %s after the retries, want 0001 (to be dispensed)", st)
	}

	// The same key with another request: 409, nothing released.
	if res := b.do("POST", "/FHIR/R4/Task/$release", tok, releaseBody(t, "FA565", last), "X-Request-ID", key); res.Status != 409 {
		t.Errorf("the key with another body: %d %.300s", res.Status, res.Body)
	}
	// The same key from another organisation: its own scope, its own (empty) queue.
	other := b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, "FCG71"), releaseBody(t, "FCG71", ""), "X-Request-ID", key)
	if otherIDs, _ := released(t, other); len(otherIDs) != 0 || other.Header.Get("X-Idempotent-Replay") != "" {
		t.Errorf("the key from another organisation: %v replay=%q", otherIDs, other.Header.Get("X-Idempotent-Replay"))
	}
	if n := b.events(""); n != afterFirst {
		t.Fatalf("the refused and foreign requests wrote %d events", n-afterFirst)
	}

	// The next release (a new key) hands over the 26th, and only it.
	next := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", "3d1c8f0e-5b7a-4c29-8e61-2f4b9a0d6c35")
	if nextIDs, _ := released(t, next); !slices.Equal(nextIDs, []string{last}) {
		t.Errorf("the next release handed over %v, want [%s]", nextIDs, last)
	}
	if st, d := b.status(last); st != "0002" || d != "FA565" {
		t.Errorf("the 26th after the next release: %s held by %s", st, d)
	}
}

// Small release answers replay as before: by ID and nominated, the same
// answer and nothing written; a retry by ID after the prescription was
// dispensed still answers the release.
func TestReleaseReplaySmallAnswer(t *testing.T) {
	b := startBroker(t, "")
	gs := postOrders(t, b, 3, fhirgen.Options{Performer: "FA565"})
	b.settle()
	tok := b.token(auth.RoleDispenser, "FA565")
	cases := []struct {
		name string
		key  string
		body []byte
		want []string
	}{
		{"by ID", "a7e0c3f4-1d2b-4e5f-8a9b-0c1d2e3f4a5b", releaseBody(t, "FA565", gs[2].ShortID), []string{gs[2].ShortID}},
		{"nominated", "b8f1d4a5-2e3c-4f6a-9b0c-1d2e3f4a5b6c", releaseBody(t, "FA565", ""), []string{gs[0].ShortID, gs[1].ShortID}},
		{"nominated, queue empty", "c9a2e5b6-3f4d-4a7b-8c1d-2e3f4a5b6c7d", releaseBody(t, "FA565", ""), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b.settle()
			first := b.do("POST", "/FHIR/R4/Task/$release", tok, tc.body, "X-Request-ID", tc.key)
			if ids, _ := released(t, first); !slices.Equal(ids, tc.want) {
				t.Fatalf("released %v, want %v", ids, tc.want)
			}
			n := b.events("")
			again := b.do("POST", "/FHIR/R4/Task/$release", tok, tc.body, "X-Request-ID", tc.key)
			if again.Status != 200 || again.Header.Get("X-Idempotent-Replay") != "true" || !bytes.Equal(again.Body, first.Body) {
				t.Fatalf("retry: %d replay=%q, same body %v", again.Status, again.Header.Get("X-Idempotent-Replay"), bytes.Equal(again.Body, first.Body))
			}
			if m := b.events(""); m != n {
				t.Errorf("the retry wrote %d events", m-n)
			}
		})
	}
	// An error answer replays too.
	key := "d0b3f6c7-4a5e-4b8c-9d2e-3f4a5b6c7d8e"
	unknown := releaseBody(t, "FA565", fhirgen.ShortID("A83008"))
	first := b.do("POST", "/FHIR/R4/Task/$release", tok, unknown, "X-Request-ID", key)
	again := b.do("POST", "/FHIR/R4/Task/$release", tok, unknown, "X-Request-ID", key)
	if first.Status != 400 || again.Status != 400 || again.Header.Get("X-Idempotent-Replay") != "true" || !bytes.Equal(again.Body, first.Body) {
		t.Errorf("unknown ID: %d then %d replay=%q", first.Status, again.Status, again.Header.Get("X-Idempotent-Replay"))
	}
}

// A replayed release of a repeat dispensing issue names the issue it
// released, even after the next issue has become current and been released.
func TestReleaseReplayRepeatDispensingIssue(t *testing.T) {
	b, clock := erdBroker(t)
	pharmacy := newODS("FE")
	c := newCourse(t, b, clock, 3, 28, pharmacy)
	c.post()
	b.settle()
	tok := b.token(auth.RoleDispenser, pharmacy)
	body := releaseBody(t, pharmacy, "")
	key := "e1c4a7d8-5b6f-4c9d-8e3f-4a5b6c7d8e9f"
	first := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	if ids, _ := released(t, first); !slices.Equal(ids, []string{c.g.ShortID}) {
		t.Fatalf("issue 1 release: %v", ids)
	}
	if res, _ := c.dispense(pharmacy, 1, "0001", "0006"); res.Status != 200 {
		t.Fatalf("issue 1 dispense: %d %s", res.Status, res.Body)
	}
	c.tick(c.availableAt(2))
	if ids, issues := c.releaseNominated(pharmacy); len(ids) != 1 || issues[0] != 2 {
		t.Fatalf("issue 2 release: %v %v", ids, issues)
	}
	n := b.events("")
	again := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	if again.Status != 200 || again.Header.Get("X-Idempotent-Replay") != "true" || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("replay after issue 2: %d replay=%q, same body %v", again.Status, again.Header.Get("X-Idempotent-Replay"), bytes.Equal(again.Body, first.Body))
	}
	if !bytes.Contains(again.Body, []byte(`"url":"numberOfRepeatsIssued","valueInteger":0`)) {
		t.Errorf("the replay does not name issue 1: %.400s", again.Body)
	}
	if m := b.events(""); m != n {
		t.Errorf("the replay wrote %d events", m-n)
	}
}

// A release whose answer was never recorded (its broker died after
// releasing, or the answer could not be kept): the retry that takes the
// reservation over answers the prescriptions that release handed over, not
// others, and writes nothing.
func TestReleaseReplayAfterLostAnswer(t *testing.T) {
	clock := &testClock{now: time.Now()}
	b := startBrokerClock(t, "", clock.Now)
	postOrders(t, b, 30, fhirgen.Options{Performer: "FA565"})
	b.settle()
	tok := b.token(auth.RoleDispenser, "FA565")
	body := releaseBody(t, "FA565", "")
	key := "f2d5b8e9-6c7a-4d0e-9f4a-5b6c7d8e9fa0"
	first := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	ids, _ := released(t, first)
	if len(ids) != 25 {
		t.Fatalf("released %d, want 25", len(ids))
	}
	// The answer is lost: the key is left reserved, as by a broker that
	// died before recording it.
	ctx := context.Background()
	kv, err := b.App.Store.JetStream().KeyValue(ctx, broker.BucketRequests)
	if err != nil {
		t.Fatal(err)
	}
	pending := mustJSON(service.SavedResponse{BodyHash: service.RequestHash("POST", "/FHIR/R4/Task/$release", body)})
	if _, err := kv.Put(ctx, service.RequestKey("dispenser-user-FA565", "FA565", key), pending); err != nil {
		t.Fatal(err)
	}
	b.settle()
	n := b.events("")
	if res := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key); res.Status != 409 {
		t.Fatalf("retry while reserved: %d, want 409", res.Status)
	}
	clock.Set(clock.Now().Add(3 * time.Minute))
	again := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	if againIDs, _ := released(t, again); !slices.Equal(againIDs, ids) || !bytes.Equal(again.Body, first.Body) {
		t.Fatalf("the retry taking over answered %v, want the first release's %v byte for byte", againIDs, ids)
	}
	if m := b.events(""); m != n {
		t.Fatalf("the retry wrote %d events", m-n)
	}
	// Its answer is kept now.
	third := b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
	if third.Status != 200 || third.Header.Get("X-Idempotent-Replay") != "true" || !bytes.Equal(third.Body, first.Body) {
		t.Fatalf("replay: %d replay=%q", third.Status, third.Header.Get("X-Idempotent-Replay"))
	}
	// The other five are still in the queue.
	b.settle()
	next, _ := released(t, b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", "a3e6c9fa-7d8b-4e1f-8a5b-6c7d8e9fa0b1"))
	if len(next) != 5 {
		t.Errorf("the next release handed over %d, want the 5 left", len(next))
	}
	for _, id := range next {
		if slices.Contains(ids, id) {
			t.Errorf("%s handed over twice", id)
		}
	}
}
