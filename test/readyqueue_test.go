package test

import (
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker"
)

// A nominated release made at once after an order's 200 finds the order:
// the broker waits for its ready queues to hold every event the log held
// when the release began (no settle here: that is the point). Several
// dispensers at once, each ordering and releasing in turn, so that the
// projection has work in hand while each release starts.
func TestReleaseImmediatelyAfterOrder(t *testing.T) {
	b := startBroker(t, "")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	presc := b.token(auth.RolePrescriber, "A83008")
	const dispensers, rounds = 6, 15
	type attempt struct {
		ods, id string
		order   int
		release *response
	}
	results := make([][]attempt, dispensers)
	var wg sync.WaitGroup
	for d := range dispensers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ods := fmt.Sprintf("FQ%03d", d)
			tok := b.token(auth.RoleDispenser, ods)
			body := releaseBody(t, ods, "")
			for range rounds {
				g, err := tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: ods})
				if err != nil {
					t.Error(err)
					return
				}
				a := attempt{ods: ods, id: g.ShortID}
				res := b.post(presc, g.Body)
				a.order = res.Status
				if res.Status == 200 {
					a.release = b.do("POST", "/FHIR/R4/Task/$release", tok, body)
				}
				results[d] = append(results[d], a)
			}
		}()
	}
	wg.Wait()
	n := 0
	for _, rs := range results {
		for _, a := range rs {
			if a.order != 200 {
				t.Fatalf("order %s: %d", a.id, a.order)
			}
			ids, _ := released(t, a.release)
			if !slices.Equal(ids, []string{a.id}) {
				t.Errorf("%s released %v right after the 200 of %s, want exactly it", a.ods, ids, a.id)
			}
			n++
		}
	}
	if n != dispensers*rounds {
		t.Errorf("%d orders released, want %d", n, dispensers*rounds)
	}
}

// queueOf is a dispenser's whole ready queue as "ID/issue" (read your writes).
func queueOf(t *testing.T, b *testBroker, ods string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q, err := b.readyQueue(ctx, ods, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(q))
	for i, e := range q {
		out[i] = fmt.Sprintf("%s/%d", e.PrescriptionID, e.Issue)
	}
	return out
}

// The ready queues after a restart are the same with the index snapshot
// (saved when the broker stops), without one (rebuilt from the event log),
// and with a snapshot of the format before the queues (version 2: refused,
// and rebuilt). Releases by ID leave holes in the queue, and a release
// from the restarted broker takes the oldest.
func TestReadyQueuesAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	gs := postOrders(t, b, 12, fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	postOrders(t, b, 3, fhirgen.Options{Sender: "A83008", Performer: "FCG71"})
	disp := b.token(auth.RoleDispenser, "FA565")
	for _, g := range []*fhirgen.Generated{gs[0], gs[4], gs[7]} {
		if res := b.do("POST", "/FHIR/R4/Task/$release", disp, releaseBody(t, "FA565", g.ShortID)); res.Status != 200 {
			t.Fatalf("release by ID: %d %s", res.Status, res.Body)
		}
	}
	want := map[string][]string{"FA565": queueOf(t, b, "FA565"), "FCG71": queueOf(t, b, "FCG71")}
	if len(want["FA565"]) != 9 || len(want["FCG71"]) != 3 || want["FA565"][0] != gs[1].ShortID+"/0" {
		t.Fatalf("queues before the restart: %v", want)
	}
	b.stop()

	check := func(name string) *testBroker {
		t.Helper()
		nb := startBroker(t, dir)
		for ods, w := range want {
			if got := queueOf(t, nb, ods); !slices.Equal(got, w) {
				t.Errorf("%s: queue of %s %v, want %v", name, ods, got, w)
			}
		}
		return nb
	}
	if _, err := os.Stat(broker.SnapshotPath(dir)); err != nil {
		t.Fatalf("no snapshot after a stop: %v", err)
	}
	check("with the snapshot").stop()

	if err := os.Remove(broker.SnapshotPath(dir)); err != nil {
		t.Fatal(err)
	}
	check("without a snapshot").stop()

	// A snapshot of version 2 (entries, no queues) of this very log.
	type v2 struct {
		Version int
		Origin  string
		Applied uint64
		Entries []tracker.Entry
	}
	nb := startBroker(t, dir)
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(v2{Version: 2, Origin: nb.App.Tracker.Index.Origin(), Applied: nb.App.Tracker.Index.Applied()}); err != nil {
		t.Fatal(err)
	}
	nb.stop()
	if err := os.WriteFile(broker.SnapshotPath(dir), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	nb = check("with a version 2 snapshot")
	if nb.App.Tracker.Index.Len() != 15 {
		t.Errorf("index rebuilt with %d prescriptions, want 15", nb.App.Tracker.Index.Len())
	}
	ids, _ := released(t, nb.do("POST", "/FHIR/R4/Task/$release", nb.token(auth.RoleDispenser, "FA565"), releaseBody(t, "FA565", "")))
	if len(ids) != 9 || ids[0] != gs[1].ShortID || ids[8] != gs[11].ShortID {
		t.Errorf("nominated release after the restarts: %v", ids)
	}
}

// A broker that finds the stream EPS_QUEUE of an earlier version removes it
// when it starts: the queues are kept in memory.
func TestLegacyQueueStreamRemoved(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := b.App.Store.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EPS_QUEUE", Subjects: []string{"eps.queue.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "eps.queue.FA565.ABC", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	b.stop()
	nb := startBroker(t, dir)
	if _, err := nb.App.Store.JetStream().Stream(ctx, "EPS_QUEUE"); err == nil {
		t.Error("EPS_QUEUE is still there after a start")
	}
}
