package test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Two broker instances on one NATS server (as several instances behind a
// load balancer run): an order acknowledged by instance A is released at
// once by its dispenser through instance B, with no settle, whichever
// instance the dispenser's request reaches (read your writes across
// instances: a release waits for its ready queues to hold the event log's
// last sequence, not only what its own instance wrote).
func TestReleaseAcrossInstances(t *testing.T) {
	srv := startNATS(t)
	ext := func(c *config.Config) { c.NATSURL = srv.ClientURL() }
	a := startBroker(t, "", ext)
	b := startBroker(t, "", ext, sharedKey(a))
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	presc := a.token(auth.RolePrescriber, "A83008")
	disp := b.token(auth.RoleDispenser, "FA565")
	body := releaseBody(t, "FA565", "")
	for i := range 20 {
		g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
		if err != nil {
			t.Fatal(err)
		}
		if res := a.post(presc, g.Body); res.Status != 200 {
			t.Fatalf("order %d on A: %d %s", i, res.Status, res.Body)
		}
		ids, _ := released(t, b.do("POST", "/FHIR/R4/Task/$release", disp, body))
		if !slices.Equal(ids, []string{g.ShortID}) {
			t.Fatalf("round %d: B released %v right after A's 200 of %s, want exactly it", i, ids, g.ShortID)
		}
	}
}

// fillLog stores the last event about prescription id again n times, on
// its subject, without its body.
func fillLog(t *testing.T, url, id string, n int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, broker.SubjectRx+id)
	if err != nil {
		t.Fatal(err)
	}
	h := nats.Header{}
	for k, v := range last.Header {
		if !strings.HasPrefix(k, "Nats-") {
			h[k] = v
		}
	}
	// In rounds of 256, each waited for: all n at once stalled the
	// client's async publish window on a loaded machine ("too many
	// outstanding async published messages").
	for done := 0; done < n; {
		round := min(256, n-done)
		for range round {
			if _, err := js.PublishMsgAsync(&nats.Msg{Subject: last.Subject, Header: h}); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal("the log was not filled")
		}
		done += round
	}
}

// sharedKey gives a broker the pseudonym key of a, as every instance on
// one NATS server shares it.
func sharedKey(a *testBroker) func(*config.Config) {
	return func(c *config.Config) { c.PseudonymKey = broker.PseudonymKeyPath(a.Dir) }
}

// An instance started on an event log it has no index snapshot of rebuilds
// its tracker index and ready queues from the log; until they hold the log
// as it was at its start, /readyz answers 503 (a load balancer sends
// releases and searches elsewhere), while its intake is served. Once the
// index has applied that sequence, /readyz is 200 and a release through it
// finds the queue as the other instance left it.
func TestReadyzWhileReadyQueuesRebuild(t *testing.T) {
	// The server syncs at its interval here: the log is filled fast.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ext := func(c *config.Config) { c.NATSURL = srv.ClientURL() }
	a := startBroker(t, "", ext)
	gs := postOrders(t, a, 30, fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	// A long log for the new instance to rebuild from: the last order's
	// event again and again, headers only (as another writer's events
	// would be): the index applies each, the prescription keeps its place.
	fillLog(t, srv.ClientURL(), gs[len(gs)-1].ShortID, 5000)

	b := startBroker(t, "", ext, sharedKey(a)) // a new data dir: no snapshot
	target := b.App.Tracker.StartTarget()
	if target == 0 {
		t.Fatal("the new instance saw an empty event log")
	}
	// What /readyz says follows the index: 503 naming the catch-up while
	// it is behind the start target, 200 once it has reached it.
	caughtUp := b.App.Tracker.CaughtUp()
	res := b.do("GET", "/readyz", "", nil)
	switch {
	case res.Status == http.StatusServiceUnavailable:
		if !strings.Contains(string(res.Body), "catching up") {
			t.Errorf("readyz 503 for another reason: %s", res.Body)
		}
		if caughtUp {
			t.Errorf("readyz 503 although the index had caught up: %s", res.Body)
		}
		// Intake is served meanwhile.
		tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
		o, _ := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FCG71"})
		if res := b.post(b.token(auth.RolePrescriber, "A83008"), o.Body); res.Status != 200 {
			t.Errorf("order while not ready: %d %s", res.Status, res.Body)
		}
		t.Logf("readyz while rebuilding: %s", strings.TrimSpace(string(res.Body)))
	case res.Status != 200:
		t.Fatalf("readyz %d %s", res.Status, res.Body)
	default:
		t.Logf("the index caught up (%d events) before the first /readyz", target)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.App.Tracker.Index.WaitApplied(ctx, target); err != nil {
		t.Fatal(err)
	}
	if !b.App.Tracker.CaughtUp() {
		t.Error("the index applied the start target, yet is not caught up")
	}
	if res := b.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Fatalf("readyz after the index caught up: %d %s", res.Status, res.Body)
	}
	ids, _ := released(t, b.do("POST", "/FHIR/R4/Task/$release", b.token(auth.RoleDispenser, "FA565"), releaseBody(t, "FA565", "")))
	if len(ids) != 25 || ids[0] != gs[0].ShortID || ids[24] != gs[24].ShortID {
		t.Errorf("release on the rebuilt instance: %v", ids)
	}
}
