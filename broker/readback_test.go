package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Writes whose commit gets no answer (readback.go), on a real embedded
// JetStream. The answer is lost by wrapping the committer's publish
// functions: publish for real and then answer a timeout (stored, the
// answer lost), or answer a timeout without publishing (lost on the way).

// loseOnce makes the first single publish on subject lose its answer: sent
// for real when send is true, and before it runs meanwhile (nil: nothing).
// Every other publish goes through.
func loseOnce(st *Store, subject string, send bool, meanwhile func()) {
	real := st.commit.publishMsg
	var once sync.Once
	st.commit.publishMsg = func(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		lose := false
		if m.Subject == subject {
			once.Do(func() { lose = true })
		}
		if !lose {
			return real(ctx, m, opts...)
		}
		if meanwhile != nil {
			meanwhile()
		}
		if send {
			if _, err := real(ctx, m, opts...); err != nil {
				return nil, err
			}
		}
		return nil, nats.ErrTimeout
	}
}

// loseBatchOnce makes the first atomic batch lose its answer: sent for real
// when send is true, and before it runs meanwhile (nil: nothing).
func loseBatchOnce(st *Store, send bool, meanwhile func(msgs []*nats.Msg)) {
	real := st.commit.publishMsgBatch
	var once sync.Once
	st.commit.publishMsgBatch = func(ctx context.Context, msgs []*nats.Msg) (*jetstreamext.BatchAck, error) {
		lose := false
		once.Do(func() { lose = true })
		if !lose {
			return real(ctx, msgs)
		}
		if meanwhile != nil {
			meanwhile(msgs)
		}
		if send {
			if _, err := real(ctx, msgs); err != nil {
				return nil, err
			}
		}
		return nil, context.DeadlineExceeded
	}
}

func unknowns(m *Metrics, resolved string) int {
	return int(testutil.ToFloat64(m.CommitUnknown.WithLabelValues(resolved)))
}

// otherWrite publishes, as another broker instance would (its own
// Nats-Msg-Id, straight to JetStream), the event of rec (one more history
// entry) on its subject, expecting the subject's last sequence at expect.
func otherWrite(t *testing.T, st *Store, rec *rx.Prescription, expect uint64) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Error(err)
		return
	}
	msg := rec.History[len(rec.History)-1].MessageID
	h := nats.Header{}
	h.Set(HeaderEvent, "test")
	h.Set(HeaderMessageID, msg)
	h.Set(HeaderRecord, string(b))
	h.Set(jetstream.MsgIDHeader, newMsgID())
	if _, err := st.js.PublishMsg(context.Background(), &nats.Msg{Subject: SubjectRx + rec.ID, Header: h, Data: []byte(msg)},
		jetstream.WithExpectLastSequencePerSubject(expect)); err != nil {
		t.Error(err)
	}
}

// Every event log write carries a Nats-Msg-Id of its own.
func TestEventWritesCarryMsgID(t *testing.T) {
	st, _, _ := commitStore(t, 0)
	ctx := context.Background()
	a, err := st.Create(ctx, "RB-ID-A", newRx("RB-ID-A", "a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Update(ctx, "RB-ID-A", addEntry("b"))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, seq := range []uint64{a.Seq, b.Seq} {
		raw, err := st.events.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := raw.Header.Get(jetstream.MsgIDHeader)
		if id == "" || ids[id] {
			t.Fatalf("event %d carries Nats-Msg-Id %q, want one of its own", seq, id)
		}
		ids[id] = true
	}
}

// A single write stored but whose answer was lost is answered once with its
// sequence (read back: a single server checks the expected sequence before
// the ID); the log holds it once.
func TestLostAnswerStoredSingle(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	loseOnce(st, SubjectRx+"RB-1", true, nil)
	ev, err := st.Create(ctx, "RB-1", newRx("RB-1", "order"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := st.Current(ctx, "RB-1")
	if err != nil || cur.Seq != ev.Seq || !slices.Equal(entries(cur.Record), []string{"order"}) {
		t.Fatalf("RB-1 current %+v (%v), want the answered event %d", cur, err, ev.Seq)
	}
	if n := subjectCounts(t, st)[SubjectRx+"RB-1"]; n != 1 {
		t.Errorf("RB-1 holds %d messages, want 1", n)
	}
	if unknowns(m, resolvedDuplicate) != 1 || unknowns(m, resolvedStored) != 0 {
		t.Errorf("resolved: duplicate %d stored %d, want 1 0", unknowns(m, resolvedDuplicate), unknowns(m, resolvedStored))
	}
	if st.LastWritten() != ev.Seq {
		t.Errorf("LastWritten %d, want %d", st.LastWritten(), ev.Seq)
	}
}

// A single write lost before the server stored it is stored once by the
// resolution.
func TestLostAnswerNotStoredSingle(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	if _, err := st.Create(ctx, "RB-2", newRx("RB-2", "order")); err != nil {
		t.Fatal(err)
	}
	loseOnce(st, SubjectRx+"RB-2", false, nil)
	ev, err := st.Update(ctx, "RB-2", addEntry("dispensed"))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := st.Current(ctx, "RB-2")
	if err != nil || cur.Seq != ev.Seq || !slices.Equal(entries(cur.Record), []string{"order", "dispensed"}) {
		t.Fatalf("RB-2 current %+v (%v), want the answered event %d", cur, err, ev.Seq)
	}
	if n := subjectCounts(t, st)[SubjectRx+"RB-2"]; n != 2 {
		t.Errorf("RB-2 holds %d messages, want 2", n)
	}
	if unknowns(m, resolvedStored) != 1 {
		t.Errorf("resolved stored %d, want 1", unknowns(m, resolvedStored))
	}
}

// Another writer's write landed on the subject while the answer was lost
// (ours never reached the server): the resolution finds the other's ID,
// the write is a lost compare-and-set and the update is decided again on
// top of the other's.
func TestLostAnswerAnotherWriter(t *testing.T) {
	st, _, m := commitStore(t, 0)
	ctx := context.Background()
	if _, err := st.Create(ctx, "RB-3", newRx("RB-3", "order")); err != nil {
		t.Fatal(err)
	}
	var theirs *nats.Msg
	real := st.commit.publishMsg
	var once sync.Once
	st.commit.publishMsg = func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		lose := false
		once.Do(func() { lose = true })
		if !lose {
			return real(ctx, msg, opts...)
		}
		// The other writer decided from the same state: its record holds
		// its own entry after the order.
		cur, err := st.Current(ctx, "RB-3")
		if err != nil {
			t.Error(err)
			return nil, nats.ErrTimeout
		}
		w, _ := addEntry("theirs")(cur)
		otherWrite(t, st, w.Record, cur.Seq)
		theirs = msg
		return nil, nats.ErrTimeout
	}
	ev, err := st.Update(ctx, "RB-3", addEntry("mine"))
	if err != nil {
		t.Fatal(err)
	}
	if theirs == nil {
		t.Fatal("the lost publish did not run")
	}
	cur, err := st.Current(ctx, "RB-3")
	if err != nil || cur.Seq != ev.Seq || !slices.Equal(entries(cur.Record), []string{"order", "theirs", "mine"}) {
		t.Fatalf("RB-3 current %+v (%v), want order, theirs, mine at %d", cur, err, ev.Seq)
	}
	if n := subjectCounts(t, st)[SubjectRx+"RB-3"]; n != 3 {
		t.Errorf("RB-3 holds %d messages, want 3", n)
	}
	if unknowns(m, resolvedConflict) != 1 {
		t.Errorf("resolved conflict %d, want 1", unknowns(m, resolvedConflict))
	}
}

// The resolution gets no answer either: the write fails with an error that
// is neither a conflict nor an overload (503 over HTTP), whether or not
// the first publish was stored; nothing is guessed, nothing stored twice.
func TestLostAnswerUnresolved(t *testing.T) {
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprint("stored=", stored), func(t *testing.T) {
			st, _, m := commitStore(t, 0)
			st.commit.resolveFor = 300 * time.Millisecond
			ctx := context.Background()
			real := st.commit.publishMsg
			sent := 0
			st.commit.publishMsg = func(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
				sent++
				if stored && sent == 1 {
					if _, err := real(ctx, msg, opts...); err != nil {
						return nil, err
					}
				}
				return nil, nats.ErrTimeout
			}
			_, err := st.Create(ctx, "RB-4", newRx("RB-4", "order"))
			if err == nil || !errors.Is(err, errUnresolved) || errors.Is(err, service.ErrConflict) || errors.Is(err, service.ErrOverloaded) {
				t.Fatalf("write without answers: %v, want unresolved", err)
			}
			if sent < 2 {
				t.Errorf("%d publishes, want the first and at least one resolution", sent)
			}
			want := uint64(0)
			if stored {
				want = 1
			}
			if n := subjectCounts(t, st)[SubjectRx+"RB-4"]; n != want {
				t.Errorf("RB-4 holds %d messages, want %d", n, want)
			}
			if unknowns(m, resolvedUnresolved) != 1 {
				t.Errorf("resolved unresolved %d, want 1", unknowns(m, resolvedUnresolved))
			}
		})
	}
}

// gatherBatch runs k Creates of prefix-i as one atomic batch (after the
// held commits) and returns their answers.
func gatherBatch(t *testing.T, st *Store, prefix string, k int) ([]*service.Event, []error) {
	t.Helper()
	g := holdCommits(st)
	evs := make([]*service.Event, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			id := fmt.Sprintf("%s-%d", prefix, i)
			evs[i], errs[i] = st.Create(context.Background(), id, newRx(id, "order-"+id))
		})
	}
	waitPending(t, st, k)
	close(g.release)
	wg.Wait()
	for range g.held {
		if err := <-g.firstErrs; err != nil {
			t.Fatal(err)
		}
	}
	if sizes := g.commitSizes(); len(sizes) == 0 || sizes[0] != k {
		t.Fatalf("commits of %v writes, want the %d in one batch first", sizes, k)
	}
	return evs, errs
}

// An atomic batch stored whose answer was lost: each write answered once
// with its own sequence, each stored once.
func TestLostAnswerStoredBatch(t *testing.T) {
	st, _, m := commitStore(t, 0)
	loseBatchOnce(st, true, nil)
	const k = 6
	evs, errs := gatherBatch(t, st, "RB-B1", k)
	checkBatchStored(t, st, "RB-B1", evs, errs)
	if unknowns(m, resolvedDuplicate) != k {
		t.Errorf("resolved duplicate %d, want %d", unknowns(m, resolvedDuplicate), k)
	}
	if commits(m, "error") != 1 {
		t.Errorf("commits without answer %d, want 1", commits(m, "error"))
	}
}

// An atomic batch lost before the server stored it: each write stored once
// by the resolution.
func TestLostAnswerNotStoredBatch(t *testing.T) {
	st, _, m := commitStore(t, 0)
	loseBatchOnce(st, false, nil)
	const k = 6
	evs, errs := gatherBatch(t, st, "RB-B2", k)
	checkBatchStored(t, st, "RB-B2", evs, errs)
	if unknowns(m, resolvedStored) != k {
		t.Errorf("resolved stored %d, want %d", unknowns(m, resolvedStored), k)
	}
}

func checkBatchStored(t *testing.T, st *Store, prefix string, evs []*service.Event, errs []error) {
	t.Helper()
	ctx := context.Background()
	seen := map[uint64]bool{}
	for i := range evs {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		if seen[evs[i].Seq] {
			t.Fatalf("%s answered sequence %d twice", id, evs[i].Seq)
		}
		seen[evs[i].Seq] = true
		ev, err := st.Event(ctx, evs[i].Seq)
		if err != nil || ev.Record.ID != id {
			t.Fatalf("%s: event %d holds %+v (%v), want its own", id, evs[i].Seq, ev, err)
		}
		if n := subjectCounts(t, st)[SubjectRx+id]; n != 1 {
			t.Errorf("%s holds %d messages, want 1", id, n)
		}
	}
}

// An atomic batch lost before it was stored while another writer stored an
// order under one of its prescription IDs: that write is a lost
// compare-and-set, decided again (the prescription exists: refused by its
// decision); every other write of the batch is stored once.
func TestLostAnswerBatchAnotherWriter(t *testing.T) {
	st, _, m := commitStore(t, 0)
	loseBatchOnce(st, false, func(msgs []*nats.Msg) {
		id := strings.TrimPrefix(msgs[0].Subject, SubjectRx)
		otherWrite(t, st, &rx.Prescription{ID: id, History: []rx.Event{{Type: "test", MessageID: "theirs"}}}, 0)
	})
	const k = 6
	g := holdCommits(st)
	evs := make([]*service.Event, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() {
			id := fmt.Sprintf("RB-B3-%d", i)
			evs[i], errs[i] = st.Create(context.Background(), id, newRx(id, "order-"+id))
		})
	}
	waitPending(t, st, k)
	close(g.release)
	wg.Wait()
	refused := 0
	for i := range k {
		id := fmt.Sprintf("RB-B3-%d", i)
		if n := subjectCounts(t, st)[SubjectRx+id]; n != 1 {
			t.Errorf("%s holds %d messages, want 1", id, n)
		}
		cur, err := st.Current(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case errors.Is(errs[i], errExists):
			refused++
			if !slices.Equal(entries(cur.Record), []string{"theirs"}) {
				t.Errorf("%s: refused, but holds %v, want the other writer's", id, entries(cur.Record))
			}
		case errs[i] != nil:
			t.Errorf("%s: %v", id, errs[i])
		case cur.Seq != evs[i].Seq:
			t.Errorf("%s: answered %d, current %d", id, evs[i].Seq, cur.Seq)
		}
	}
	if refused != 1 {
		t.Errorf("%d writes refused, want the one the other writer came first on", refused)
	}
	if unknowns(m, resolvedConflict) != 1 || unknowns(m, resolvedStored) != k-1 {
		t.Errorf("resolved: conflict %d stored %d, want 1 %d", unknowns(m, resolvedConflict), unknowns(m, resolvedStored), k-1)
	}
}

// nats-server 2.15 takes Nats-Msg-Id inside atomic batches; a batch holding
// an ID the stream has stored within its Duplicates window (or two equal
// IDs) is refused whole (10201), nothing of it stored.
func TestAtomicBatchMsgIDs(t *testing.T) {
	st, _, _ := commitStore(t, 0)
	ctx := context.Background()
	msg := func(subject, id string) *nats.Msg {
		h := nats.Header{}
		h.Set(jetstream.MsgIDHeader, id)
		return &nats.Msg{Subject: subject, Header: h, Data: []byte(id)}
	}
	ack, err := st.commit.publishMsgBatch(ctx, []*nats.Msg{msg(SubjectRx+"RB-M1", "id-1"), msg(SubjectRx+"RB-M2", "id-2")})
	if err != nil || ack.BatchSize != 2 {
		t.Fatalf("batch with IDs: %+v %v", ack, err)
	}
	for _, batch := range [][]*nats.Msg{
		{msg(SubjectRx+"RB-M3", "id-3"), msg(SubjectRx+"RB-M1", "id-1")},
		{msg(SubjectRx+"RB-M4", "id-4"), msg(SubjectRx+"RB-M5", "id-4")},
	} {
		_, err := st.commit.publishMsgBatch(ctx, batch)
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10201 {
			t.Errorf("batch with a duplicate ID: %v, want 10201", err)
		}
	}
	counts := subjectCounts(t, st)
	if len(counts) != 2 || counts[SubjectRx+"RB-M1"] != 1 || counts[SubjectRx+"RB-M2"] != 1 {
		t.Errorf("stored %v, want the first batch only", counts)
	}
}

// fixedQueue is a ready queue of the given prescriptions, in that order,
// for every organisation (the release decides from each prescription's
// stored state whether it is still there to take).
type fixedQueue []string

func (q fixedQueue) CatchUp(context.Context) error { return nil }

func (q fixedQueue) ReadyQueue(_ string, from uint64, limit int) []service.QueueEntry {
	var out []service.QueueEntry
	for i, id := range q {
		if seq := uint64(i + 1); seq >= from && len(out) < limit {
			out = append(out, service.QueueEntry{PrescriptionID: id, QueueSeq: seq})
		}
	}
	return out
}

// nominatedOrders takes n orders nominated to pharmacy through intake (as
// a GP's system sends them) and returns their short IDs, oldest first: the
// ready queue a nominated release takes from.
func nominatedOrders(t *testing.T, st *Store, pharmacy string, n int) fixedQueue {
	t.Helper()
	prescriber := auth.Principal{Subject: "dr-1", ODS: "A83008", Role: auth.RolePrescriber}
	in := service.NewIntake(st, st, nil, zap.NewNop(), time.Now)
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	var q fixedQueue
	for range n {
		g, err := tmpl.Order(fhirgen.Options{Performer: pharmacy})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.ProcessMessage(context.Background(), prescriber, g.Body); err != nil {
			t.Fatal(err)
		}
		q = append(q, g.ShortID)
	}
	return q
}

// A nominated release whose write was stored but whose answer was lost
// (single publish, and in an atomic batch) is answered the release: the
// prescriptions are handed over once, each release event stored once, and
// a second release hands none of them out again.
func TestLostAnswerNominatedRelease(t *testing.T) {
	for _, batch := range []bool{false, true} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			st, _, m := commitStore(t, 0)
			ctx := context.Background()
			const pharmacy = "FA565"
			dispenser := auth.Principal{Subject: "rx-1", ODS: pharmacy, Role: auth.RoleDispenser}
			const n = 4
			q := nominatedOrders(t, st, pharmacy, n)
			if batch {
				st.commit.minBatch = 2
				loseBatchOnce(st, true, nil)
			} else {
				st.commit.minBatch = n + 1 // every write on its own
				loseOnce(st, SubjectRx+q[1], true, nil)
			}
			before := subjectCounts(t, st)
			life := service.NewLifecycle(st, q, zap.NewNop(), time.Now)
			var (
				out  []service.Released
				rerr error
			)
			if batch {
				// The release's writes gather in one atomic batch.
				g := holdCommits(st)
				done := make(chan struct{})
				go func() {
					defer close(done)
					out, rerr = life.ReleaseNominated(ctx, dispenser, pharmacy, "release-1", []byte("{}"), n)
				}()
				waitPending(t, st, n)
				close(g.release)
				<-done
				if sizes := g.commitSizes(); len(sizes) == 0 || sizes[0] != n {
					t.Errorf("commits of %v writes, want the release's %d in one batch", sizes, n)
				}
			} else {
				out, rerr = life.ReleaseNominated(ctx, dispenser, pharmacy, "release-1", []byte("{}"), n)
			}
			if rerr != nil {
				t.Fatal(rerr)
			}
			var got []string
			for _, r := range out {
				got = append(got, r.Record.ID)
				if r.Record.Status != rx.StatusWithDispenser {
					t.Errorf("%s handed over as %s", r.Record.ID, r.Record.Status)
				}
			}
			if !slices.Equal(got, q) {
				t.Errorf("handed over %v, want %v", got, q)
			}
			after := subjectCounts(t, st)
			for _, id := range q {
				if after[SubjectRx+id] != before[SubjectRx+id]+1 {
					t.Errorf("%s: %d events after the release, %d before: want one release event", id, after[SubjectRx+id], before[SubjectRx+id])
				}
			}
			if unknowns(m, resolvedDuplicate) == 0 {
				t.Error("no write was resolved as stored by the first publish: the test lost no answer")
			}
			again, err := life.ReleaseNominated(ctx, dispenser, pharmacy, "release-2", []byte("{}"), n)
			if err != nil || len(again) != 0 {
				t.Errorf("second release: %d handed over (%v), want none", len(again), err)
			}
		})
	}
}

// refuseResolutions makes the first single publish on subject lose its
// answer (sent for real when stored) and every later publish on subject
// be refused with refusal, as the server answers it; it returns the count
// of publishes on subject.
func refuseResolutions(st *Store, subject string, stored bool, refusal error) *int {
	real := st.commit.publishMsg
	var mu sync.Mutex
	sent := new(int)
	st.commit.publishMsg = func(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
		if m.Subject != subject {
			return real(ctx, m, opts...)
		}
		mu.Lock()
		*sent++
		first := *sent == 1
		mu.Unlock()
		if !first {
			return nil, refusal
		}
		if stored {
			if _, err := real(ctx, m, opts...); err != nil {
				return nil, err
			}
		}
		return nil, nats.ErrTimeout
	}
	return sent
}

// A resolution refused for a temporary reason (the server's storage
// exceeded, 10023, which the server checks before the Nats-Msg-Id, while the
// first copy may still land) says nothing of the first publish: the write
// is unresolved (503, "may have been stored"), never "not stored" nor
// "storage full", whether or not the first publish was stored.
func TestLostAnswerTemporaryRefusal(t *testing.T) {
	refusal := &jetstream.APIError{Code: 503, ErrorCode: jsErrInsufficientResources, Description: "insufficient resources"}
	for _, stored := range []bool{false, true} {
		t.Run(fmt.Sprint("stored=", stored), func(t *testing.T) {
			st, _, m := commitStore(t, 0)
			st.commit.resolveFor = 300 * time.Millisecond
			sent := refuseResolutions(st, SubjectRx+"RB-T1", stored, refusal)
			_, err := st.Create(context.Background(), "RB-T1", newRx("RB-T1", "order"))
			if !errors.Is(err, errUnresolved) || IsStorageFull(err) || errors.Is(err, service.ErrConflict) {
				t.Fatalf("write whose resolution was refused 10023: %v, want unresolved (not storage full)", err)
			}
			if *sent < 2 {
				t.Errorf("%d publishes, want the first and at least one resolution", *sent)
			}
			want := uint64(0)
			if stored {
				want = 1
			}
			if n := subjectCounts(t, st)[SubjectRx+"RB-T1"]; n != want {
				t.Errorf("RB-T1 holds %d messages, want %d", n, want)
			}
			if unknowns(m, resolvedUnresolved) != 1 || unknowns(m, resolvedNotStored) != 0 {
				t.Errorf("resolved unresolved %d, not stored %d: want 1 and 0", unknowns(m, resolvedUnresolved), unknowns(m, resolvedNotStored))
			}
		})
	}
}

// A definite refusal of the resolution (the event log at its maximum bytes:
// checked after the Nats-Msg-Id, discard new, so the first copy cannot land
// either) is "not stored": the write is refused as storage full.
func TestLostAnswerDefiniteRefusal(t *testing.T) {
	st, _, m := commitStore(t, 0)
	refusal := &jetstream.APIError{Code: 503, ErrorCode: jsErrStreamStoreFailed, Description: "maximum bytes exceeded"}
	refuseResolutions(st, SubjectRx+"RB-T2", false, refusal)
	_, err := st.Create(context.Background(), "RB-T2", newRx("RB-T2", "order"))
	if !IsStorageFull(err) || errors.Is(err, errUnresolved) {
		t.Fatalf("write whose resolution found the stream full: %v, want storage full", err)
	}
	if n := subjectCounts(t, st)[SubjectRx+"RB-T2"]; n != 0 {
		t.Errorf("RB-T2 holds %d messages, want 0", n)
	}
	if unknowns(m, resolvedNotStored) != 1 {
		t.Errorf("resolved not stored %d, want 1", unknowns(m, resolvedNotStored))
	}
}

// A nominated release whose write was stored, whose answer was lost and
// whose resolution was refused for a temporary reason is still handed
// over: the write is unresolved, and the release's read-back finds it.
func TestLostAnswerNominatedReleaseTemporaryRefusal(t *testing.T) {
	st, _, _ := commitStore(t, 0)
	st.commit.resolveFor = 300 * time.Millisecond
	ctx := context.Background()
	const pharmacy = "FA565"
	dispenser := auth.Principal{Subject: "rx-1", ODS: pharmacy, Role: auth.RoleDispenser}
	const n = 3
	q := nominatedOrders(t, st, pharmacy, n)
	st.commit.minBatch = n + 1 // every write on its own
	refuseResolutions(st, SubjectRx+q[1], true, &jetstream.APIError{Code: 503, ErrorCode: jsErrInsufficientResources, Description: "insufficient resources"})
	life := service.NewLifecycle(st, q, zap.NewNop(), time.Now)
	out, err := life.ReleaseNominated(ctx, dispenser, pharmacy, "release-1", []byte("{}"), n)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range out {
		got = append(got, r.Record.ID)
	}
	if !slices.Contains(got, q[1]) {
		t.Errorf("handed over %v: %s, released by a write whose resolution was refused 10023, handed to nobody", got, q[1])
	}
	cur, err := st.Current(ctx, q[1])
	if err != nil || cur.Record.Status != rx.StatusWithDispenser {
		t.Fatalf("%s after the release: %+v (%v)", q[1], cur, err)
	}
}
