package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reads from the stream leader (issue 14).
//
// The event log allows direct gets (AllowDirect), which any replica of a
// replicated stream answers: a follower joins the direct-get queue group
// once it is 90% synchronised, and every follower lags its leader a
// little, one cut off from its leader as long as it is cut off. A read
// that decides something (the current state a compare-and-set write is
// decided from, an event read by its sequence, the log's last sequence a
// scan must reach) must see everything acknowledged before it began, so
// on a replicated event log it asks the stream leader through the
// stored-message API ($JS.API.STREAM.MSG.GET.<stream>), which only the
// leader answers (a member that knows no leader answers "temporarily
// unavailable"; one that knows another leader stays silent, and the
// request times out): a follower never answers it, whatever it holds.
// A single replica keeps the direct get: it is the only copy, so its
// answer is the leader's, and the direct get is cheaper.

// leaderGetRequest is a request of the stored-message API (nats-server's
// JSApiMsgGetRequest): one of seq, last_by_subj, or next_by_subj with seq
// the first sequence to look from.
type leaderGetRequest struct {
	Seq       uint64 `json:"seq,omitempty"`
	LastFor   string `json:"last_by_subj,omitempty"`
	NextFor   string `json:"next_by_subj,omitempty"`
	NoHeaders bool   `json:"no_hdr,omitempty"`
}

// leaderGetResponse is the stored-message API's answer (nats-server's
// JSApiMsgGetResponse): an error, or the message.
type leaderGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// leaderGet reads one message of stream from its leader: the message at
// req.Seq, the last on req.LastFor (a subject, or a wildcard: ">" is the
// stream's last message), or the first on req.NextFor at or after req.Seq.
// None is jetstream.ErrMsgNotFound. The server's refusals come as the
// *jetstream.APIError it sent (IsUnavailable tells those that mean it
// cannot answer now: no leader, no quorum); no answer is the request's
// error (a timeout, no responders). A ctx without a deadline is bounded by
// the JetStream context's default timeout, as its own requests are.
func (s *Store) leaderGet(ctx context.Context, stream string, req leaderGetRequest) (*jetstream.RawStreamMsg, error) {
	opts := s.js.Options()
	if _, ok := ctx.Deadline(); !ok && opts.DefaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.DefaultTimeout)
		defer cancel()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reply, err := s.js.Conn().RequestWithContext(ctx, apiPrefix(opts)+"STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, err
	}
	return decodeLeaderGet(reply.Data)
}

// errNoMessageInAnswer is an answer of the stored-message API that holds
// neither an error nor a message.
var errNoMessageInAnswer = errors.New("an answer without a message")

// decodeLeaderGet decodes an answer of the stored-message API.
func decodeLeaderGet(data []byte) (*jetstream.RawStreamMsg, error) {
	var resp leaderGetResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("stored message answer: %w", err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	m := resp.Message
	if m == nil {
		return nil, fmt.Errorf("stored message answer: %w", errNoMessageInAnswer)
	}
	var h nats.Header
	if len(m.Header) > 0 {
		var err error
		if h, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("stored message %d: headers: %w", m.Sequence, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Header: h, Data: m.Data, Time: m.Time}, nil
}

// eventsReplicated reports whether the event log has more than one
// replica, as the stream's configuration was last read (at the store's
// open, and each time the store asks for the stream's info since: the
// tracker index's catch-up does before every nominated release).
func (s *Store) eventsReplicated() bool {
	info := s.events.CachedInfo()
	return info != nil && info.Config.Replicas > 1
}

// lastEventOn is the last event log message on subject: from the stream
// leader when the log is replicated, else by a direct get.
func (s *Store) lastEventOn(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	if s.eventsReplicated() {
		return s.leaderGet(ctx, StreamEvents, leaderGetRequest{LastFor: subject})
	}
	return s.events.GetLastMsgForSubject(ctx, subject)
}

// eventAt is the event log message at seq: from the stream leader when
// the log is replicated, else by a direct get.
func (s *Store) eventAt(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	if s.eventsReplicated() {
		return s.leaderGet(ctx, StreamEvents, leaderGetRequest{Seq: seq})
	}
	return s.events.GetMsg(ctx, seq)
}

// leaderLastSeq is the event log's last sequence as its leader holds it
// (0: the log is empty): a scan of a replica must reach it to have read
// everything acknowledged before the scan began. Asked as the last
// message on ">" (every subject of the log), which only the leader
// answers; a stream info request would not do, as a member that knows no
// leader answers it from its own store. It relies on the event log never
// removing a message (DenyDelete, DenyPurge, no MaxAge: store.go), so the
// last message is the last sequence; TestEventLogKeepsEveryMessage holds
// the stream's configuration to that.
func (s *Store) leaderLastSeq(ctx context.Context) (uint64, error) {
	m, err := s.leaderGet(ctx, StreamEvents, leaderGetRequest{LastFor: ">", NoHeaders: true})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}
