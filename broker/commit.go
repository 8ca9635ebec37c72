package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// Group commit of the event log (issue 13).
//
// Every write of a prescription (appendEvent) is handed to the store's
// committer and waits for its own answer. The committer commits what is
// pending together: one write alone is published on its own, as before
// (no batch overhead, no added wait); several are committed as one
// JetStream atomic batch, which the server stores with one fsync under
// sync always and acknowledges only after it. Each message of the batch
// keeps its own expected last subject sequence (the compare-and-set), and
// each write answers only when the commit that holds it is acknowledged:
// an acknowledgement means what it meant before, stored under the sync
// policy. While the commits in flight run (CommitsInFlight at most), new
// writes gather for the next.
//
// An atomic batch is refused whole when one of its messages is (its
// prescription changed since the writer decided, or the stream refuses it);
// nothing of it is stored. A batch refused for a stale expected sequence
// is committed again in halves (a resent order the committer does not
// remember is written expecting an empty subject, so refusals are normal
// traffic), down to bisectMin writes; a smaller part, or a batch refused
// for another reason (e.g. want of space), is published write by write,
// so that each write gets its own answer (ErrConflict for the one that
// lost its compare-and-set; the CAS loop decides again). Two writes of one
// prescription never go in one batch (the second's expected sequence would
// be stale by construction): the second waits for the next commit, and
// when the first was stored it is answered ErrConflict at once, without a
// round trip.
//
// A commit that gets no answer (a timeout, the connection lost) leaves its
// writes' outcome unknown: each is resolved before it is answered, by its
// Nats-Msg-Id and expected sequence (readback.go), and answered stored,
// refused, or (when that gets no answer either) service.ErrUnresolved.
//
// Backpressure: at most maxPending writes wait to be taken by a commit;
// past that a write is refused at once with service.ErrOverloaded, nothing
// written (503 with Retry-After over HTTP). A write that has waited
// CommitMaxWait without being taken by a commit is refused the same way,
// still unwritten: a taken write is never abandoned.
//
// Batching needs a stream that takes atomic batches (AllowAtomicPublish,
// nats-server 2.12 or later). On a stream without it (an older external
// server ignores the setting), or once the server answers a batch in a way
// only an older server does, the committer publishes every write on its
// own: a commit then takes up to maxBatch writes of distinct subjects and
// publishes them concurrently, each with its own answer.

const (
	// MaxCommitBatch is the most writes one atomic batch holds. The server
	// refuses batches of more than 1,000 messages (its JetStream limit
	// max_batch_size, 1,000 by default, jetstream_batching.go); 256 orders
	// of about 16 KB make a batch of about 4 MB. A server configured with
	// a lower max_batch_size refuses a larger batch (10199): the committer
	// then halves its batch size for good and commits the refused batch
	// in halves.
	MaxCommitBatch = 256
	// CommitsInFlight is how many commits run at once (the server allows
	// 50 atomic batches in flight per stream). Measured with
	// BenchmarkGroupCommit on 2 shared cores, two against one: 16 writers
	// 1.93 ms and 2.12 ms a write, 64 writers 0.81 ms and 0.89 ms (each
	// not significant alone, p=0.16 and 0.33); only two was significantly
	// faster than every write on its own at 16 writers (20%, p=0.001).
	// While one batch is committed, the second commit takes the writes that
	// arrived meanwhile instead of making them wait a whole commit.
	CommitsInFlight = 2
	// MinCommitBatch is the fewest writes committed as an atomic batch;
	// fewer are published concurrently, each on its own. For a
	// single-replica file stream the server stages each atomic batch in a
	// file store of its own (server/jetstream_batching.go newBatchStore:
	// a directory and its synced metadata), a fixed cost per batch that
	// small batches do not earn back: a CPU profile of 16 clients, batches
	// of about 4 writes, put 9.5% of the process's CPU in creating them
	// and more CPU per order than publishing each write on its own.
	MinCommitBatch = 8
	// DefaultCommitMaxPending is --commit-max-pending's default.
	DefaultCommitMaxPending = 1024
	// CommitMaxWait is the longest a write waits to be taken by a commit;
	// then it is refused unwritten with service.ErrOverloaded. With a
	// commit's own bound (service.WriteTimeout, 10 s) a write is answered
	// within about 15 s of being handed in, inside the HTTP write timeout
	// (30 s by default), unless its batch is refused and retried in parts.
	CommitMaxWait = 5 * time.Second
	// bisectMin: an atomic batch refused for a stale expected sequence is
	// committed again in two halves, each refused half again in halves,
	// down to this size; a refused part this small is published write by
	// write. One stale write in 256 costs 12 smaller batches (6 refused,
	// 6 stored: 128 down to 4) and 4 single publishes instead of 256
	// single publishes.
	bisectMin = 4
	// recentSubjects is how many subjects the committer remembers the last
	// write of (twice this at most), to answer a write it knows is stale
	// without sending it.
	recentSubjects = 4096
)

// batchingFor says whether the committer may commit atomic batches on the
// event log whose stored configuration is cfg: only when the server kept
// AllowAtomicPublish (a server older than 2.12 does not know it and drops
// it from the configuration it answers).
func batchingFor(cfg jetstream.StreamConfig) bool {
	return cfg.AllowAtomicPublish
}

// commitWrite is one event log write handed to the committer.
type commitWrite struct {
	subject string
	id      string // its Nats-Msg-Id (readback.go)
	header  nats.Header
	data    []byte
	expect  uint64 // expected last subject sequence (0: nothing on the subject)
	start   time.Time
	done    chan struct{} // closed when seq or err is set
	seq     uint64
	err     error
	taken   bool // taken from pending (by a commit or answered there); under committer.mu
}

// committer gathers event log writes and commits them (see above).
type committer struct {
	st          *Store
	log         *zap.Logger
	maxPending  int
	maxInflight int
	maxWait     time.Duration // longest wait to be taken (CommitMaxWait)
	timeout     time.Duration // a commit's own bound (service.WriteTimeout)
	resolveFor  time.Duration // bound of resolving writes without an answer (resolveFor)

	// beforeCommit, when set (tests), runs before each commit with its size.
	beforeCommit func(n int)
	// publishMsg and publishMsgBatch publish a single write and an atomic
	// batch (the JetStream calls; tests wrap them to lose answers).
	publishMsg      func(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
	publishMsgBatch func(ctx context.Context, msgs []*nats.Msg) (*jetstreamext.BatchAck, error)

	mu       sync.Mutex
	batching bool // false: every write on its own (no atomic batches on this stream)
	maxBatch int  // lowered when the server's max_batch_size is lower
	minBatch int  // fewer writes go on their own (MinCommitBatch)
	pending  []*commitWrite
	inflight int
	busy     map[string]bool // subjects of the writes in commits in flight
	// recent and older are the sequences of the last writes stored on
	// subjects, newest first; older is dropped when recent fills.
	recent, older map[string]uint64
}

func newCommitter(st *Store, log *zap.Logger, maxPending int, batching bool) *committer {
	if maxPending <= 0 {
		maxPending = DefaultCommitMaxPending
	}
	if log == nil {
		log = zap.NewNop()
	}
	c := &committer{st: st, log: log, maxPending: maxPending, maxBatch: MaxCommitBatch, minBatch: MinCommitBatch, maxInflight: CommitsInFlight,
		maxWait: CommitMaxWait, timeout: service.WriteTimeout, resolveFor: resolveFor, batching: batching,
		busy: map[string]bool{}, recent: map[string]uint64{}, older: map[string]uint64{}}
	c.publishMsg = st.js.PublishMsg
	c.publishMsgBatch = func(ctx context.Context, msgs []*nats.Msg) (*jetstreamext.BatchAck, error) {
		// No flow control: the batch's messages go out back to back on one
		// connection and the commit's answer covers them all.
		return jetstreamext.PublishMsgBatch(ctx, st.js, msgs, jetstreamext.BatchFlowControl{AckFirst: false})
	}
	st.metrics.CommitBatching.Set(boolGauge(batching))
	if !batching {
		log.Warn("event log stream " + StreamEvents + " does not take atomic batches (allow_atomic): group commit is off, every event log write is published on its own; atomic batches need nats-server 2.12 or later")
	}
	return c
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// stopBatching turns batching off for good: every write on its own.
func (c *committer) stopBatching(err error) {
	c.mu.Lock()
	was := c.batching
	c.batching = false
	c.mu.Unlock()
	if was {
		c.st.metrics.CommitBatching.Set(0)
		c.log.Warn("event log server does not commit atomic batches: group commit is off, every event log write is published on its own; atomic batches need nats-server 2.12 or later", zap.Error(err))
	}
}

// lowerMaxBatch lowers the batch size to n (at least 1) after the server
// refused a larger batch as exceeding its max_batch_size.
func (c *committer) lowerMaxBatch(n int, err error) {
	n = max(n, 1)
	c.mu.Lock()
	lowered := n < c.maxBatch
	if lowered {
		c.maxBatch = n
	}
	c.mu.Unlock()
	if lowered {
		c.log.Warn("event log server refused a batch as too large (its max_batch_size): batches lowered", zap.Int("max_batch", n), zap.Error(err))
	}
}

// write commits msg, which expects the last message on its subject to be
// at expect, and returns its sequence once stored. A write handed in is
// committed whatever happens to ctx after (its answer is waited for); ctx
// already ended refuses it unwritten, as does a full queue or a wait of
// more than maxWait before a commit takes it (service.ErrOverloaded).
// The write's Nats-Msg-Id is set in h (readback.go).
func (c *committer) write(ctx context.Context, subject string, h nats.Header, data []byte, expect uint64) (uint64, error) {
	id := newMsgID()
	h.Set(jetstream.MsgIDHeader, id)
	w := &commitWrite{subject: subject, id: id, header: h, data: data, expect: expect, start: time.Now(), done: make(chan struct{})}
	c.mu.Lock()
	if err := ctx.Err(); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	if len(c.pending) >= c.maxPending {
		c.mu.Unlock()
		c.st.metrics.CommitRefused.Inc()
		return 0, service.ErrOverloaded
	}
	c.pending = append(c.pending, w)
	c.st.metrics.CommitQueue.Set(float64(len(c.pending)))
	batch := c.takeLocked()
	c.mu.Unlock()
	if len(batch) > 0 {
		// This writer commits what it took (its own write among it) and
		// leaves what gathered meanwhile to a goroutine.
		if next := c.commitAndTake(batch); len(next) > 0 {
			go c.drain(next)
		}
	}
	c.wait(w)
	return w.seq, w.err
}

// wait waits for w's answer. A write not taken by a commit within maxWait
// is taken out of the queue and refused unwritten (ErrOverloaded); once
// taken it is waited for to the end.
func (c *committer) wait(w *commitWrite) {
	if c.maxWait <= 0 {
		<-w.done
		return
	}
	t := time.NewTimer(c.maxWait)
	defer t.Stop()
	select {
	case <-w.done:
		return
	case <-t.C:
	}
	c.mu.Lock()
	if !w.taken {
		w.taken = true
		if i := slices.Index(c.pending, w); i >= 0 {
			c.pending = slices.Delete(c.pending, i, i+1)
		}
		c.st.metrics.CommitQueue.Set(float64(len(c.pending)))
		c.mu.Unlock()
		w.err = service.ErrOverloaded
		c.st.metrics.CommitRefused.Inc()
		c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "overloaded").Observe(time.Since(w.start).Seconds())
		close(w.done)
		return
	}
	c.mu.Unlock()
	<-w.done
}

// drain commits batch and whatever gathers after it, until nothing is
// pending.
func (c *committer) drain(batch []*commitWrite) {
	for len(batch) > 0 {
		batch = c.commitAndTake(batch)
	}
}

// commitAndTake commits batch (taken by takeLocked), answers its writes,
// and takes the next batch if one is pending.
func (c *committer) commitAndTake(batch []*commitWrite) []*commitWrite {
	if c.beforeCommit != nil {
		c.beforeCommit(len(batch))
	}
	c.commit(batch)
	c.mu.Lock()
	c.inflight--
	for _, w := range batch {
		delete(c.busy, w.subject)
		if w.err == nil {
			c.rememberLocked(w.subject, w.seq)
		}
	}
	next := c.takeLocked()
	c.mu.Unlock()
	for _, w := range batch {
		close(w.done)
	}
	return next
}

// takeLocked takes the next batch from the pending writes when a commit
// may start: in arrival order, at most maxBatch, one write per subject and
// none on a subject whose write is in flight. A pending write that expects
// an older sequence than one the committer has stored on its subject is
// answered ErrConflict at once (sequences only grow: it cannot succeed).
func (c *committer) takeLocked() []*commitWrite {
	if c.inflight >= c.maxInflight || len(c.pending) == 0 {
		return nil
	}
	var (
		batch []*commitWrite
		taken map[string]bool
		left  = c.pending[:0]
	)
	for _, w := range c.pending {
		if last, ok := c.lastLocked(w.subject); ok && w.expect < last {
			w.taken = true
			w.err = service.ErrConflict
			c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "conflict").Observe(time.Since(w.start).Seconds())
			close(w.done)
			continue
		}
		if len(batch) >= c.maxBatch || c.busy[w.subject] || taken[w.subject] {
			left = append(left, w)
			continue
		}
		if taken == nil {
			taken = map[string]bool{}
		}
		taken[w.subject] = true
		w.taken = true
		batch = append(batch, w)
	}
	clear(c.pending[len(left):])
	c.pending = left
	c.st.metrics.CommitQueue.Set(float64(len(c.pending)))
	if len(batch) > 0 {
		c.inflight++
		for _, w := range batch {
			c.busy[w.subject] = true
		}
	}
	return batch
}

func (c *committer) lastLocked(subject string) (uint64, bool) {
	if seq, ok := c.recent[subject]; ok {
		return seq, true
	}
	seq, ok := c.older[subject]
	return seq, ok
}

func (c *committer) rememberLocked(subject string, seq uint64) {
	if len(c.recent) >= recentSubjects {
		c.older, c.recent = c.recent, make(map[string]uint64, recentSubjects)
	}
	c.recent[subject] = seq
}

// commit stores batch, setting each write's seq or err (its done is closed
// by the caller).
func (c *committer) commit(batch []*commitWrite) {
	c.st.metrics.CommitBatchSize.Observe(float64(len(batch)))
	c.mu.Lock()
	batching, minBatch := c.batching, c.minBatch
	c.mu.Unlock()
	if len(batch) < max(2, minBatch) || !batching {
		// Each write on its own (no atomic batches here, or too few writes
		// to earn a batch's fixed cost): concurrently, each a commit of
		// its own.
		c.publishEach(batch)
		c.st.metrics.Commits.WithLabelValues("single").Add(float64(len(batch)))
		return
	}
	c.commitBatch(batch)
}

// commitBatch commits batch (two writes or more) as one atomic batch, and
// when the server refuses it whole (nothing of it stored) commits its
// writes again: in halves when it was refused for a stale expected
// sequence or as too large, else each on its own.
func (c *committer) commitBatch(batch []*commitWrite) {
	err := c.publishBatch(batch)
	if err == nil {
		c.st.metrics.Commits.WithLabelValues("batch").Inc()
		return
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		// No answer (a timeout, the connection lost) or one that cannot be
		// read: the batch may or may not be stored. Each write is resolved
		// on its own by its Nats-Msg-Id and expected sequence
		// (readback.go): answered with its sequence when stored, else as a
		// refused write, or an error (503) when that gets no answer
		// either. An acknowledgement that is not a batch's comes from a
		// server that does not know atomic batches (older than 2.12, which
		// stored the messages as ordinary ones): no batch is sent to it
		// again.
		if errors.Is(err, jetstreamext.ErrInvalidBatchAck) {
			c.stopBatching(err)
		}
		c.st.metrics.Commits.WithLabelValues("error").Inc()
		c.resolveEach(batch, err)
		return
	}
	switch {
	case apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishNotEnabled:
		// The stream does not take atomic batches (changed outside the
		// broker): every write on its own from now on.
		c.stopBatching(err)
	case apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishExceedsLimit:
		// More messages than the server's max_batch_size.
		c.lowerMaxBatch(len(batch)/2, err)
		c.commitHalves(batch)
		return
	case isWrongLastSequence(err) && len(batch) > bisectMin:
		// One write or more expected a stale sequence (a resent or
		// duplicate order the committer does not remember, another
		// instance's or client's write): find them by halves, so that the
		// others are still committed in batches.
		c.commitHalves(batch)
		return
	}
	// Refused whole, nothing of it stored: each write on its own gets its
	// own answer (ErrConflict for a stale one, StorageFullError for want of
	// space).
	c.publishEach(batch)
	c.st.metrics.Commits.WithLabelValues("fallback").Inc()
}

// commitHalves commits a refused batch again as two, one after the other
// (the server bounds the batches in flight).
func (c *committer) commitHalves(batch []*commitWrite) {
	c.st.metrics.Commits.WithLabelValues("split").Inc()
	half := len(batch) / 2
	for _, part := range [][]*commitWrite{batch[:half], batch[half:]} {
		c.mu.Lock()
		batching, maxBatch, minBatch := c.batching, c.maxBatch, c.minBatch
		c.mu.Unlock()
		switch {
		case len(part) < max(2, minBatch) || !batching:
			c.publishEach(part)
			c.st.metrics.Commits.WithLabelValues("single").Add(float64(len(part)))
		case len(part) > maxBatch:
			c.commitHalves(part)
		default:
			c.commitBatch(part)
		}
	}
}

// publishBatch publishes batch as one atomic batch, each message with its
// expected last subject sequence, under its own bound; on success each
// write's seq is set.
func (c *committer) publishBatch(batch []*commitWrite) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	msgs := make([]*nats.Msg, len(batch))
	for i, w := range batch {
		h := make(nats.Header, len(w.header)+5)
		for k, v := range w.header {
			h[k] = v
		}
		h.Set(jetstream.ExpectedStreamHeader, StreamEvents)
		h.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.expect, 10))
		msgs[i] = &nats.Msg{Subject: w.subject, Header: h, Data: w.data}
	}
	ack, err := c.publishMsgBatch(ctx, msgs)
	if err != nil {
		return err
	}
	if ack.BatchSize != uint64(len(batch)) || ack.Sequence < ack.BatchSize {
		return fmt.Errorf("batch of %d acknowledged as %d messages up to %d", len(batch), ack.BatchSize, ack.Sequence)
	}
	first := ack.Sequence - ack.BatchSize + 1
	for i, w := range batch {
		w.seq = first + uint64(i)
		c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "ok").Observe(time.Since(w.start).Seconds())
	}
	c.st.noteWritten(ack.Sequence)
	c.st.noteStored(StreamEvents)
	return nil
}

// publishEach publishes every write of batch on its own, concurrently
// (they are on distinct subjects), each with its own answer.
func (c *committer) publishEach(batch []*commitWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if len(batch) == 1 {
		c.publishOne(ctx, batch[0])
		return
	}
	var wg sync.WaitGroup
	for _, w := range batch {
		wg.Go(func() { c.publishOne(ctx, w) })
	}
	wg.Wait()
}

// publishOne publishes one write on its own with its expected last subject
// sequence, and maps its outcome as every event log write is; a publish
// without an answer is resolved (readback.go).
func (c *committer) publishOne(ctx context.Context, w *commitWrite) {
	msg := &nats.Msg{Subject: w.subject, Header: w.header, Data: w.data}
	ack, err := c.publishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(w.expect), jetstream.WithExpectStream(StreamEvents))
	if outcomeUnknown(err) {
		rctx, cancel := context.WithTimeout(context.Background(), c.resolveFor)
		defer cancel()
		c.resolve(rctx, w, err)
		return
	}
	if err != nil {
		c.fail(w, err)
		return
	}
	w.seq = ack.Sequence
	c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "ok").Observe(time.Since(w.start).Seconds())
	c.st.noteWritten(ack.Sequence)
	c.st.noteStored(StreamEvents)
}

// fail sets w's error from a refused or failed publish: ErrConflict for a
// lost compare-and-set, StorageFullError for want of space.
func (c *committer) fail(w *commitWrite, err error) {
	outcome := "error"
	switch {
	case isWrongLastSequence(err):
		outcome, err = "conflict", service.ErrConflict
	case IsStorageFull(err):
		outcome, err = "full", &StorageFullError{Stream: StreamEvents, Err: err}
		c.st.NoteStorageFull(StreamEvents)
	default:
		err = fmt.Errorf("publish %s event: %w", w.header.Get(HeaderEvent), err)
	}
	w.err = err
	c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, outcome).Observe(time.Since(w.start).Seconds())
}

// depth is the number of writes waiting to be committed.
func (c *committer) depth() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
