package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// releaseBody makes a Task/$release Parameters from the NHS nominated
// release example: for owner, by prescription ID when id is not empty.
func releaseBody(t testing.TB, owner, id string) []byte {
	t.Helper()
	raw := readFile(t, filepath.Join(fixtures, "spec/dispense/Nominated-Pharmacy-Request-Release-200_OK.json"))
	return fhirgen.Mutate(raw, func(m map[string]any) {
		params := m["parameter"].([]any)
		for _, p := range params {
			pm := p.(map[string]any)
			if pm["name"] == "owner" {
				pm["resource"].(map[string]any)["identifier"].([]any)[0].(map[string]any)["value"] = owner
			}
		}
		if id != "" {
			m["parameter"] = append(params, map[string]any{"name": "group-identifier",
				"valueIdentifier": map[string]any{"system": "https://fhir.nhs.uk/Id/prescription-order-number", "value": id}})
		}
	})
}

// released reads the prescription IDs and the raw order bundles a release
// answer hands over.
func released(t testing.TB, res *response) (ids []string, raws []json.RawMessage) {
	t.Helper()
	if res.Status != 200 {
		t.Fatalf("release: %d %s", res.Status, res.Body)
	}
	var p struct {
		ResourceType string
		Parameter    []struct {
			Name     string
			Resource struct {
				Total int
				Entry []struct{ Resource json.RawMessage }
			}
		}
	}
	if err := json.Unmarshal(res.Body, &p); err != nil || p.ResourceType != "Parameters" || p.Parameter[0].Name != "passedPrescriptions" {
		t.Fatalf("not a release answer (%v): %.300s", err, res.Body)
	}
	for _, e := range p.Parameter[0].Resource.Entry {
		raws = append(raws, e.Resource)
		ids = append(ids, factsOf(t, e.Resource).ShortID)
	}
	if p.Parameter[0].Resource.Total != len(ids) {
		t.Errorf("total %d for %d entries", p.Parameter[0].Resource.Total, len(ids))
	}
	return ids, raws
}

func (b *testBroker) release(owner, id string) *response {
	b.t.Helper()
	return b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, owner), releaseBody(b.t, owner, id))
}

func postOrders(t testing.TB, b *testBroker, n int, opts fhirgen.Options) []*fhirgen.Generated {
	t.Helper()
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	tok := b.token(auth.RolePrescriber, "A83008")
	var out []*fhirgen.Generated
	for i := 0; i < n; i++ {
		g, _ := tmpl.Order(opts)
		if res := b.post(tok, g.Body); res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
		out = append(out, g)
	}
	return out
}

func (b *testBroker) status(id string) (string, string) {
	b.t.Helper()
	cur, err := b.App.Store.Current(context.Background(), id)
	if err != nil {
		b.t.Fatal(err)
	}
	return string(cur.Record.Status), cur.Record.Dispenser
}

func TestReleaseByID(t *testing.T) {
	b := startBroker(t, "")
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	ids, raws := released(t, b.release("FCG71", g.ShortID))
	if len(ids) != 1 || ids[0] != g.ShortID || !bytes.Equal(bytes.TrimSpace(raws[0]), bytes.TrimSpace(g.Body)) {
		t.Fatalf("released %v; the order must come back byte for byte", ids)
	}
	if st, d := b.status(g.ShortID); st != "0002" || d != "FCG71" {
		t.Errorf("after release: %s held by %s", st, d)
	}
	res := b.release("VNE51", g.ShortID)
	if res.Status != 400 || !res.outcome(t).hasCode("PRESCRIPTION_WITH_ANOTHER_DISPENSER") || !bytes.Contains(res.Body, []byte(`"value":"FCG71"`)) {
		t.Errorf("release held by another: %d %s", res.Status, res.Body)
	}
	// Unknown: 400 RESOURCE_NOT_FOUND, as the EPS specification answers.
	if res := b.release("VNE51", fhirgen.ShortID("A83008")); res.Status != 400 || !res.outcome(t).hasCode("RESOURCE_NOT_FOUND") {
		t.Errorf("unknown ID: %d %s", res.Status, res.Body)
	}
	if res := b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RolePrescriber, "A83008"), releaseBody(t, "A83008", g.ShortID)); res.Status != 403 {
		t.Errorf("prescriber releasing: %d", res.Status)
	}
	if res := b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, "VNE51"), releaseBody(t, "FCG71", g.ShortID)); res.Status != 403 {
		t.Errorf("releasing for another organisation: %d", res.Status)
	}
	if res := b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, "VNE51"), []byte(`{"resourceType":"Parameters"}`)); res.Status != 400 {
		t.Errorf("no owner: %d", res.Status)
	}
	if st, d := b.status(g.ShortID); st != "0002" || d != "FCG71" {
		t.Errorf("refused releases changed it: %s held by %s", st, d)
	}
}

// A nominated release hands over the 25 oldest prescriptions of the owner's
// queue, then the rest, then none (an empty Bundle).
func TestNominatedRelease(t *testing.T) {
	b := startBroker(t, "")
	orders := postOrders(t, b, 30, fhirgen.Options{Performer: "FA565"})
	postOrders(t, b, 2, fhirgen.Options{Performer: "FCG71"}) // another dispenser's
	b.settle()
	first, _ := released(t, b.release("FA565", ""))
	if len(first) != 25 {
		t.Fatalf("first release: %d prescriptions, want 25", len(first))
	}
	for i, id := range first {
		if id != orders[i].ShortID {
			t.Fatalf("release %d is %s, want the oldest first (%s)", i, id, orders[i].ShortID)
		}
	}
	second, _ := released(t, b.release("FA565", ""))
	if len(second) != 5 || second[0] != orders[25].ShortID {
		t.Errorf("second release: %v", second)
	}
	b.settle()
	if third, _ := released(t, b.release("FA565", "")); len(third) != 0 {
		t.Errorf("empty queue released %v", third)
	}
	for _, g := range orders {
		if st, d := b.status(g.ShortID); st != "0002" || d != "FA565" {
			t.Fatalf("%s: %s held by %s", g.ShortID, st, d)
		}
	}
}

// 50 dispensers release one prescription at once: exactly one gets it, 49
// are told it is with another dispenser.
func TestConcurrentReleaseByIDExactlyOnce(t *testing.T) {
	b := startBroker(t, "")
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	bodies := make([][]byte, 50)
	toks := make([]string, 50)
	for i := range bodies {
		ods := fmt.Sprintf("FX%03d", i)
		bodies[i], toks[i] = releaseBody(t, ods, g.ShortID), b.token(auth.RoleDispenser, ods)
	}
	statuses := make([]*response, 50)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			statuses[i] = b.do("POST", "/FHIR/R4/Task/$release", toks[i], bodies[i])
		}()
	}
	close(start)
	wg.Wait()
	won, lost := 0, 0
	for _, res := range statuses {
		switch {
		case res.Status == 200:
			won++
		case res.Status == 400 && bytes.Contains(res.Body, []byte("PRESCRIPTION_WITH_ANOTHER_DISPENSER")):
			lost++
		default:
			t.Errorf("unexpected answer %d %s", res.Status, res.Body)
		}
	}
	if won != 1 || lost != 49 {
		t.Errorf("%d releases succeeded and %d were refused; want 1 and 49", won, lost)
	}
}

// 20 nominated releases at once by one dispenser over 500 ready
// prescriptions hand out each exactly once.
func TestConcurrentNominatedReleasesHandOutEachOnce(t *testing.T) {
	b := startBroker(t, "")
	orders := postOrders(t, b, 500, fhirgen.Options{Performer: "FA565"})
	b.settle()
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				res := b.release("FA565", "")
				if res.Status != 200 {
					t.Errorf("release: %d %s", res.Status, res.Body)
					return
				}
				ids, _ := released(t, res)
				if len(ids) == 0 {
					return
				}
				mu.Lock()
				for _, id := range ids {
					seen[id]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, g := range orders {
		if seen[g.ShortID] != 1 {
			t.Errorf("%s handed out %d times", g.ShortID, seen[g.ShortID])
		}
	}
	if len(seen) != 500 {
		t.Errorf("%d distinct prescriptions handed out, want 500", len(seen))
	}
}

// Every transition is published on the prescriber's and the dispenser's
// notification subjects, so they can follow their prescriptions without
// polling.
func TestTransitionNotifications(t *testing.T) {
	b := startBroker(t, "")
	presc := make(chan *nats.Msg, 16)
	disp := make(chan *nats.Msg, 16)
	s1, _ := b.App.NATS.Conn.ChanSubscribe("eps.notify.prescriber.A83008.>", presc)
	s2, _ := b.App.NATS.Conn.ChanSubscribe("eps.notify.dispenser.FCG71.>", disp)
	defer s1.Unsubscribe()
	defer s2.Unsubscribe()
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	released(t, b.release("FCG71", g.ShortID))
	want := func(ch chan *nats.Msg, subject string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-ch:
				if m.Subject == subject {
					if !bytes.Contains(m.Data, []byte(g.ShortID)) || bytes.Contains(m.Data, []byte(g.NHSNumber)) {
						t.Errorf("%s: %s (must name the prescription, not the patient)", subject, m.Data)
					}
					return
				}
			case <-deadline:
				t.Errorf("no notification on %s", subject)
				return
			}
		}
	}
	want(presc, "eps.notify.prescriber.A83008.prescription-order")
	want(presc, "eps.notify.prescriber.A83008.release")
	want(disp, "eps.notify.dispenser.FCG71.release")
}

// A cancellation that arrives before its prescription answers R-0008 but is
// kept, and applies when the order arrives.
func TestCancellationBeforeItsPrescription(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	tok := b.token(auth.RolePrescriber, g.Sender)
	cancel, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
	res := b.post(tok, cancel)
	if res.Status != 400 || !res.outcome(t).hasCode("R-0008") { // 400, as the EPS specification answers R-0008
		t.Fatalf("early cancellation: %d %s", res.Status, res.Body)
	}
	if st, _ := b.status(g.ShortID); st != "9005" {
		t.Fatalf("kept as %s, want 9005", st)
	}
	if res := b.post(tok, g.Body); res.Status != 200 {
		t.Fatalf("the order after its cancellation: %d %s", res.Status, res.Body)
	}
	cur, err := b.App.Store.Current(context.Background(), g.ShortID)
	if err != nil {
		t.Fatal(err)
	}
	if cur.Record.Status != "0001" || cur.Record.Items[0].Status != "0005" || cur.Record.Items[1].Status != "0007" || cur.Record.BundleID != g.BundleID {
		t.Errorf("after arrival: %s items %+v", cur.Record.Status, cur.Record.Items)
	}
	if res := b.post(tok, g.Body); res.Status != 200 {
		t.Errorf("the order resent: %d", res.Status)
	}
	// The tracker shows it, with the cancellation in its history.
	res = b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, b.token(auth.RoleTracker, "X26"), nil)
	if _, st, _ := groups(t, res); st[0] != "0001" || !bytes.Contains(res.Body, []byte("0005")) {
		t.Errorf("tracker: %v", st)
	}
}

// Concurrent requests with one X-Request-ID: one runs; the others are told
// it is in progress or get its answer; nothing is released twice.
func TestConcurrentSameRequestIDReleasesOnce(t *testing.T) {
	b := startBroker(t, "")
	postOrders(t, b, 60, fhirgen.Options{Performer: "FA565"})
	b.settle()
	key := "5f4ad9b2-8d8e-4f53-9a54-0d4b7a6f1c11"
	tok := b.token(auth.RoleDispenser, "FA565")
	body := releaseBody(t, "FA565", "")
	answers := make([]*response, 8)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = b.do("POST", "/FHIR/R4/Task/$release", tok, body, "X-Request-ID", key)
		}()
	}
	wg.Wait()
	var first []byte
	for _, res := range answers {
		switch res.Status {
		case 200:
			if first != nil && !bytes.Equal(first, res.Body) {
				t.Error("two different answers for one X-Request-ID")
			}
			first = res.Body
		case 409:
			if res.Header.Get("Retry-After") == "" {
				t.Error("409 in progress without Retry-After")
			}
		default:
			t.Errorf("answer %d %s", res.Status, res.Body)
		}
	}
	// Exactly 25 are with the dispenser: one release ran.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.App.Tracker.Index.WaitApplied(ctx, b.App.Store.LastWritten()); err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, e := range b.App.Tracker.Index.ByDispenser("FA565") {
		if e.Status == "0002" {
			held++
		}
	}
	if held != 25 {
		t.Errorf("%d prescriptions released, want 25 (one release)", held)
	}
}

// The dispenser holding a prescription that asks for it again by ID (a
// retry whose answer was lost) gets it again; nothing changes.
func TestReleaseByIDRetryByTheHolder(t *testing.T) {
	b := startBroker(t, "")
	g := postOrders(t, b, 1, fhirgen.Options{})[0]
	released(t, b.release("FCG71", g.ShortID))
	n := b.events(g.ShortID)
	ids, raws := released(t, b.release("FCG71", g.ShortID))
	if len(ids) != 1 || !bytes.Equal(bytes.TrimSpace(raws[0]), bytes.TrimSpace(g.Body)) {
		t.Errorf("retry by the holder: %v", ids)
	}
	if b.events(g.ShortID) != n {
		t.Error("the retry wrote an event")
	}
}

// TestLifecycleReadsWhatEPSReads posts the dispensing messages with what EPS
// does not read changed (issue 10): a release's group-identifier of another
// system, a dispense notification whose contained MedicationRequest names
// resources that are nowhere and whose Organization has an ODS code of
// another form, a cancellation naming a performer and an Organization by
// codes of another form: all accepted. A cancellation whose requester names
// no entry is refused as EPS refuses it (TOO_FEW_VALUES_SUBMITTED at
// Bundle.entry) and changes nothing.
func TestLifecycleReadsWhatEPSReads(t *testing.T) {
	const pharmacy = "FA565"
	b := startBroker(t, "")
	orders := postOrders(t, b, 2, fhirgen.Options{Performer: pharmacy})
	g, other := orders[0], orders[1]
	tok := b.token(auth.RoleDispenser, pharmacy)

	rel := fhirgen.Mutate(releaseBody(t, pharmacy, g.ShortID), func(m map[string]any) {
		for _, p := range m["parameter"].([]any) {
			if pm := p.(map[string]any); pm["name"] == "group-identifier" {
				pm["valueIdentifier"].(map[string]any)["system"] = "https://example.org/id"
			}
		}
	})
	if ids, _ := released(t, b.do("POST", "/FHIR/R4/Task/$release", tok, rel)); len(ids) != 1 || ids[0] != g.ShortID {
		t.Fatalf("released %v", ids)
	}

	items := map[string]string{}
	for _, id := range g.ItemIDs {
		items[id] = "0001"
	}
	dn, _ := fhirgen.DispenseNotification(g, pharmacy, items, "0006", "")
	dn = fhirgen.Mutate(dn, func(m map[string]any) {
		for _, e := range m["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			switch r["resourceType"] {
			case "Organization":
				r["identifier"] = []any{map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "F A 565"}}
			case "MedicationDispense":
				for _, c := range r["contained"].([]any) {
					if cm := c.(map[string]any); cm["resourceType"] == "MedicationRequest" {
						cm["subject"] = map[string]any{"reference": "#nowhere"}
						cm["requester"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"}
					}
				}
			}
		}
	})
	if res := b.post(tok, dn); res.Status != 200 {
		t.Fatalf("dispense notification: %d %s", res.Status, res.Body)
	}
	b.settle()
	if st, d := b.status(g.ShortID); st != "0006" || d != pharmacy {
		t.Errorf("after the dispense notification: %s held by %s", st, d)
	}

	prescriber := b.token(auth.RolePrescriber, other.Sender)
	cancel, _ := fhirgen.Cancellation(other, other.ItemIDs[0], "0001")
	bad := fhirgen.Mutate(cancel, func(m map[string]any) {
		for _, e := range m["entry"].([]any) {
			if r := e.(map[string]any)["resource"].(map[string]any); r["resourceType"] == "MedicationRequest" {
				r["requester"] = map[string]any{"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"}
			}
		}
	})
	res := b.post(prescriber, bad)
	if res.Status != 400 || !res.outcome(t).hasCode("TOO_FEW_VALUES_SUBMITTED") || !bytes.Contains(res.Body, []byte(`"Bundle.entry"`)) {
		t.Errorf("cancellation naming no requester: %d %s", res.Status, res.Body)
	}
	if cur, err := b.App.Store.Current(context.Background(), other.ShortID); err != nil || cur.Record.Items[0].Status != "0007" {
		t.Errorf("the refused cancellation changed the item: %+v %v", cur, err)
	}
	odd := fhirgen.Mutate(cancel, func(m map[string]any) {
		for _, e := range m["entry"].([]any) {
			r := e.(map[string]any)["resource"].(map[string]any)
			switch r["resourceType"] {
			case "Organization":
				r["identifier"] = []any{map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A83 008"}}
			case "MedicationRequest":
				r["dispenseRequest"].(map[string]any)["performer"] = map[string]any{
					"identifier": map[string]any{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "F A 565"}}
			}
		}
	})
	if res := b.post(prescriber, odd); res.Status != 200 {
		t.Fatalf("cancellation: %d %s", res.Status, res.Body)
	}
	b.settle()
	if cur, err := b.App.Store.Current(context.Background(), other.ShortID); err != nil || cur.Record.Items[0].Status != "0005" {
		t.Errorf("after the cancellation: %+v %v", cur.Record.Items, err)
	}
}
