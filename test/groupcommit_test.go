package test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The event log's group commit end to end (issue 13).

// scrapeMetric reads one sample of the Prometheus text at url+"/metrics"
// (series is the name with its labels as printed, e.g.
// eps_commits_total{outcome="batch"}); 0 when it is not there.
func scrapeMetric(t *testing.T, url, series string) float64 {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// Past --commit-max-pending waiting writes, an order is refused at once:
// 503 with Retry-After and an OperationOutcome that says so, and nothing of
// it is stored; every order answered 200 is stored once. The bound is 1
// and 64 clients send at once, so orders arrive while one waits.
func TestOverloadAnswers503WithRetryAfter(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.CommitMaxPending = 1 })
	tok := b.token(auth.RolePrescriber, "A83008")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		g   *fhirgen.Generated
		res *response
	}
	var refused, accepted []answer
	for burst := 0; burst < 50 && len(refused) == 0; burst++ {
		answers := make([]answer, 64)
		var wg sync.WaitGroup
		for i := range answers {
			g, _ := tmpl.Order(fhirgen.Options{})
			answers[i].g = g
			wg.Go(func() { answers[i].res = b.post(tok, g.Body) })
		}
		wg.Wait()
		for _, a := range answers {
			switch a.res.Status {
			case http.StatusOK:
				accepted = append(accepted, a)
			case http.StatusServiceUnavailable:
				refused = append(refused, a)
			default:
				t.Fatalf("order %s: %d %s", a.g.ShortID, a.res.Status, a.res.Body)
			}
		}
	}
	if len(refused) == 0 {
		t.Fatalf("no order refused in 50 bursts of 64 with --commit-max-pending 1 (%d accepted)", len(accepted))
	}
	for _, a := range refused {
		if ra := a.res.Header.Get("Retry-After"); ra == "" {
			t.Errorf("503 without Retry-After")
		}
		oo := a.res.outcome(t)
		if oo.Issue[0].Code != "transient" || !oo.hasCode("SERVICE_UNAVAILABLE") {
			t.Errorf("503 issue %s %v, want transient SERVICE_UNAVAILABLE", oo.Issue[0].Code, oo.codes())
		}
		if d := oo.Issue[0].Diagnostics; !strings.Contains(d, "more writes than its store can commit") || !strings.Contains(d, "nothing of this request was stored") {
			t.Errorf("503 diagnostics %q, want the overload's", oo.Issue[0].Diagnostics)
		}
		if n := b.events(a.g.ShortID); n != 0 {
			t.Errorf("refused order %s: %d events stored, want none", a.g.ShortID, n)
		}
	}
	for _, a := range accepted {
		if n := b.events(a.g.ShortID); n != 1 {
			t.Errorf("accepted order %s: %d events stored, want 1", a.g.ShortID, n)
		}
	}
	if got := metricValue(t, b, "eps_commit_refused_total"); got != float64(len(refused)) {
		t.Errorf("eps_commit_refused_total %v, want %d", got, len(refused))
	}
	t.Logf("%d orders accepted, %d refused 503", len(accepted), len(refused))
}

// SIGKILL while atomic batches are in flight: the broker process is killed
// once it has committed batches of several orders (its metrics say so) and
// while 48 clients still send. After a restart on the same data dir every
// order answered 200 is in the event log exactly once; the log holds no
// order that was refused, only acknowledged ones and ones whose client got
// no answer (killed in flight), each once; every stored message decodes.
func TestAcknowledgedOrdersSurviveSIGKILLDuringBatches(t *testing.T) {
	dir, p, tok, tmpl := prescriberProcess(t)

	const workers, killAfter, giveUp = 48, 200, 20000
	var (
		mu       sync.Mutex
		acked    = map[string]bool{} // prescription ID -> answered 200
		refused  = map[string]int{}  // answered, not 200: status
		noAnswer = map[string]bool{} // sent, no answer (the kill)
		wg       sync.WaitGroup
		batches  float64
	)
	killed := make(chan struct{})
	var killOnce sync.Once
	kill := func() {
		killOnce.Do(func() {
			p.cmd.Process.Signal(syscall.SIGKILL)
			close(killed)
		})
	}
	// Each 200 signals the test, which reads the broker's metrics then (no
	// polling by time).
	ackSignal := make(chan struct{}, 1)
	orderWorkers(t, &wg, workers, killed, tmpl, func(g *fhirgen.Generated) bool {
		status, _, err := post(t, p.URL, tok, g.Body)
		mu.Lock()
		switch {
		case err != nil:
			noAnswer[g.ShortID] = true
		case status == http.StatusOK:
			acked[g.ShortID] = true
		default:
			refused[g.ShortID] = status
		}
		mu.Unlock()
		if err != nil {
			return false // the broker is gone
		}
		if status == http.StatusOK {
			wake(ackSignal)
		}
		return true
	})
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	// Kill once enough orders are acknowledged and the broker has committed
	// batches of more than one (read from its metrics just before).
	for {
		select {
		case <-ackSignal:
		case <-workersDone:
			t.Fatal("every client stopped before the kill: the broker went away")
		}
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= killAfter {
			if batches = scrapeMetric(t, p.URL, `eps_commits_total{outcome="batch"}`); batches > 0 {
				kill()
				break
			}
		}
		if n >= giveUp {
			kill()
			<-workersDone
			t.Fatalf("%d orders acknowledged and no batch of several committed", n)
		}
	}
	wg.Wait()
	<-p.done
	t.Logf("killed after %d batches committed: %d acknowledged, %d refused, %d without an answer", int(batches), len(acked), len(refused), len(noAnswer))

	// Restart on the same data dir and read the whole event log.
	b := startBroker(t, dir)
	ctx := context.Background()
	s, err := b.App.Store.JetStream().Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]int{}
	// The server keeps a batch's headers on its stored messages: every one
	// carries Nats-Batch-Id and Nats-Batch-Sequence, the last also
	// Nats-Batch-Commit. A batch is stored whole or not at all: each batch
	// ID's messages must be 1..k of k, at consecutive stream sequences,
	// with the commit header on k only.
	type batchMsg struct {
		streamSeq, batchSeq uint64
		commit              bool
	}
	batchOf := map[string][]batchMsg{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ev, err := broker.DecodeEvent(m.Sequence, m.Time, m.Subject, m.Header, m.Data)
		if err != nil {
			t.Errorf("event %d does not decode: %v", seq, err)
			continue
		}
		if bid := m.Header.Get("Nats-Batch-Id"); bid != "" {
			bseq, err := strconv.ParseUint(m.Header.Get("Nats-Batch-Sequence"), 10, 64)
			if err != nil {
				t.Errorf("event %d of batch %s: batch sequence %q", seq, bid, m.Header.Get("Nats-Batch-Sequence"))
			}
			batchOf[bid] = append(batchOf[bid], batchMsg{m.Sequence, bseq, m.Header.Get("Nats-Batch-Commit") != ""})
		}
		id := ev.Record.ID
		if m.Subject != broker.SubjectRx+id {
			t.Errorf("event %d about %s is on %s", seq, id, m.Subject)
		}
		stored[id]++
	}
	batched := 0
	for bid, msgs := range batchOf {
		batched += len(msgs)
		if len(msgs) < 2 {
			t.Errorf("batch %s: %d message stored, want the whole batch (2 or more)", bid, len(msgs))
		}
		for i, bm := range msgs {
			last := i == len(msgs)-1
			if bm.batchSeq != uint64(i+1) || bm.streamSeq != msgs[0].streamSeq+uint64(i) || bm.commit != last {
				t.Errorf("batch %s: message %d of %d is batch sequence %d at stream sequence %d (first %d), commit %v: a batch stored in part",
					bid, i+1, len(msgs), bm.batchSeq, bm.streamSeq, msgs[0].streamSeq, bm.commit)
			}
		}
	}
	if len(batchOf) == 0 {
		t.Error("no batch stored, want the batches the metrics counted")
	}
	t.Logf("%d batches stored whole, %d events in them", len(batchOf), batched)
	for id := range acked {
		if stored[id] != 1 {
			t.Errorf("acknowledged order %s stored %d times after the kill, want once", id, stored[id])
		}
	}
	inFlight := 0
	for id, n := range stored {
		switch {
		case n != 1:
			t.Errorf("order %s stored %d times", id, n)
		case acked[id]:
		case noAnswer[id]:
			inFlight++ // committed, its answer lost in the kill
		case refused[id] != 0:
			t.Errorf("order %s answered %d is stored", id, refused[id])
		default:
			t.Errorf("order %s stored but never sent", id)
		}
	}
	t.Logf("after restart: %d events, %d acknowledged all present, %d stored whose answer the kill lost", len(stored), len(acked), inFlight)
}
