package test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Issue 11 (low): a prescriber cannot touch another organisation's
// prescriptions, present or future. The owner is the fhirgen default
// prescriber (A83008); the attacker is another prescribing organisation.

const (
	ownerODS    = "A83008"
	attackerODS = "B81001"
)

// cancelAs is a cancellation of line item i of g sent by organisation ods
// (MessageHeader.sender ods, as that organisation's system sends it).
func cancelAs(t testing.TB, g *fhirgen.Generated, ods string, i int) []byte {
	t.Helper()
	as := *g
	as.Sender = ods
	body, _ := fhirgen.Cancellation(&as, g.ItemIDs[i], "0001")
	return body
}

// keptElsewhere checks the answer to a cancellation of this prescription
// from an organisation that did not send it: R-0008 as for an unknown ID,
// one event that keeps the cancellation for its sender, and the
// prescription as it was.
func (r *scenarioRx) keptElsewhere(t *testing.T, what string, res *response) {
	t.Helper()
	if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-0008" {
		t.Errorf("%s: %d %s %s, want 400 OperationOutcome R-0008 (as for an unknown ID): %s", what, res.Status, typ, code, res.Body)
	}
	r.events++
	r.check(t)
}

// A cancellation from another organisation gets exactly the answer of a
// cancellation of an ID that does not exist, whatever the ID is (unknown,
// another organisation's prescription, with a dispenser or not, or only
// another organisation's early cancellation), after the same work: one read
// and one write that keeps it for its sender (a repeat: one read, no
// write). The owner's prescription is unchanged and nobody is notified.
func TestSecurityPrescriberCancellationTellsNothing(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var notified []string
	sub, err := b.App.NATS.Conn.Subscribe("eps.notify.>", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		notified = append(notified, m.Subject+" "+string(m.Data))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	owner := b.token(auth.RolePrescriber, ownerODS)
	attacker := b.token(auth.RolePrescriber, attackerODS)
	cases := []struct {
		name  string
		setup func(t *testing.T, g *fhirgen.Generated)
	}{
		{"an ID that does not exist", func(*testing.T, *fhirgen.Generated) {}},
		{"another organisation's prescription", func(t *testing.T, g *fhirgen.Generated) {
			if res := b.post(owner, g.Body); res.Status != 200 {
				t.Fatalf("order: %d %s", res.Status, res.Body)
			}
		}},
		{"another organisation's prescription with a dispenser", func(t *testing.T, g *fhirgen.Generated) {
			if res := b.post(owner, g.Body); res.Status != 200 {
				t.Fatalf("order: %d %s", res.Status, res.Body)
			}
			released(t, b.release("FCG71", g.ShortID))
		}},
		{"another organisation's early cancellation", func(t *testing.T, g *fhirgen.Generated) {
			if res := b.post(owner, cancelAs(t, g, ownerODS, 0)); res.Status != 400 {
				t.Fatalf("owner's early cancellation: %d %s", res.Status, res.Body)
			}
		}},
	}
	var want []byte
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, err := tmpl.Order(fhirgen.Options{})
			if err != nil {
				t.Fatal(err)
			}
			c.setup(t, g)
			before, _ := b.App.Store.Current(context.Background(), g.ShortID)
			n := b.events(g.ShortID)
			res := b.post(attacker, cancelAs(t, g, attackerODS, 0))
			if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-0008" {
				t.Fatalf("attacker's cancellation: %d %s %s, want 400 R-0008: %s", res.Status, typ, code, res.Body)
			}
			if want == nil {
				want = res.Body
			} else if !bytes.Equal(res.Body, want) {
				t.Errorf("answer differs from an unknown ID's:\n%s\nwant\n%s", res.Body, want)
			}
			if got := b.events(g.ShortID); got != n+1 {
				t.Errorf("events written: %d, want 1 (kept for the attacker, as for an unknown ID)", got-n)
			}
			// The same again: the same answer, nothing written, in every case.
			if res := b.post(attacker, cancelAs(t, g, attackerODS, 0)); !bytes.Equal(res.Body, want) || res.Status != 400 {
				t.Errorf("repeat: %d %s", res.Status, res.Body)
			}
			if got := b.events(g.ShortID); got != n+1 {
				t.Errorf("a repeat wrote %d more events, want 0", got-n-1)
			}
			after, err := b.App.Store.Current(context.Background(), g.ShortID)
			if err != nil {
				t.Fatal(err)
			}
			if before != nil {
				if after.Record.Status != before.Record.Status || len(after.Record.History) != len(before.Record.History) ||
					after.Record.Prescriber != ownerODS {
					t.Errorf("the owner's record changed: %s history %d, was %s history %d", after.Record.Status,
						len(after.Record.History), before.Record.Status, len(before.Record.History))
				}
				for i, it := range after.Record.Items {
					if it.Status != before.Record.Items[i].Status {
						t.Errorf("item %d: %s, was %s", i, it.Status, before.Record.Items[i].Status)
					}
				}
				if after.Record.Pending != nil && strings.Contains(strings.Join(after.Record.Pending.Items, " "), g.ItemIDs[0]) &&
					after.Record.Pending.Org == attackerODS {
					t.Error("the attacker's cancellation marked the owner's item")
				}
				// Nothing of it shows in the tracker.
				res := b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, b.token(auth.RoleTracker, "X26"), nil)
				if res.Status != 200 || bytes.Contains(res.Body, []byte(attackerODS)) {
					t.Errorf("tracker detail: %d, names the attacker: %v", res.Status, bytes.Contains(res.Body, []byte(attackerODS)))
				}
			}
			b.settle()
			if err := b.App.NATS.Conn.Flush(); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, m := range notified {
				if strings.Contains(m, rx.EventCancelKept) || strings.Contains(m, attackerODS) {
					t.Errorf("kept cancellation notified: %s", m)
				}
			}
		})
	}
}

// An early cancellation is kept for the canceller's organisation only: an
// attacker's early cancellation neither blocks the owner's own early
// cancellation nor touches the owner's order when it arrives (nor shows in
// its history); and an owner's early cancellation does not cancel an order
// with that ID from another organisation. The order's sender sees an
// ordinary acceptance either way.
func TestSecurityPrescriberEarlyCancellationOwnOrganisation(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	owner := b.token(auth.RolePrescriber, ownerODS)
	attacker := b.token(auth.RolePrescriber, attackerODS)
	r0008 := func(t *testing.T, what string, res *response) {
		t.Helper()
		if typ, code := rCode(res); res.Status != 400 || typ != "OperationOutcome" || code != "R-0008" {
			t.Fatalf("%s: %d %s %s, want 400 R-0008: %s", what, res.Status, typ, code, res.Body)
		}
	}
	historyOrgs := func(t *testing.T, id string) (orgs []string) {
		t.Helper()
		cur, err := b.App.Store.Current(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range cur.Record.History {
			orgs = append(orgs, h.Org)
		}
		return orgs
	}

	t.Run("the attacker first, then the owner", func(t *testing.T) {
		g, _ := tmpl.Order(fhirgen.Options{})
		r0008(t, "attacker's early cancellation of item 1", b.post(attacker, cancelAs(t, g, attackerODS, 0)))
		r0008(t, "attacker's early cancellation of item 2", b.post(attacker, cancelAs(t, g, attackerODS, 1)))
		r0008(t, "owner's early cancellation of item 2", b.post(owner, cancelAs(t, g, ownerODS, 1)))
		res := b.post(owner, g.Body)
		if res.Status != 200 || res.outcome(t).ResourceType != "OperationOutcome" {
			t.Fatalf("owner's order: %d %s", res.Status, res.Body)
		}
		cur, _ := b.App.Store.Current(context.Background(), g.ShortID)
		got := []string{string(cur.Record.Status)}
		for _, it := range cur.Record.Items {
			got = append(got, string(it.Status))
		}
		if strings.Join(got, " ") != "0001 0007 0005 0007 0007" {
			t.Errorf("owner's prescription: %v, want 0001 with only item 2 cancelled (by the owner)", got)
		}
		for _, org := range historyOrgs(t, g.ShortID) {
			if org == attackerODS {
				t.Errorf("the attacker's cancellation is in the owner's history: %v", historyOrgs(t, g.ShortID))
			}
		}
		res = b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, owner, nil)
		if res.Status != 200 || bytes.Contains(res.Body, []byte(attackerODS)) {
			t.Errorf("owner's tracker detail: %d, names the attacker: %v", res.Status, bytes.Contains(res.Body, []byte(attackerODS)))
		}
		// The attacker's kept cancellations stay its own: it is told R-0008.
		r0008(t, "attacker's cancellation after the order", b.post(attacker, cancelAs(t, g, attackerODS, 2)))
		if st, _ := b.status(g.ShortID); st != "0001" {
			t.Errorf("after the attacker's later cancellation: %s", st)
		}
	})

	t.Run("the owner's early cancellation and another organisation's order", func(t *testing.T) {
		g, _ := tmpl.Order(fhirgen.Options{})
		r0008(t, "owner's early cancellation", b.post(owner, cancelAs(t, g, ownerODS, 0)))
		// What the first organisation's tracker answers about the ID, before
		// and after another organisation's order arrives, must not differ.
		look := func() []*response {
			b.settle()
			return []*response{
				b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, owner, nil),
				b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, owner, nil),
				b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+g.NHSNumber, owner, nil),
			}
		}
		before := look()
		// Another organisation sends an order with that ID (its own message,
		// from its own token): accepted, and not cancelled.
		theirs, _ := tmpl.Order(fhirgen.Options{Sender: attackerODS, ShortID: g.ShortID, NHSNumber: g.NHSNumber})
		res := b.post(attacker, theirs.Body)
		if res.Status != 200 || res.outcome(t).ResourceType != "OperationOutcome" {
			t.Fatalf("the other organisation's order: %d %s", res.Status, res.Body)
		}
		cur, _ := b.App.Store.Current(context.Background(), g.ShortID)
		if cur.Record.Status != "0001" || cur.Record.Items[0].Status != "0007" || cur.Record.Prescriber != attackerODS {
			t.Errorf("the other organisation's prescription: %s item 1 %s prescriber %s, want 0001, 0007, %s",
				cur.Record.Status, cur.Record.Items[0].Status, cur.Record.Prescriber, attackerODS)
		}
		for _, org := range historyOrgs(t, g.ShortID) {
			if org == ownerODS {
				t.Errorf("the first organisation's cancellation is in the other's history: %v", historyOrgs(t, g.ShortID))
			}
		}
		for i, after := range look() {
			if after.Status != before[i].Status || !bytes.Equal(stripVolatile(after.Body), stripVolatile(before[i].Body)) {
				t.Errorf("the first organisation's tracker tells the order arrived:\nbefore %d %s\nafter  %d %s",
					before[i].Status, before[i].Body, after.Status, after.Body)
			}
		}
	})
}

// Tracker access for a prescriber is by the organisation that sent the
// order (the token's), never by the organisation the message names as the
// requester's. An order sent by a system for a requester of another
// organisation is accepted, as EPS accepts it (the NHS specification's
// example orders sent by RBA for C81007 and A99968).
func TestSecurityPrescriberTrackerAccessBySender(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	const sender = "Y90001"
	g, _ := tmpl.Order(fhirgen.Options{}) // the requester's Organization is A83008
	body := fhirgen.Mutate(g.Body, func(m map[string]any) {
		mh := m["entry"].([]any)[0].(map[string]any)["resource"].(map[string]any)
		mh["sender"].(map[string]any)["identifier"].(map[string]any)["value"] = sender
	})
	if res := b.post(b.token(auth.RolePrescriber, sender), body); res.Status != 200 {
		t.Fatalf("an order sent for a requester of another organisation: %d %s", res.Status, res.Body)
	}
	unknown := fhirgen.ShortID(ownerODS)
	claimed := b.token(auth.RolePrescriber, ownerODS) // the organisation the message names
	cases := []struct {
		name    string
		tok     string
		visible bool
	}{
		{"the sending organisation", b.token(auth.RolePrescriber, sender), true},
		{"the organisation the message names as the requester's", claimed, false},
		{"a tracker user", b.token(auth.RoleTracker, "X26"), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, total := groups(t, b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, c.tok, nil))
			_, _, byNHS := groups(t, b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+g.NHSNumber, c.tok, nil))
			want := map[bool]int{true: 1, false: 0}[c.visible]
			if total != want || byNHS != want {
				t.Errorf("search: by ID %d, by NHS number %d, want %d", total, byNHS, want)
			}
			res := b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, c.tok, nil)
			if want := map[bool]int{true: 200, false: 403}[c.visible]; res.Status != want {
				t.Errorf("detail: %d, want %d", res.Status, want)
			}
			if !c.visible {
				nx := b.do("GET", "/FHIR/R4/RequestGroup/"+unknown, c.tok, nil)
				if nx.Status != res.Status || !bytes.Equal(bytes.ReplaceAll(nx.Body, []byte(unknown), []byte(g.ShortID)), res.Body) {
					t.Errorf("detail differs from an unknown ID's:\n%d %s\n%d %s", res.Status, res.Body, nx.Status, nx.Body)
				}
			}
		})
	}
	// The tracker page (a session signed in with the token) decides alike.
	signIn := []byte(`{"token":"` + claimed + `"}`)
	res := b.do("POST", "/tracker/session", "", signIn, page, "1", "Content-Type", "application/json")
	if res.Status != 204 {
		t.Fatalf("sign in: %d %s", res.Status, res.Body)
	}
	cookie := "eps_session=" + strings.SplitN(strings.SplitN(res.Header.Get("Set-Cookie"), ";", 2)[0], "=", 2)[1]
	if _, _, total := groups(t, b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, "", nil, "Cookie", cookie, page, "1")); total != 0 {
		t.Errorf("page search by the claimed organisation: total %d, want 0", total)
	}
	if res := b.do("GET", "/FHIR/R4/RequestGroup/"+g.ShortID, "", nil, "Cookie", cookie, page, "1"); res.Status != 403 {
		t.Errorf("page detail by the claimed organisation: %d, want 403", res.Status)
	}
}

// BenchmarkCancelOtherOrganisation times a prescriber's cancellation of an
// ID that is not its organisation's prescription, by what the ID holds: no
// prescription, or another organisation's (first time: one read and one
// write; repeated: one read). The pairs must not differ by more than noise.
//
//	go test -run '^$' -bench CancelOtherOrganisation -benchtime 300x -count 6 ./test/
func BenchmarkCancelOtherOrganisation(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	owner := tb.token(auth.RolePrescriber, ownerODS)
	attacker := tb.token(auth.RolePrescriber, attackerODS)
	for _, c := range []struct {
		name           string
		exists, repeat bool
	}{
		{"unknown", false, false}, {"another-organisations", true, false},
		{"unknown-repeat", false, true}, {"another-organisations-repeat", true, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			bodies := make([][]byte, b.N)
			for i := range bodies {
				g, _ := tmpl.Order(fhirgen.Options{})
				if c.exists {
					if res := tb.post(owner, g.Body); res.Status != 200 {
						b.Fatalf("order: %d", res.Status)
					}
				}
				bodies[i] = cancelAs(b, g, attackerODS, 0)
				if c.repeat {
					if res := tb.post(attacker, bodies[i]); res.Status != 400 {
						b.Fatalf("first cancellation: %d", res.Status)
					}
				}
			}
			b.ResetTimer()
			for i := range bodies {
				if res := tb.post(attacker, bodies[i]); res.Status != 400 {
					b.Fatalf("cancellation: %d %s", res.Status, res.Body)
				}
			}
		})
	}
}

// stripVolatile blanks what differs between two answers that say the
// same: a searchset's id and timestamp.
func stripVolatile(body []byte) []byte {
	m := mustDecode(body)
	delete(m, "id")
	delete(m, "timestamp")
	delete(m, "meta")
	return mustJSON(m)
}

// BenchmarkCancelOtherOrganisationPaired is BenchmarkCancelOtherOrganisation
// with the two cases interleaved (alternating which goes first), so that a
// busy machine slows both alike: it reports the mean time of each and their
// ratio, first cancellations and repeats.
//
//	go test -run '^$' -bench CancelOtherOrganisationPaired -benchtime 400x -count 5 ./test/
func BenchmarkCancelOtherOrganisationPaired(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	owner := tb.token(auth.RolePrescriber, ownerODS)
	attacker := tb.token(auth.RolePrescriber, attackerODS)
	unknown, another := make([][]byte, b.N), make([][]byte, b.N)
	for i := 0; i < b.N; i++ {
		gu, _ := tmpl.Order(fhirgen.Options{})
		ga, _ := tmpl.Order(fhirgen.Options{})
		if res := tb.post(owner, ga.Body); res.Status != 200 {
			b.Fatalf("order: %d", res.Status)
		}
		unknown[i], another[i] = cancelAs(b, gu, attackerODS, 0), cancelAs(b, ga, attackerODS, 0)
	}
	timed := func(body []byte) time.Duration {
		start := time.Now()
		if res := tb.post(attacker, body); res.Status != 400 {
			b.Fatalf("cancellation: %d %s", res.Status, res.Body)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	var sum [2][2]time.Duration // [first, repeat][unknown, another]
	for round := 0; round < 2; round++ {
		for i := 0; i < b.N; i++ {
			if i%2 == 0 {
				sum[round][0] += timed(unknown[i])
				sum[round][1] += timed(another[i])
			} else {
				sum[round][1] += timed(another[i])
				sum[round][0] += timed(unknown[i])
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(sum[0][0].Microseconds())/n, "µs-first-unknown/op")
	b.ReportMetric(float64(sum[0][1].Microseconds())/n, "µs-first-another/op")
	b.ReportMetric(float64(sum[0][1])/float64(sum[0][0]), "first-ratio")
	b.ReportMetric(float64(sum[1][0].Microseconds())/n, "µs-repeat-unknown/op")
	b.ReportMetric(float64(sum[1][1].Microseconds())/n, "µs-repeat-another/op")
	b.ReportMetric(float64(sum[1][1])/float64(sum[1][0]), "repeat-ratio")
}
