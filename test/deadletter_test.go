package test

import (
	"context"
	"maps"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// A foreign message and a corrupt one written to the event log by a plain
// NATS client: the broker goes on answering, each consumer of the log puts
// both in the dead letter EPS_DEAD with the reason, the metric counts them,
// and epsctl tracker rebuild completes, skipping them. The tracker index
// rebuilt from the start of the log meets them again and writes no second
// copy: the dead letter holds one per (consumer, event).
func TestDeadLetter(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	first := postOrders(t, b, 1, fhirgen.Options{})[0]

	ctx := context.Background()
	js, err := jetstream.New(b.App.NATS.Conn)
	if err != nil {
		t.Fatal(err)
	}
	// Foreign: no Eps-Record header at all, as `nats pub eps.rx.X hello` writes.
	foreign, err := js.Publish(ctx, broker.SubjectRx+"FOREIGN-1", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	// Corrupt: a record header that is not JSON.
	m := &nats.Msg{Subject: broker.SubjectRx + "CORRUPT-1", Data: []byte("{}"), Header: nats.Header{}}
	m.Header.Set(broker.HeaderRecord, `{"id":"CORRUPT-1",`)
	m.Header.Set(broker.HeaderEvent, "prescription-order")
	corrupt, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[uint64]string{foreign.Sequence: "FOREIGN-1", corrupt.Sequence: "CORRUPT-1"}

	// The broker keeps running: a later order is accepted and projected.
	second := postOrders(t, b, 1, fhirgen.Options{})[0]
	b.settle()
	for _, g := range []*fhirgen.Generated{first, second} {
		q, err := b.readyQueue(ctx, g.Performer, 25)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range q {
			found = found || e.PrescriptionID == g.ShortID
		}
		if !found {
			t.Errorf("%s is not in the ready queue of %s: %+v", g.ShortID, g.Performer, q)
		}
	}
	if res := b.do("GET", "/readyz", "", nil); res.Status != 200 {
		t.Errorf("/readyz: %d %s", res.Status, res.Body)
	}

	// Both are in the dead letter, once per consumer of the event log.
	checkDeadLetters(t, js, bad)

	// The metric counts them.
	for _, consumer := range []string{broker.ConsumerQueueProjector, broker.ConsumerTrackerIndex} {
		if n := consumerMessages(t, b, consumer, "dead"); n != 2 {
			t.Errorf("dead letters of %s counted %d, want 2", consumer, n)
		}
	}

	// Met again: without its snapshot the index is rebuilt from the start
	// of the log at the next start, and finds both already in the dead
	// letter: no second copy, counted dead_again, not dead.
	b.stop()
	os.Remove(broker.SnapshotPath(dir))
	b2 := startBroker(t, dir)
	b2.settle()
	js2, err := jetstream.New(b2.App.NATS.Conn)
	if err != nil {
		t.Fatal(err)
	}
	checkDeadLetters(t, js2, bad)
	for consumer, want := range map[string]map[string]int{
		broker.ConsumerTrackerIndex:   {"dead": 0, "dead_again": 2},
		broker.ConsumerQueueProjector: {"dead": 0, "dead_again": 0}, // durable: already past them
	} {
		for outcome, n := range want {
			if got := consumerMessages(t, b2, consumer, outcome); got != n {
				t.Errorf("after the index's rebuild: %s %s counted %d, want %d", consumer, outcome, got, n)
			}
		}
	}

	// The rebuild tool completes, skipping them.
	b2.stop()
	os.Remove(broker.SnapshotPath(dir))
	_, epsctl := binaries(t)
	out, err := exec.Command(epsctl, "tracker", "rebuild", "--data-dir", dir, "--quiet").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "2 prescriptions") || strings.Count(string(out), "skipped event log message") != 2 {
		t.Fatalf("epsctl tracker rebuild: %v %s", err, out)
	}
	// And the broker starts on it, the index holding both orders, the dead
	// letter still one copy of each.
	b3 := startBroker(t, dir)
	b3.settle()
	for _, g := range []*fhirgen.Generated{first, second} {
		if _, ok := b3.App.Tracker.Index.Get(g.ShortID); !ok {
			t.Errorf("%s is not in the rebuilt index", g.ShortID)
		}
	}
	js3, err := jetstream.New(b3.App.NATS.Conn)
	if err != nil {
		t.Fatal(err)
	}
	checkDeadLetters(t, js3, bad)

	// The rebuild (what epsctl tracker rebuild runs) is not a consumer of
	// the runner: it reads the log once with ReadStream, decodes each
	// message with the projections' DecodeEvent, skips what that refuses,
	// and writes nothing, on any stream (no dead letter either).
	before := streamStates(t, js3)
	ix, skipped, err := broker.RebuildTrackerIndex(ctx, js3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if after := streamStates(t, js3); !maps.Equal(after, before) {
		t.Errorf("the rebuild wrote: streams before %v, after %v", before, after)
	}
	events, err := js3.Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != len(bad) {
		t.Errorf("the rebuild skipped %+v, want the messages %v", skipped, bad)
	}
	for _, sk := range skipped {
		raw, err := events.GetMsg(ctx, sk.Seq)
		if err != nil {
			t.Fatal(err)
		}
		_, derr := broker.DecodeEvent(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data)
		if _, ok := bad[sk.Seq]; !ok || derr == nil || sk.Reason != derr.Error() {
			t.Errorf("the rebuild skipped message %d (%q); DecodeEvent: %v", sk.Seq, sk.Reason, derr)
		}
	}
	for _, g := range []*fhirgen.Generated{first, second} {
		if _, ok := ix.Get(g.ShortID); !ok {
			t.Errorf("%s is not in the index RebuildTrackerIndex built", g.ShortID)
		}
	}
}

// streamStates is every stream's message count and last sequence (but
// the leases').
func streamStates(t *testing.T, js jetstream.JetStream) map[string][2]uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[string][2]uint64{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		if info.Config.Name == "KV_"+broker.BucketLeases {
			continue // the running broker renews its scheduler lease
		}
		out[info.Config.Name] = [2]uint64{info.State.Msgs, info.State.LastSeq}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no streams")
	}
	return out
}

// checkDeadLetters checks that the dead letter holds exactly one copy of
// each bad event log message (sequence -> prescription ID of its subject)
// from each consumer of the event log, on its own subject, with the reason.
func checkDeadLetters(t *testing.T, js jetstream.JetStream, bad map[uint64]string) {
	t.Helper()
	for _, consumer := range []string{broker.ConsumerQueueProjector, broker.ConsumerTrackerIndex} {
		got := deadLetters(t, js, consumer)
		if len(got) != len(bad) {
			t.Errorf("%d dead letters from %s, want %d", len(got), consumer, len(bad))
		}
		seen := map[uint64]bool{}
		for _, d := range got {
			seq, _ := strconv.ParseUint(d.Headers().Get(broker.HeaderDeadSeq), 10, 64)
			id, ok := bad[seq]
			if !ok || seen[seq] {
				t.Errorf("%s: dead letter of event %d: not one of the bad messages, or twice", consumer, seq)
				continue
			}
			seen[seq] = true
			if d.Subject() != broker.DeadSubject(consumer, broker.StreamEvents, seq) ||
				d.Subject() != "eps.dead."+consumer+".EPS_EVENTS."+strconv.FormatUint(seq, 10) {
				t.Errorf("%s: dead letter of event %d on %s", consumer, seq, d.Subject())
			}
			if d.Headers().Get(broker.HeaderDeadStream) != broker.StreamEvents || d.Headers().Get(broker.HeaderDeadConsumer) != consumer ||
				d.Headers().Get(broker.HeaderDeadSubject) != broker.SubjectRx+id {
				t.Errorf("%s: dead letter headers %v", consumer, d.Headers())
			}
			if r := d.Headers().Get(broker.HeaderDeadReason); !strings.Contains(r, "undecodable") || !strings.Contains(r, broker.HeaderRecord) {
				t.Errorf("%s: reason %q", consumer, r)
			}
			if id == "FOREIGN-1" && string(d.Data()) != "hello" {
				t.Errorf("%s: the dead letter's data %q is not the message's", consumer, d.Data())
			}
		}
	}
}

// consumerMessages reads eps_consumer_messages_total of a consumer and
// outcome from the broker's /metrics (0 when not yet counted).
func consumerMessages(t *testing.T, b *testBroker, consumer, outcome string) int {
	t.Helper()
	metrics := string(b.do("GET", "/metrics", "", nil).Body)
	re := regexp.MustCompile(`eps_consumer_messages_total\{consumer="` + regexp.QuoteMeta(consumer) + `",outcome="` + outcome + `"\} (\d+)`)
	mm := re.FindStringSubmatch(metrics)
	if mm == nil {
		return 0
	}
	n, _ := strconv.Atoi(mm[1])
	return n
}

// deadLetters reads the dead letters of one consumer.
func deadLetters(t *testing.T, js jetstream.JetStream, consumer string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, broker.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	n := st.CachedInfo().State.Msgs
	c, err := js.OrderedConsumer(ctx, broker.StreamDead, jetstream.OrderedConsumerConfig{FilterSubjects: []string{broker.SubjectDead + consumer + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	batch, err := c.FetchNoWait(int(n) + 1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		out = append(out, m)
	}
	return out
}

// The inspect NATS user may read the dead letter stream's info (its
// subjects name consumers only), but not its messages, which copy events
// and so hold patient data.
func TestDeadLetterInspect(t *testing.T) {
	_, url, seeds := natsSecurityBroker(t)
	c, err := connectNATS(t, url, seeds["inspect"])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, broker.StreamDead)
	if err != nil {
		t.Fatalf("stream info %s: %v", broker.StreamDead, err)
	}
	if cfg := st.CachedInfo().Config; len(cfg.Subjects) != 1 || cfg.Subjects[0] != broker.SubjectDead+">" || cfg.MaxBytes <= 0 {
		t.Errorf("%s config: subjects %v, max bytes %d", broker.StreamDead, cfg.Subjects, cfg.MaxBytes)
	}
	c.refusedRequest(t, "$JS.API.STREAM.MSG.GET.EPS_DEAD", func(ctx context.Context) error { _, err := st.GetMsg(ctx, 1); return err })
	if !c.refusedSubscribe(t, broker.SubjectDead+">") {
		t.Errorf("subscribe %s>: not refused", broker.SubjectDead)
	}
}

// The nomination reports are a projection of the runner too: a revision of
// the registry bucket they cannot decode (written by a plain NATS client)
// goes to the dead letter with the reason, counted, and the reports go on
// with the next change.
func TestDeadLetterNominationReports(t *testing.T) {
	b := startBroker(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(b.App.NATS.Conn)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, broker.BucketNominations)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Put(ctx, "CORRUPT1", []byte("{not json"))
	if err != nil {
		t.Fatal(err)
	}
	nhs := fhirgen.NHSNumber()
	res := b.do("PUT", "/api/v1/nominations/"+nhs+"/P1", b.token(auth.RoleDispenser, "FA565"), []byte(`{"ods":"FA565"}`), "Content-Type", "application/json")
	if res.Status != 200 {
		t.Fatalf("nominate: %d %s", res.Status, res.Body)
	}
	if err := b.App.NominationReports.Wait(ctx); err != nil {
		t.Fatalf("nomination reports: %v (%+v)", err, b.App.NominationReports.State())
	}
	found := false
	for _, c := range b.App.NominationReports.Changes() {
		found = found || c.NHSNumber == nhs
	}
	if !found {
		t.Errorf("the change after the bad revision is not in the reports: %+v", b.App.NominationReports.Changes())
	}
	dead := deadLetters(t, js, broker.ConsumerNominationReports)
	if len(dead) != 1 {
		t.Fatalf("%d dead letters from %s, want 1", len(dead), broker.ConsumerNominationReports)
	}
	d := dead[0]
	stream := "KV_" + broker.BucketNominations
	if d.Subject() != broker.DeadSubject(broker.ConsumerNominationReports, stream, rev) || string(d.Data()) != "{not json" ||
		d.Headers().Get(broker.HeaderDeadStream) != stream || d.Headers().Get(broker.HeaderDeadReason) == "" {
		t.Errorf("dead letter on %s, headers %v, data %q", d.Subject(), d.Headers(), d.Data())
	}
	if n := consumerMessages(t, b, broker.ConsumerNominationReports, "dead"); n != 1 {
		t.Errorf("dead letters of %s counted %d, want 1", broker.ConsumerNominationReports, n)
	}
}
