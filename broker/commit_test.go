package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The group commit (commit.go) on a real embedded JetStream with sync
// always. Writes are made to gather deterministically: the commits in
// flight are held (the committer's test hook) until the writes under test
// are all waiting, then let go; the next commit takes them together.

// commitStore opens the store on a fresh embedded server with the given
// bound of waiting writes (0: the default).
func commitStore(t testing.TB, maxPending int) (*Store, *nats.Conn, *Metrics) {
	t.Helper()
	st, n, m := commitStoreWith(t, StoreConfig{CommitMaxPending: maxPending})
	return st, n.Conn, m
}

// commitGate holds every commit slot of the store (CommitsInFlight) with a
// write of its own (GC-FIRST-i) until release, and records the size of
// every commit.
type commitGate struct {
	mu        sync.Mutex
	sizes     []int
	held      int
	entered   chan struct{}
	release   chan struct{}
	firstErrs chan error // the held writes' answers
}

func holdCommits(st *Store) *commitGate {
	held := st.commit.maxInflight
	g := &commitGate{held: held, entered: make(chan struct{}), release: make(chan struct{}), firstErrs: make(chan error, held)}
	st.commit.beforeCommit = func(n int) {
		g.mu.Lock()
		g.sizes = append(g.sizes, n)
		hold := len(g.sizes) <= g.held
		g.mu.Unlock()
		if hold {
			g.entered <- struct{}{}
			<-g.release
		}
	}
	for i := range held {
		id := fmt.Sprint("GC-FIRST-", i)
		go func() {
			_, err := st.Create(context.Background(), id, newRx(id, "first"))
			g.firstErrs <- err
		}()
		<-g.entered
	}
	return g
}

// commitSizes are the sizes of the commits after the held ones.
func (g *commitGate) commitSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes[g.held:])
}

// waitPending waits until n writes wait to be committed.
func waitPending(t *testing.T, st *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for st.commit.depth() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes waiting, want %d", st.commit.depth(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// newRx decides a new prescription id holding one history entry msg, and
// refuses (errExists) when something is stored already.
var errExists = errors.New("prescription exists")

func newRx(id, msg string) service.Decide {
	return func(cur *service.Event) (*service.Write, error) {
		if cur != nil {
			return nil, errExists
		}
		rec := &rx.Prescription{ID: id, History: []rx.Event{{Type: "test", MessageID: msg}}}
		return &service.Write{Event: "test", MessageID: msg, Record: rec, Body: []byte(msg)}, nil
	}
}

// addEntry decides one more history entry msg on a stored prescription.
func addEntry(msg string) service.Decide {
	return func(cur *service.Event) (*service.Write, error) {
		next := *cur.Record
		next.History = append(slices.Clone(next.History), rx.Event{Type: "test", MessageID: msg})
		return &service.Write{Event: "test", MessageID: msg, Record: &next, Body: []byte(msg)}, nil
	}
}

func entries(rec *rx.Prescription) []string {
	var out []string
	for _, h := range rec.History {
		out = append(out, h.MessageID)
	}
	return out
}

// subjectCounts is how many messages each prescription's subject holds.
func subjectCounts(t *testing.T, st *Store) map[string]uint64 {
	t.Helper()
	info, err := st.events.Info(context.Background(), jetstream.WithSubjectFilter(SubjectRx+">"))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects
}

func commits(m *Metrics, outcome string) int {
	return int(testutil.ToFloat64(m.Commits.WithLabelValues(outcome)))
}

// Many concurrent orders of distinct prescriptions are committed in one
// atomic batch: each stored once, each answered with its own sequence,
// which holds its own record.
func TestGroupCommitBatchesConcurrentCreates(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	g := holdCommits(st)

	const n = 40
	evs := make([]*service.Event, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("GC-%03d", i)
			evs[i], errs[i] = st.Create(ctx, id, newRx(id, "order-"+id))
		})
	}
	waitPending(t, st, n)
	close(g.release)
	wg.Wait()
	for range g.held {
		if err := <-g.firstErrs; err != nil {
			t.Fatal(err)
		}
	}

	seen := map[uint64]bool{}
	var highest uint64
	for i := range n {
		id := fmt.Sprintf("GC-%03d", i)
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		if seen[evs[i].Seq] {
			t.Fatalf("%s answered sequence %d twice", id, evs[i].Seq)
		}
		seen[evs[i].Seq] = true
		highest = max(highest, evs[i].Seq)
		ev, err := st.Event(ctx, evs[i].Seq)
		if err != nil || ev.Record.ID != id || !slices.Equal(entries(ev.Record), []string{"order-" + id}) {
			t.Fatalf("%s: event %d holds %+v (%v), want its own order", id, evs[i].Seq, ev, err)
		}
		cur, err := st.Current(ctx, id)
		if err != nil || cur.Seq != evs[i].Seq {
			t.Fatalf("%s: current %+v (%v), want event %d", id, cur, err, evs[i].Seq)
		}
	}
	for subject, count := range subjectCounts(t, st) {
		if count != 1 {
			t.Errorf("%s holds %d messages, want 1", subject, count)
		}
	}
	if got := st.LastWritten(); got != highest {
		t.Errorf("LastWritten %d, want the highest stored sequence %d", got, highest)
	}
	if sizes := g.commitSizes(); !slices.Equal(sizes, []int{n}) {
		t.Errorf("after the held ones, commits of %v writes, want all %d in one batch", sizes, n)
	}
	if commits(m, "batch") != 1 || commits(m, "single") != g.held || commits(m, "fallback") != 0 {
		t.Errorf("commits: batch %d single %d fallback %d, want 1 %d 0", commits(m, "batch"), commits(m, "single"), commits(m, "fallback"), g.held)
	}
	if got := testutil.ToFloat64(m.CommitQueue); got != 0 {
		t.Errorf("queue depth %v after the commits, want 0", got)
	}
}

// A write alone is published on its own: no batch.
func TestGroupCommitSingleWriteGoesAlone(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ev, err := st.Create(context.Background(), "GC-ALONE", newRx("GC-ALONE", "alone"))
	if err != nil {
		t.Fatal(err)
	}
	if commits(m, "single") != 1 || commits(m, "batch") != 0 {
		t.Errorf("commits: single %d batch %d, want 1 0", commits(m, "single"), commits(m, "batch"))
	}
	if st.LastWritten() != ev.Seq {
		t.Errorf("LastWritten %d, want %d", st.LastWritten(), ev.Seq)
	}
}

// Two orders with one new prescription ID in one batch window: exactly one
// is stored; the other, decided again from the stored one, gets its own
// refusal; every other order of the batch is stored.
func TestGroupCommitDuplicateIDInBatch(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	g := holdCommits(st)

	const others = 10
	var wg sync.WaitGroup
	errs := make([]error, others)
	for i := range others {
		wg.Go(func() {
			id := fmt.Sprintf("GC-OTHER-%d", i)
			_, errs[i] = st.Create(ctx, id, newRx(id, "order-"+id))
		})
	}
	dupErrs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			_, dupErrs[i] = st.Create(ctx, "GC-DUP", newRx("GC-DUP", fmt.Sprint("dup-", i)))
		})
	}
	waitPending(t, st, others+2)
	close(g.release)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("order %d: %v", i, err)
		}
	}
	stored := -1
	for i, err := range dupErrs {
		switch {
		case err == nil && stored < 0:
			stored = i
		case err == nil:
			t.Fatal("both orders of GC-DUP were stored")
		case !errors.Is(err, errExists):
			t.Fatalf("order %d of GC-DUP: %v, want its decision from the stored one", i, err)
		}
	}
	if stored < 0 {
		t.Fatal("neither order of GC-DUP was stored")
	}
	cur, err := st.Current(ctx, "GC-DUP")
	if err != nil || !slices.Equal(entries(cur.Record), []string{fmt.Sprint("dup-", stored)}) {
		t.Fatalf("GC-DUP holds %+v (%v), want dup-%d", cur, err, stored)
	}
	counts := subjectCounts(t, st)
	if len(counts) != others+1+g.held {
		t.Errorf("%d prescriptions stored, want %d", len(counts), others+1+g.held)
	}
	for subject, count := range counts {
		if count != 1 {
			t.Errorf("%s holds %d messages, want 1", subject, count)
		}
	}
	// The second order of GC-DUP waited for the next commit and was
	// answered as a conflict without being sent: no batch was refused.
	if sizes := g.commitSizes(); !slices.Equal(sizes, []int{others + 1}) {
		t.Errorf("after the held ones, commits of %v writes, want [%d]", sizes, others+1)
	}
	if commits(m, "fallback") != 0 {
		t.Errorf("%d batches fell back, want none", commits(m, "fallback"))
	}
}

// Two updates of one prescription in one batch window are both applied,
// each once: they never share a batch, and the one that lost is decided
// again from the other's result.
func TestGroupCommitTwoUpdatesOfOnePrescription(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	if _, err := st.Create(ctx, "GC-TWICE", newRx("GC-TWICE", "order")); err != nil {
		t.Fatal(err)
	}
	g := holdCommits(st)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { _, errs[i] = st.Update(ctx, "GC-TWICE", addEntry(fmt.Sprint("update-", i))) })
	}
	wg.Go(func() { _, _ = st.Create(ctx, "GC-BESIDE", newRx("GC-BESIDE", "beside")) })
	waitPending(t, st, 3)
	close(g.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	cur, err := st.Current(ctx, "GC-TWICE")
	if err != nil {
		t.Fatal(err)
	}
	got := entries(cur.Record)
	if len(got) != 3 || got[0] != "order" || !slices.Equal(slices.Sorted(slices.Values(got[1:])), []string{"update-0", "update-1"}) {
		t.Fatalf("history %v, want the order then each update once", got)
	}
	if counts := subjectCounts(t, st); counts[SubjectRx+"GC-TWICE"] != 3 {
		t.Errorf("GC-TWICE holds %d messages, want 3", counts[SubjectRx+"GC-TWICE"])
	}
	if sizes := g.commitSizes(); !slices.Equal(sizes, []int{2, 1}) {
		t.Errorf("after the held ones, commits of %v writes, want one update with GC-BESIDE, then the other update", sizes)
	}
	if commits(m, "fallback") != 0 {
		t.Errorf("%d batches fell back, want none", commits(m, "fallback"))
	}
}

// A write whose expected sequence went stale unknown to the committer (a
// message published on its subject by another client) makes JetStream
// refuse the whole batch; then it is committed again in halves and a
// refused part of bisectMin writes or fewer write by write: the
// stale one gets ErrConflict, the others are stored, and an update through
// the compare-and-set loop decides again and is stored.
func TestGroupCommitConflictInBatchFallsBack(t *testing.T) {
	st, nc, m := commitStore(t, 0)
	ctx := context.Background()
	const n = 8
	seqs := make([]uint64, n)
	for i := range n {
		id := fmt.Sprintf("GC-CAS-%d", i)
		ev, err := st.Create(ctx, id, newRx(id, "order"))
		if err != nil {
			t.Fatal(err)
		}
		seqs[i] = ev.Seq
	}
	g := holdCommits(st)

	// Writes 0..n-2 expect their prescription's last sequence, appended
	// directly (the store's own write path under the CAS loop); the last
	// prescription is updated through the CAS loop.
	var wg sync.WaitGroup
	got := make([]uint64, n-1)
	errs := make([]error, n)
	for i := range n - 1 {
		wg.Go(func() {
			id := fmt.Sprintf("GC-CAS-%d", i)
			rec := &rx.Prescription{ID: id, History: []rx.Event{{Type: "test", MessageID: "order"}, {Type: "test", MessageID: "next"}}}
			got[i], errs[i] = st.appendEvent(ctx, "test", "next", rec, []byte("next"), seqs[i])
		})
	}
	last := fmt.Sprintf("GC-CAS-%d", n-1)
	wg.Go(func() { _, errs[n-1] = st.Update(ctx, last, addEntry("next")) })
	waitPending(t, st, n)
	// Another client writes on prescriptions 3 and n-1 after their writers
	// decided.
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"GC-CAS-3", last} {
		if _, err := js.Publish(ctx, SubjectRx+id, []byte("foreign")); err != nil {
			t.Fatal(err)
		}
	}
	close(g.release)
	wg.Wait()

	for i := range n - 1 {
		id := fmt.Sprintf("GC-CAS-%d", i)
		if i == 3 {
			if !errors.Is(errs[i], service.ErrConflict) {
				t.Errorf("%s: %v, want ErrConflict", id, errs[i])
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		ev, err := st.Event(ctx, got[i])
		if err != nil || ev.Record.ID != id || !slices.Equal(entries(ev.Record), []string{"order", "next"}) {
			t.Errorf("%s: event %d holds %+v (%v), want its update", id, got[i], ev, err)
		}
	}
	if errs[n-1] != nil {
		t.Fatalf("%s: %v", last, errs[n-1])
	}
	cur, err := st.Current(ctx, last)
	if err != nil || !slices.Equal(entries(cur.Record), []string{"order", "next"}) {
		t.Errorf("%s holds %+v (%v), want the update decided again after the foreign message", last, cur, err)
	}
	counts := subjectCounts(t, st)
	want := map[string]uint64{"GC-CAS-3": 2, last: 3} // order, foreign (and the update)
	for i := range n {
		id := fmt.Sprintf("GC-CAS-%d", i)
		w, ok := want[id]
		if !ok {
			w = 2
		}
		if counts[SubjectRx+id] != w {
			t.Errorf("%s holds %d messages, want %d", id, counts[SubjectRx+id], w)
		}
	}
	// The batch of 8 is refused and committed again in halves of 4; a
	// half holding a stale write is refused, and a part that small falls
	// back to single publishes (one or two halves, depending on where the
	// two stale writes were queued).
	if f := commits(m, "fallback"); commits(m, "split") != 1 || f < 1 || f > 2 || commits(m, "batch")+f != 2 {
		t.Errorf("split %d, batch %d, fell back %d, want 1 split into 2 halves, 1 or 2 of them falling back", commits(m, "split"), commits(m, "batch"), f)
	}
}

// Past --commit-max-pending waiting writes, a write is refused at once
// with ErrOverloaded and nothing of it is written; the waiting ones are
// stored.
func TestGroupCommitBackpressure(t *testing.T) {
	const bound = 4
	st, _, m := commitStore(t, bound)
	ctx := context.Background()
	g := holdCommits(st)

	var wg sync.WaitGroup
	errs := make([]error, bound)
	for i := range bound {
		wg.Go(func() {
			id := fmt.Sprintf("GC-WAIT-%d", i)
			_, errs[i] = st.Create(ctx, id, newRx(id, "order"))
		})
	}
	waitPending(t, st, bound)
	_, err := st.Create(ctx, "GC-REFUSED", newRx("GC-REFUSED", "order"))
	if !errors.Is(err, service.ErrOverloaded) || errors.Is(err, service.ErrConflict) {
		t.Fatalf("write past the bound: %v, want ErrOverloaded", err)
	}
	if got := testutil.ToFloat64(m.CommitRefused); got != 1 {
		t.Errorf("refused %v writes, want 1", got)
	}
	if got := testutil.ToFloat64(m.CommitQueue); got != bound {
		t.Errorf("queue depth %v, want %d", got, bound)
	}
	close(g.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("waiting write %d: %v", i, err)
		}
	}
	if _, err := st.Current(ctx, "GC-REFUSED"); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("the refused prescription: %v, want nothing stored", err)
	}
	if counts := subjectCounts(t, st); len(counts) != bound+g.held {
		t.Errorf("%d prescriptions stored, want %d", len(counts), bound+g.held)
	}
}

// A write handed in is committed even when its caller's context ends while
// it waits; a write whose context ended before is not written.
func TestGroupCommitContext(t *testing.T) {
	st, _, _ := commitStore(t, 0)
	ctx := context.Background()
	rec := func(id string) *rx.Prescription {
		return &rx.Prescription{ID: id, History: []rx.Event{{Type: "test", MessageID: "order"}}}
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := st.appendEvent(gone, "test", "order", rec("GC-GONE"), []byte("order"), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("write after its context ended: %v, want context.Canceled", err)
	}
	if _, err := st.Current(ctx, "GC-GONE"); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("GC-GONE: %v, want nothing stored", err)
	}

	g := holdCommits(st)
	leaving, leave := context.WithCancel(ctx)
	type result struct {
		seq uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		seq, err := st.appendEvent(leaving, "test", "order", rec("GC-LEFT"), []byte("order"), 0)
		done <- result{seq, err}
	}()
	waitPending(t, st, 1)
	leave()
	close(g.release)
	r := <-done
	if r.err != nil {
		t.Fatalf("write whose caller left after handing it in: %v", r.err)
	}
	if cur, err := st.Current(ctx, "GC-LEFT"); err != nil || cur.Seq != r.seq {
		t.Fatalf("GC-LEFT: %+v (%v), want stored at %d", cur, err, r.seq)
	}
}

// An event log made before the group commit, without atomic batches, is
// updated to take them when the store opens.
func TestEventStreamUpdatedForAtomicBatches(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := ConnectNATS(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	js, err := jetstream.New(n.Conn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: StreamEvents, Subjects: []string{SubjectRx + ">"},
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, AllowDirect: true, DenyDelete: true, DenyPurge: true}); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	st, err := OpenStore(ctx, n.Conn, StoreConfig{Replicas: 1, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20,
		Pseudonyms: testPseudonyms(t, 7)}, m)
	if err != nil {
		t.Fatal(err)
	}
	st.commit.minBatch = 2 // the tests' batches are small
	info, err := st.events.Info(ctx)
	if err != nil || !info.Config.AllowAtomicPublish {
		t.Fatalf("event log config %+v (%v), want atomic batches allowed", info, err)
	}
	g := holdCommits(st)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			id := fmt.Sprint("GC-UPD-", i)
			if _, err := st.Create(ctx, id, newRx(id, "order")); err != nil {
				t.Error(err)
			}
		})
	}
	waitPending(t, st, 3)
	close(g.release)
	wg.Wait()
	if commits(m, "batch") != 1 {
		t.Errorf("%d batches committed, want 1", commits(m, "batch"))
	}
}

// BenchmarkGroupCommit: 16 or 64 writers storing new prescriptions with a
// 15 KB body (the size of the 4-item NHS order) under sync always.
// "before" publishes every write on its own, as the broker did before the
// group commit (each writer's publish in flight at once);
// "batch-inflight1" is the group commit with one commit in flight at a
// time, "batch-inflight2" with two; "nobatch" is the committer on a stream
// without atomic batches (every write on its own, the writes waiting
// published concurrently, two commits in flight). ns/op is per write: orders/s = 1e9 /
// ns/op. Compare with benchstat -col /commit.
func BenchmarkGroupCommit(b *testing.B) {
	body := make([]byte, 15*1024)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for _, writers := range []int{16, 64} {
		for _, bc := range []struct {
			name                string
			maxBatch, maxFlight int
		}{
			{"before", 1, 1 << 20},
			{"batch-inflight1", MaxCommitBatch, 1},
			{"batch-inflight2", MaxCommitBatch, 2},
			{"nobatch", MaxCommitBatch, CommitsInFlight},
		} {
			b.Run(fmt.Sprintf("writers=%d/commit=%s", writers, bc.name), func(b *testing.B) {
				st, _, m := commitStore(b, 0)
				st.commit.maxBatch, st.commit.maxInflight = bc.maxBatch, bc.maxFlight
				st.commit.batching = bc.name != "nobatch"
				var next atomic.Int64
				ctx := context.Background()
				b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						id := fmt.Sprint("BENCH-", next.Add(1))
						rec := &rx.Prescription{ID: id}
						if _, err := st.appendEvent(ctx, "test", id, rec, body, 0); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				if n := testutil.ToFloat64(m.Commits.WithLabelValues("batch")); n > 0 {
					b.ReportMetric(float64(b.N)/(n+testutil.ToFloat64(m.Commits.WithLabelValues("single"))), "writes/commit")
				}
			})
		}
	}
}

// commitStoreWith opens the store with sc (Replicas, IdempotencyTTL,
// MaxMessage and Pseudonyms filled in) on a fresh embedded server, which it
// returns too.
func commitStoreWith(t testing.TB, sc StoreConfig) (*Store, *NATS, *Metrics) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := ConnectNATS(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	sc.Replicas, sc.IdempotencyTTL, sc.MaxMessage, sc.Pseudonyms = 1, time.Hour, 1<<20, testPseudonyms(t, 7)
	m := NewMetrics()
	st, err := OpenStore(ctx, n.Conn, sc, m)
	if err != nil {
		t.Fatal(err)
	}
	st.commit.minBatch = 2 // the tests' batches are small
	return st, n, m
}

// queueCreates starts n concurrent Creates of prefix-i and returns their
// answers once done.
func queueCreates(st *Store, prefix string, n int) func() []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("%s-%03d", prefix, i)
			_, errs[i] = st.Create(context.Background(), id, newRx(id, "order-"+id))
		})
	}
	return func() []error { wg.Wait(); return errs }
}

// The committer batches only on an event log whose stored configuration
// kept AllowAtomicPublish (a server older than 2.12 drops it).
func TestCommitBatchingFor(t *testing.T) {
	if batchingFor(jetstream.StreamConfig{Name: StreamEvents}) {
		t.Error("a stream without AllowAtomicPublish: batching, want every write on its own")
	}
	if !batchingFor(jetstream.StreamConfig{Name: StreamEvents, AllowAtomicPublish: true}) {
		t.Error("a stream with AllowAtomicPublish: no batching, want batches")
	}
}

// A committer started for a stream without atomic batches says so in a
// warning naming the server version, and publishes concurrent writes each
// on its own, all at once (not two at a time): no batch.
func TestGroupCommitWithoutAtomicBatches(t *testing.T) {
	st, _, m := commitStore(t, 0)
	core, logs := observer.New(zap.WarnLevel)
	st.commit = newCommitter(st, zap.New(core), 0, batchingFor(jetstream.StreamConfig{Name: StreamEvents}))
	if logs.FilterMessageSnippet("nats-server 2.12").Len() != 1 {
		t.Errorf("warnings %v, want one naming nats-server 2.12", logs.All())
	}
	if got := testutil.ToFloat64(m.CommitBatching); got != 0 {
		t.Errorf("eps_commit_batching %v, want 0", got)
	}
	g := holdCommits(st)
	const n = 12
	done := queueCreates(st, "GC-NOBATCH", n)
	waitPending(t, st, n)
	close(g.release)
	for i, err := range done() {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	if counts := subjectCounts(t, st); len(counts) != n+g.held {
		t.Errorf("%d prescriptions stored, want %d", len(counts), n+g.held)
	}
	if sizes := g.commitSizes(); !slices.Equal(sizes, []int{n}) {
		t.Errorf("after the held ones, commits of %v writes, want all %d taken at once", sizes, n)
	}
	if commits(m, "batch") != 0 || commits(m, "single") != n+g.held {
		t.Errorf("commits: batch %d single %d, want 0 and %d", commits(m, "batch"), commits(m, "single"), n+g.held)
	}
}

// A batch holding a create of a prescription that exists, unknown to the
// committer (a resent order after a restart, or one stored by another
// instance), is refused whole; it is committed again in halves, so only
// the few writes around the stale one are published on their own.
func TestGroupCommitStaleCreateBisected(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	if _, err := st.Create(ctx, "GC-OLD", newRx("GC-OLD", "first")); err != nil {
		t.Fatal(err)
	}
	// Forget it: the committer of a restarted broker or another instance.
	st.commit.mu.Lock()
	clear(st.commit.recent)
	clear(st.commit.older)
	st.commit.mu.Unlock()
	g := holdCommits(st)

	const n = 63
	done := queueCreates(st, "GC-NEW", n)
	oldErr := make(chan error, 1)
	go func() {
		rec := &rx.Prescription{ID: "GC-OLD", History: []rx.Event{{Type: "test", MessageID: "resent"}}}
		_, err := st.appendEvent(ctx, "test", "resent", rec, []byte("resent"), 0)
		oldErr <- err
	}()
	waitPending(t, st, n+1)
	close(g.release)
	for i, err := range done() {
		if err != nil {
			t.Errorf("order %d: %v", i, err)
		}
	}
	if err := <-oldErr; !errors.Is(err, service.ErrConflict) {
		t.Errorf("the resent create: %v, want ErrConflict", err)
	}
	for subject, count := range subjectCounts(t, st) {
		if count != 1 {
			t.Errorf("%s holds %d messages, want 1", subject, count)
		}
	}
	// 64 refused -> 32 stored + 32 refused -> 16 + 16 -> 8 + 8 -> 4 stored
	// and 4 published one by one.
	if commits(m, "split") != 4 || commits(m, "batch") != 4 || commits(m, "fallback") != 1 {
		t.Errorf("commits: split %d batch %d fallback %d, want 4 4 1", commits(m, "split"), commits(m, "batch"), commits(m, "fallback"))
	}
}

// A server whose max_batch_size is below the committer's batch size refuses
// the larger batches once: the committer commits them in halves and lowers
// its batch size for good; nothing falls back to single publishes.
func TestGroupCommitServerMaxBatchSize(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		SyncAlways: true, NoLog: true, NoSigs: true, JetStreamLimits: server.JSLimitOpts{MaxBatchSize: 8}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m := NewMetrics()
	st, err := OpenStore(context.Background(), nc, StoreConfig{Replicas: 1, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20,
		Pseudonyms: testPseudonyms(t, 7)}, m)
	if err != nil {
		t.Fatal(err)
	}
	st.commit.minBatch = 2 // the tests' batches are small
	g := holdCommits(st)
	const n = 32
	done := queueCreates(st, "GC-MAX", n)
	waitPending(t, st, n)
	close(g.release)
	for i, err := range done() {
		if err != nil {
			t.Errorf("write %d: %v", i, err)
		}
	}
	st.commit.mu.Lock()
	maxBatch := st.commit.maxBatch
	st.commit.mu.Unlock()
	if maxBatch != 8 {
		t.Errorf("batch size %d after the refusals, want the server's 8", maxBatch)
	}
	// 32 refused -> 16 refused (size lowered to 16, then 8) -> 8 + 8, twice.
	if commits(m, "batch") != 4 || commits(m, "fallback") != 0 {
		t.Errorf("commits: batch %d fallback %d, want 4 0", commits(m, "batch"), commits(m, "fallback"))
	}
	// Later batches are no larger than the server takes.
	splits := commits(m, "split")
	for i, err := range queueCreates(st, "GC-MAX2", n)() {
		if err != nil {
			t.Errorf("later write %d: %v", i, err)
		}
	}
	if commits(m, "split") != splits || commits(m, "fallback") != 0 {
		t.Errorf("later commits: split %d (was %d) fallback %d, want no more refusals", commits(m, "split"), splits, commits(m, "fallback"))
	}
	if counts := subjectCounts(t, st); len(counts) != 2*n+g.held {
		t.Errorf("%d prescriptions stored, want %d", len(counts), 2*n+g.held)
	}
}

// A write that waits longer than the committer's bound without being taken
// by a commit is refused unwritten with ErrOverloaded; the writes already
// taken by a commit are committed however long they take.
func TestGroupCommitWaitBound(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	st.commit.maxWait = 50 * time.Millisecond
	g := holdCommits(st)
	rec := &rx.Prescription{ID: "GC-WAITED", History: []rx.Event{{Type: "test", MessageID: "order"}}}
	// The commits stay held until this write is answered.
	if _, err := st.appendEvent(ctx, "test", "order", rec, []byte("order"), 0); !errors.Is(err, service.ErrOverloaded) {
		t.Fatalf("write not taken within the bound: %v, want ErrOverloaded", err)
	}
	if st.commit.depth() != 0 || testutil.ToFloat64(m.CommitQueue) != 0 {
		t.Errorf("queue depth %d (gauge %v) after the refusal, want 0", st.commit.depth(), testutil.ToFloat64(m.CommitQueue))
	}
	if got := testutil.ToFloat64(m.CommitRefused); got != 1 {
		t.Errorf("refused %v writes, want 1", got)
	}
	close(g.release)
	for range g.held {
		if err := <-g.firstErrs; err != nil {
			t.Errorf("a write taken by a commit: %v, want stored", err)
		}
	}
	if _, err := st.Current(ctx, "GC-WAITED"); !errors.Is(err, service.ErrNotFound) {
		t.Errorf("GC-WAITED: %v, want nothing stored", err)
	}
	if sizes := g.commitSizes(); len(sizes) != 0 {
		t.Errorf("commits of %v after the held ones, want none", sizes)
	}
}

// A batch that gets no answer (the server stops while it is committed)
// is resolved write by write (readback.go); the server being gone, the
// resolution gets no answer either and each write fails with an error that
// is not a conflict, a full stream or an overload: the services answer it
// as a store error (503).
func TestGroupCommitNoAnswer(t *testing.T) {
	st, n, m := commitStoreWith(t, StoreConfig{})
	st.commit.timeout = 500 * time.Millisecond
	st.commit.resolveFor = 500 * time.Millisecond
	g := holdCommits(st)
	held := st.commit.beforeCommit
	var stop sync.Once
	firstErrs := make(chan error, g.held)
	st.commit.beforeCommit = func(size int) {
		held(size)
		if size > 1 {
			// The held writes answered first, so the server stops under
			// the batch alone (a held write still in flight would be
			// unresolved too).
			stop.Do(func() {
				for range g.held {
					firstErrs <- <-g.firstErrs
				}
				n.Embedded.Shutdown()
			})
		}
	}
	const k = 6
	done := queueCreates(st, "GC-LOST", k)
	waitPending(t, st, k)
	close(g.release)
	for i, err := range done() {
		var full *StorageFullError
		if err == nil || !errors.Is(err, errUnresolved) || errors.Is(err, service.ErrConflict) || errors.Is(err, service.ErrOverloaded) || errors.As(err, &full) {
			t.Errorf("write %d of the unanswered batch: %v, want a store error", i, err)
		}
	}
	if commits(m, "error") != 1 || commits(m, "fallback") != 0 || commits(m, "split") != 0 {
		t.Errorf("commits: error %d fallback %d split %d, want 1 0 0", commits(m, "error"), commits(m, "fallback"), commits(m, "split"))
	}
	if unknowns(m, resolvedUnresolved) != k {
		t.Errorf("resolved unresolved %d, want %d", unknowns(m, resolvedUnresolved), k)
	}
	for range g.held {
		if err := <-firstErrs; err != nil {
			t.Errorf("a held write before the batch: %v", err)
		}
	}
}

// A batch refused for want of space is published write by write: the
// writes that fit are stored, each other one answers StorageFullError
// (507 over HTTP), nothing is stored twice.
func TestGroupCommitStorageFullInBatch(t *testing.T) {
	const limit = 64 << 10
	st, _, m := commitStoreWith(t, StoreConfig{Limits: StorageLimits{Events: limit}})
	g := holdCommits(st)
	body := bytes.Repeat([]byte("x"), 10<<10)
	const k = 12
	var wg sync.WaitGroup
	errs := make([]error, k)
	for i := range k {
		wg.Go(func() {
			id := fmt.Sprintf("GC-FULL-%02d", i)
			rec := &rx.Prescription{ID: id, History: []rx.Event{{Type: "test", MessageID: "order"}}}
			_, errs[i] = st.appendEvent(context.Background(), "test", "order", rec, body, 0)
		})
	}
	waitPending(t, st, k)
	close(g.release)
	wg.Wait()
	stored, full := 0, 0
	for i, err := range errs {
		var sfe *StorageFullError
		switch {
		case err == nil:
			stored++
		case errors.As(err, &sfe):
			full++
		default:
			t.Errorf("write %d: %v, want stored or StorageFullError", i, err)
		}
	}
	if stored == 0 || full == 0 {
		t.Errorf("%d stored and %d refused for want of space, want some of each", stored, full)
	}
	counts := subjectCounts(t, st)
	if len(counts) != stored+g.held {
		t.Errorf("%d prescriptions stored, want %d", len(counts), stored+g.held)
	}
	for subject, count := range counts {
		if count != 1 {
			t.Errorf("%s holds %d messages, want 1", subject, count)
		}
	}
	if commits(m, "fallback") != 1 {
		t.Errorf("%d batches fell back, want 1", commits(m, "fallback"))
	}
}

// Fewer than MinCommitBatch gathered writes are published on their own,
// concurrently, each stored with its own sequence; MinCommitBatch of them
// are committed as one atomic batch.
func TestGroupCommitMinBatch(t *testing.T) {
	for _, tc := range []struct {
		n             int
		batch, single int
	}{
		{MinCommitBatch - 1, 0, MinCommitBatch - 1},
		{MinCommitBatch, 1, 0},
	} {
		t.Run(fmt.Sprint(tc.n, " writes"), func(t *testing.T) {
			st, _, m := commitStore(t, 0)
			st.commit.minBatch = MinCommitBatch
			ctx := context.Background()
			g := holdCommits(st)
			errs := make([]error, tc.n)
			var wg sync.WaitGroup
			for i := range tc.n {
				wg.Go(func() {
					id := fmt.Sprintf("GC-MIN-%03d", i)
					_, errs[i] = st.Create(ctx, id, newRx(id, "order-"+id))
				})
			}
			waitPending(t, st, tc.n)
			close(g.release)
			wg.Wait()
			for range g.held {
				if err := <-g.firstErrs; err != nil {
					t.Fatal(err)
				}
			}
			for i, err := range errs {
				if err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			for subject, count := range subjectCounts(t, st) {
				if count != 1 {
					t.Errorf("%s holds %d messages, want 1", subject, count)
				}
			}
			if len(subjectCounts(t, st)) != tc.n+g.held {
				t.Errorf("%d prescriptions stored, want %d", len(subjectCounts(t, st)), tc.n+g.held)
			}
			if commits(m, "batch") != tc.batch || commits(m, "single") != g.held+tc.single {
				t.Errorf("commits: batch %d single %d, want %d %d", commits(m, "batch"), commits(m, "single"), tc.batch, g.held+tc.single)
			}
		})
	}
}
