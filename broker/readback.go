package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// Writes whose outcome is unknown (issue 14).
//
// Every event log write carries a Nats-Msg-Id of its own (a NUID drawn
// when the write is handed to the committer: a write decided again after a
// lost compare-and-set is a new write with a new ID). When a commit gets
// no answer (a timeout, no responders, the connection lost while it was
// in flight, a batch acknowledgement that cannot be read), its writes may
// or may not be stored. None of them is answered by guess: each is
// resolved first, on its own, by publishing it again with the same
// Nats-Msg-Id and the same expected last subject sequence:
//
//   - stored now: the first publish had not landed (and cannot land any
//     more: its expected sequence is no longer the subject's last); the
//     write is answered with the new sequence;
//   - a duplicate (PubAck.Duplicate, a clustered stream checks the ID
//     first): the first publish landed; answered with its sequence;
//   - wrong last subject sequence (a single server checks the expected
//     sequence before the ID): the message that followed the expected
//     sequence on the subject is read back (a direct get of the first
//     message at or after expect+1 on the subject); carrying our ID, the
//     first publish landed and the write is answered with its sequence;
//     another's, another writer won the compare-and-set and the write is
//     answered service.ErrConflict (the CAS loop reads and decides again);
//   - refused definitely (the stream at its limit, the message too large:
//     definiteRefusal): not stored, answered as any refused write;
//   - no answer again, a duplicate still in process on the server, or a
//     temporary refusal (no leader, the server's or account's storage
//     exceeded, which the server checks before the ID): tried
//     again, with growing pauses, for resolveFor at most; then the write
//     fails with errUnresolved (service.ErrUnresolved; 503: the write may
//     or may not be stored; a retry with the same X-Request-ID decides
//     from what is).
//
// The expected last subject sequence is what makes this safe: the first
// publish and the second expect the same sequence on the same subject, so
// at most one of them can be stored, whatever order they reach the server
// in; the ID only tells which. An atomic batch that got no answer is
// resolved write by write (concurrently: distinct subjects): the batch
// either landed whole (each write a duplicate) or not at all (each stored
// now on its own, or refused, and the batch, should it still arrive, is
// refused whole for a stale sequence and for holding IDs already stored).
// The server keeps IDs for the event log's Duplicates window (2 minutes),
// far longer than a resolution.
//
// A nominated release writes through the same committer, so a release
// whose write was stored without an answer is answered the release (the
// write returns its sequence like any other); only an unresolved write
// reaches the release's own read-back (service.Lifecycle.readBack, which
// reads back only writes that failed with service.ErrUnresolved), which
// hands over what it finds released, else answers 503 and remembers the
// release for its retry.

// resolveFor bounds the resolution of one commit's unknown writes: with a
// write's wait to be taken (CommitMaxWait, 5 s) and its commit's own bound
// (service.WriteTimeout, 10 s), a write is answered within about 20 s,
// inside the HTTP write timeout (30 s by default). It covers a NATS
// reconnect (nats.go waits 2 s between attempts).
const resolveFor = 5 * time.Second

// errUnresolved is a write whose commit got no answer and whose resolution
// got none either within resolveFor: it may or may not be stored.
var errUnresolved = service.ErrUnresolved

// Outcomes of a resolution (eps_commit_unknown_total's resolved label).
const (
	resolvedStored     = "stored"     // not stored by the first publish; stored by the resolution
	resolvedDuplicate  = "duplicate"  // stored by the first publish (a duplicate, or read back)
	resolvedNotStored  = "not_stored" // not stored; refused definitely (the stream at its limit)
	resolvedConflict   = "conflict"   // not stored; another writer's write came first
	resolvedUnresolved = "unresolved" // no answer within resolveFor: 503
)

// newMsgID is the Nats-Msg-Id of a new write.
func newMsgID() string { return nuid.Next() }

// outcomeUnknown reports whether err, a publish's or a batch's error, leaves
// its writes' outcome unknown: anything but the server's own refusal.
func outcomeUnknown(err error) bool {
	var apiErr *jetstream.APIError
	return err != nil && !errors.As(err, &apiErr)
}

// resolveEach resolves every write of batch, whose commit failed with
// cause without an answer, concurrently (they are on distinct subjects).
func (c *committer) resolveEach(batch []*commitWrite, cause error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.resolveFor)
	defer cancel()
	done := make(chan struct{}, len(batch))
	for _, w := range batch {
		go func() {
			c.resolve(ctx, w, cause)
			done <- struct{}{}
		}()
	}
	for range batch {
		<-done
	}
}

// resolve sets w's seq or err from what became of it (see above).
func (c *committer) resolve(ctx context.Context, w *commitWrite, cause error) {
	w.seq, w.err = 0, nil
	c.st.metrics.CommitResolving.Inc()
	defer c.st.metrics.CommitResolving.Dec()
	pause := 50 * time.Millisecond
	for {
		outcome, err := c.resolveOnce(ctx, w)
		if outcome != "" {
			c.st.metrics.CommitUnknown.WithLabelValues(outcome).Inc()
			if outcome == resolvedStored || outcome == resolvedDuplicate {
				c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "ok").Observe(time.Since(w.start).Seconds())
			}
			return
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
			pause = min(2*pause, time.Second)
			continue
		case <-ctx.Done():
			t.Stop()
		}
		c.st.metrics.CommitUnknown.WithLabelValues(resolvedUnresolved).Inc()
		c.st.metrics.JetStreamPublish.WithLabelValues(StreamEvents, "error").Observe(time.Since(w.start).Seconds())
		// The last answer only as text: a temporary refusal of space
		// (10023) in the chain would be read as "nothing stored" (507).
		w.err = fmt.Errorf("publish %s event: %w: %w; reading back: %v", w.header.Get(HeaderEvent), errUnresolved, cause, err)
		return
	}
}

// resolveOnce is one attempt of resolve: its outcome, or "" and the error
// when it got no answer either.
func (c *committer) resolveOnce(ctx context.Context, w *commitWrite) (string, error) {
	msg := &nats.Msg{Subject: w.subject, Header: w.header, Data: w.data}
	ack, err := c.publishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(w.expect), jetstream.WithExpectStream(StreamEvents))
	switch {
	case err == nil:
		w.seq = ack.Sequence
		c.st.noteWritten(ack.Sequence)
		c.st.noteStored(StreamEvents)
		if ack.Duplicate {
			return resolvedDuplicate, nil
		}
		return resolvedStored, nil
	case isWrongLastSequence(err):
		// The subject moved on from expect: by our first publish, or by
		// another writer's. The message that followed expect tells.
		seq, id, found, gerr := c.st.followingMsg(ctx, w.subject, w.expect)
		switch {
		case gerr != nil:
			return "", gerr
		case found && id == w.id:
			w.seq = seq
			c.st.noteWritten(seq)
			c.st.noteStored(StreamEvents)
			return resolvedDuplicate, nil
		}
		c.fail(w, err)
		return resolvedConflict, nil
	case isDuplicateInProcess(err) || outcomeUnknown(err) || !definiteRefusal(err):
		// The first publish is still being processed, no answer again, or
		// a refusal that says nothing of the first publish.
		return "", err
	}
	c.fail(w, err)
	return resolvedNotStored, nil
}

// definiteRefusal reports whether err, the server's refusal of a
// resolution's publish, means that the first publish is not stored and
// cannot be any more. Both publishes go over the same connection, which
// keeps their order: by the time the second is answered, the first has
// reached the server or is lost. The server checks the Nats-Msg-Id (stored:
// a duplicate; proposed and not yet stored: "in process") before the
// expected sequence and the stream's own limits, so a refusal for those is
// definite: the stream at its maximum bytes or messages (discard new, never
// trimmed: the first copy does not fit either) or the message too large
// (the same size). A temporary refusal is not: the server's or the
// account's storage exceeded (10023, 10002: checked before the ID, while
// the first copy may be proposed and still land), no leader, a store that
// failed, or any other unavailable answer (IsUnavailable): the resolution
// tries again, and unresolved at its bound, the write is ErrUnresolved
// (503, "may have been stored"; a release's own read-back covers it).
func definiteRefusal(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrInsufficientResources, jsErrAccountResourcesExceeded:
		return false
	case jsErrStreamStoreFailed:
		d := strings.ToLower(apiErr.Description)
		return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") || strings.Contains(d, "too large")
	}
	return !IsUnavailable(err)
}

// isDuplicateInProcess reports whether err is the server's "duplicate
// message id is in process": a message with the ID is proposed to the
// stream's peers and not yet stored or refused.
func isDuplicateInProcess(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrCodeDuplicateInProcess
}

// jsErrCodeDuplicateInProcess is nats-server's JSStreamDuplicateMessageConflict
// (10158), which nats.go does not name.
const jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158

// followingMsg reads the first message on subject after sequence after:
// its sequence and Nats-Msg-Id, found false when there is none. It asks the
// stream's leader (leaderGet: the stored-message API, not a direct get,
// which any replica answers, perhaps one that has not applied the latest
// messages yet), so that a message the stream acknowledged is seen.
func (s *Store) followingMsg(ctx context.Context, subject string, after uint64) (seq uint64, id string, found bool, err error) {
	m, err := s.leaderGet(ctx, StreamEvents, leaderGetRequest{Seq: after + 1, NextFor: subject})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("read back %s: %w", subject, err)
	}
	return m.Sequence, m.Header.Get(jetstream.MsgIDHeader), true, nil
}

// apiPrefix is the JetStream API prefix of opts ("$JS.API." by default).
func apiPrefix(opts jetstream.JetStreamOptions) string {
	switch {
	case opts.Domain != "":
		return "$JS." + opts.Domain + ".API."
	case opts.APIPrefix != "":
		return strings.TrimSuffix(opts.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}
