package broker

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Streams, subjects and buckets the broker creates. README.md lists them for
// operators.
const (
	// StreamEvents is the event log: every accepted message about a
	// prescription, on the prescription's own subject. The latest message on
	// a subject is the prescription's current state, and publishing with the
	// expected last subject sequence is the compare-and-set that serialises
	// updates to one prescription.
	StreamEvents = "EPS_EVENTS"
	// SubjectRx is the subject prefix of the event log: eps.rx.<short ID>.
	SubjectRx = "eps.rx."
	// legacyStreamQueue held the dispensers' ready queues before they
	// were kept in memory (the tracker index): a broker that finds it
	// removes it (removeLegacyQueue).
	legacyStreamQueue = "EPS_QUEUE"
	// SubjectNotifyDispenser is the prefix of the per-dispenser notification
	// subjects: eps.notify.dispenser.<ODS>.<event>.
	SubjectNotifyDispenser = "eps.notify.dispenser."
	// SubjectNotifyPrescriber is the prefix of the per-prescriber
	// notification subjects: eps.notify.prescriber.<ODS>.<event>.
	SubjectNotifyPrescriber = "eps.notify.prescriber."
	// BucketRequests remembers X-Request-ID keys and their answers.
	BucketRequests = "EPS_REQUESTS"
	// ConsumerQueueProjector is the durable consumer of StreamEvents that
	// stores each event's notifications (notify.go). It kept the ready
	// queues' stream before the queues moved into memory, and keeps its
	// name so that existing deployments go on where it stopped.
	ConsumerQueueProjector = "eps-queue-projector"
	// StreamAudit records every tracker look-up on
	// eps.audit.<NHS number or "none">.<user key>.
	StreamAudit = "EPS_AUDIT"
	// SubjectAudit is the subject prefix of the audit trail.
	SubjectAudit = "eps.audit."
	// BucketSessions holds the tracker page's sessions; an entry expires
	// after SessionIdle without use.
	BucketSessions = "EPS_SESSIONS"
	// SessionIdle is how long a tracker page session lives without use.
	SessionIdle = 15 * time.Minute
)

// Headers of event log messages. The message data is the original request
// body, byte for byte.
const (
	HeaderEvent     = "Eps-Event"      // the event type, e.g. prescription-order
	HeaderMessageID = "Eps-Message-Id" // the FHIR message's Bundle.identifier
	HeaderRecord    = "Eps-Record"     // JSON of the prescription after the event
)

// Store is the broker's JetStream storage.
type Store struct {
	js          jetstream.JetStream
	events      jetstream.Stream
	requests    jetstream.KeyValue
	audit       jetstream.Stream
	sessions    jetstream.KeyValue
	nominations jetstream.KeyValue
	metrics     *Metrics
	maxMsg      int
	limits      StorageLimits
	fullCount   *prometheus.CounterVec // writes refused for want of space, by stream
	// full is when a write to each stream was last refused for want of
	// space (cleared by the next write that is stored).
	full struct {
		sync.Mutex
		m map[string]time.Time
	}
	// pseudo names patients in subjects and keys (pseudonym.go);
	// auditPlainUntil is the last audit sequence that may name one in clear.
	pseudo          *Pseudonyms
	auditPlainUntil uint64
	// lastSeq is the highest event log sequence this process has written:
	// readers of projections wait for it to read their own writes.
	lastSeq atomic.Uint64
	// recent are the event log messages read last (readcache.go).
	recent recentEvents
	// commit commits the event log's writes (commit.go).
	commit *committer
	// health is the last check of the streams' leaders (unavailable.go).
	health healthCache
	// replicas of the streams and buckets (replicas.go keptReplicas).
	replicas int
	// quorum is since when the health checks fail (quorum.go).
	quorum quorumState
}

// LastWritten is the highest event log sequence this process has written.
func (s *Store) LastWritten() uint64 { return s.lastSeq.Load() }

func (s *Store) noteWritten(seq uint64) {
	for {
		cur := s.lastSeq.Load()
		if seq <= cur || s.lastSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// StoreConfig sets how the streams and buckets are created.
type StoreConfig struct {
	Replicas       int
	IdempotencyTTL time.Duration
	MaxMessage     int32
	// Limits are the most bytes each stream keeps; Budget and Alert go
	// with them (see StorageLimits).
	Limits StorageLimits
	// Pseudonyms stand for NHS numbers in subjects and keys (required).
	Pseudonyms *Pseudonyms
	// NotifyMaxAge is how long StreamNotify keeps a notification (0: 7 days).
	NotifyMaxAge time.Duration
	// CommitMaxPending is the most event log writes that wait to be
	// committed; more are refused with service.ErrOverloaded (0:
	// DefaultCommitMaxPending). See commit.go.
	CommitMaxPending int
	// Logger gets the committer's warnings (batching off, batch size
	// lowered); nil: none.
	Logger *zap.Logger
	// QuorumGrace is how long the streams may be without a leader before
	// Healthy reports it (0: DefaultQuorumGrace; see quorum.go).
	QuorumGrace time.Duration
}

// OpenStore creates (or updates) the streams and buckets the broker needs.
func OpenStore(ctx context.Context, nc *nats.Conn, cfg StoreConfig, m *Metrics) (*Store, error) {
	// An async publish (the projections') that gets no answer, e.g. while a
	// cluster has lost its quorum, fails after this instead of waiting forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, err
	}
	// The streams that keep what cannot be rebuilt deny deleting and purging
	// messages. NATS will not lift those settings on an update; a stream
	// found without them was deleted and made again, or changed outside
	// NATS, and may have lost messages: the broker does not start on it.
	for _, p := range protectedStreams {
		if err := checkDenySettings(ctx, js, p); err != nil {
			return nil, err
		}
	}
	// Never fewer replicas than the broker's streams have (replicas.go).
	if cfg.Replicas, err = keptReplicas(ctx, js, max(cfg.Replicas, 1), cfg.Logger); err != nil {
		return nil, err
	}
	lim, err := resolveLimits(ctx, js, cfg.Limits)
	if err != nil {
		return nil, err
	}
	eventsMsg := cfg.MaxMessage
	if l := lim.Events; l > 0 && int64(eventsMsg) > l {
		eventsMsg = int32(l)
	}
	events, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "EPS event log: every accepted message per prescription (data: original bytes; header Eps-Record: state after it)",
		Subjects:    []string{SubjectRx + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // never drop an acknowledged prescription to make room
		Duplicates:  2 * time.Minute,
		MaxMsgSize:  eventsMsg,
		MaxBytes:    natsLimit(lim.Events),
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
		// The group commit (commit.go) commits concurrent writes as one
		// atomic batch; an existing stream is updated to allow it.
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, limitError(StreamEvents, "events-max-bytes", lim.Events, err)
	}
	if _, err := openNotify(ctx, js, cfg.Replicas, cfg.NotifyMaxAge, lim.Notify); err != nil {
		return nil, limitError(StreamNotify, "notify-max-bytes", lim.Notify, err)
	}
	requests, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketRequests,
		Description: "X-Request-ID idempotency keys and their answers",
		TTL:         cfg.IdempotencyTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
		MaxBytes:    natsLimit(lim.Requests),
	})
	if err != nil {
		return nil, limitError("KV_"+BucketRequests, "requests-max-bytes", lim.Requests, err)
	}
	audit, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamAudit,
		Description: "Tracker look-ups: who, their organisation, what was searched, when, how many results",
		Subjects:    []string{SubjectAudit + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    natsLimit(lim.Audit),
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
	})
	if err != nil {
		return nil, limitError(StreamAudit, "audit-max-bytes", lim.Audit, err)
	}
	sessions, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketSessions,
		Description: "Tracker page sessions (keys are hashes of the session cookies)",
		TTL:         SessionIdle,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		History:     1,
		MaxBytes:    natsLimit(lim.Sessions),
	})
	if err != nil {
		return nil, limitError("KV_"+BucketSessions, "sessions-max-bytes", lim.Sessions, err)
	}
	if err := createDeadStream(ctx, js, cfg.Replicas, lim.Dead); err != nil {
		return nil, limitError(StreamDead, "dead-max-bytes", lim.Dead, err)
	}
	nominations, err := openNominations(ctx, js, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	// The nominations bucket is only opened when it exists (see
	// openNominations): its limit is set on its stream here.
	if err := limitStream(ctx, js, "KV_"+BucketNominations, lim.Nominations); err != nil {
		return nil, limitError("KV_"+BucketNominations, "nominations-max-bytes", lim.Nominations, err)
	}
	if err := scaleStreams(ctx, js, max(cfg.Replicas, 1), cfg.Logger, ownStreams()...); err != nil {
		return nil, err
	}
	st := &Store{js: js, replicas: cfg.Replicas, events: events, requests: requests, audit: audit, sessions: sessions,
		nominations: nominations, metrics: m, maxMsg: int(min(cfg.MaxMessage, eventsMsg)), limits: lim}
	st.full.m = map[string]time.Time{}
	st.quorum.grace = cfg.QuorumGrace
	if st.quorum.grace <= 0 {
		st.quorum.grace = DefaultQuorumGrace
	}
	// A server older than 2.12 ignores AllowAtomicPublish: batching only
	// when the stream it answered keeps it (commit.go).
	st.commit = newCommitter(st, cfg.Logger, cfg.CommitMaxPending, batchingFor(events.CachedInfo().Config))
	st.fullCount = m.registerStorage(st, lim.Alert)
	if err := st.usePseudonyms(ctx, cfg.Pseudonyms); err != nil {
		return nil, err
	}
	return st, nil
}

// protectedStream is a stream whose deny settings the broker requires.
type protectedStream struct {
	name                  string
	denyDelete, denyPurge bool
}

// protectedStreams are checked before the broker opens them. The nominations
// bucket's stream denies deletes (the key-value client sets it) but not
// purges: key-value roll-ups need them.
var protectedStreams = []protectedStream{
	{StreamEvents, true, true},
	{StreamAudit, true, true},
	{"KV_" + BucketNominations, true, false},
}

// ErrDenySettingsChanged is a protected stream found without its deny
// settings.
var ErrDenySettingsChanged = errors.New("stream deny settings changed")

// checkDenySettings refuses an existing stream that allows what it must
// deny. A stream that does not exist yet is made by OpenStore.
func checkDenySettings(ctx context.Context, js jetstream.JetStream, p protectedStream) error {
	st, err := js.Stream(ctx, p.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", p.name, err)
	}
	cfg := st.CachedInfo().Config
	var lost []string
	if p.denyDelete && !cfg.DenyDelete {
		lost = append(lost, "deny_delete")
	}
	if p.denyPurge && !cfg.DenyPurge {
		lost = append(lost, "deny_purge")
	}
	if len(lost) == 0 {
		return nil
	}
	return fmt.Errorf("%w: stream %s exists without %s (created %s): it was deleted and made again, or changed, outside the broker, "+
		"and messages may have been deleted; the broker will not start on it. Check the stream (nats stream info %s), "+
		"restore it from a backup, or set %s on it once you have accounted for its contents",
		ErrDenySettingsChanged, p.name, strings.Join(lost, " and "), st.CachedInfo().Created.UTC().Format(time.RFC3339),
		p.name, strings.Join(lost, " and "))
}

// JetStream is the store's JetStream context.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// appendEvent publishes an event about prescription rec.ID and returns its
// sequence once JetStream has stored it under the configured sync policy
// (alone or in an atomic batch with other writes: commit.go).
// expectSeq is the sequence of the state the caller decided from (0: the
// prescription must be new); service.ErrConflict when it is no longer the latest.
// Only the compare-and-set helper (cas.go) calls it.
func (s *Store) appendEvent(ctx context.Context, event, messageID string, rec *rx.Prescription, body []byte, expectSeq uint64) (uint64, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(rec); err != nil {
		return 0, fmt.Errorf("encode record: %w", err)
	}
	recJSON := bytes.TrimRight(buf.Bytes(), "\n")
	// Headers and data must fit in one message; leave room for the header
	// names, the subject and the expected-sequence headers.
	if len(recJSON)+len(body)+len(messageID)+1024 > s.maxMsg {
		return 0, service.ErrTooLarge
	}
	h := nats.Header{}
	h.Set(HeaderEvent, event)
	h.Set(HeaderMessageID, messageID)
	h.Set(HeaderRecord, string(recJSON))
	// The committer (commit.go) commits it, alone or in an atomic batch
	// with other writes, and answers once JetStream has stored it; it maps
	// a lost compare-and-set to service.ErrConflict and a full stream to
	// StorageFullError, and refuses it unwritten with
	// service.ErrOverloaded when too many writes are waiting.
	return s.commit.write(ctx, SubjectRx+rec.ID, h, body, expectSeq)
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// Current returns the latest event about a prescription: its current state.
// Messages on the prescription's subject that are not the broker's events
// (DecodeEvent refuses them: a foreign or corrupt message published by a
// plain NATS client) are skipped; a subject holding none of the broker's
// is ErrNotFound.
func (s *Store) Current(ctx context.Context, id string) (*service.Event, error) {
	ev, _, err := s.current(ctx, id)
	if err == nil && ev == nil {
		err = service.ErrNotFound
	}
	return ev, err
}

// current is the latest of the broker's events on prescription id's
// subject (nil when there is none) and the sequence of the subject's last
// message (0: none), which a compare-and-set write expects. Only when the
// last message is not an event are the subject's messages read (a
// prescription has at most a few hundred), up to that last message at
// least, whichever replica the scan reads. On a replicated event log the
// last message is the stream leader's (lastEventOn, leaderget.go): every
// decision reads what was acknowledged before it began, never a
// follower's older state or its "not found" for a prescription another
// instance just stored.
func (s *Store) current(ctx context.Context, id string) (*service.Event, uint64, error) {
	subject := SubjectRx + id
	raw, err := s.lastEventOn(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read prescription: %w", err)
	}
	if ev, err := DecodeEvent(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data); err == nil {
		s.recent.put(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data)
		return ev, raw.Sequence, nil
	}
	var latest *service.Event
	last := raw.Sequence
	err = s.scanStreamUntil(ctx, "prescription", StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}, raw.Sequence, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		last = max(last, md.Sequence.Stream)
		if ev, err := DecodeEvent(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers(), m.Data()); err == nil {
			latest = ev
		}
		return true, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return latest, last, nil
}

// Event returns the event log message at seq; a message that is not one of
// the broker's events (see DecodeEvent) is ErrNotFound. On a replicated
// event log it is read from the stream leader (eventAt, leaderget.go), so
// that an event just acknowledged is found.
func (s *Store) Event(ctx context.Context, seq uint64) (*service.Event, error) {
	if m, ok := s.recent.get(seq); ok {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if ev, err := DecodeEvent(m.seq, m.time, m.subject, m.header, m.data); err == nil {
			return ev, nil
		}
	}
	raw, err := s.eventAt(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, service.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read event %d: %w", seq, err)
	}
	ev, err := DecodeEvent(raw.Sequence, raw.Time, raw.Subject, raw.Header, raw.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", service.ErrNotFound, err)
	}
	return ev, nil
}

// decodeStored turns a stored message into a service.Event. An order's own
// record carries OrderSeq 0: it is filled with the message's sequence.
func decodeStored(seq uint64, t time.Time, h nats.Header, data []byte) (*service.Event, error) {
	ev := &service.Event{Seq: seq, Time: t, Event: h.Get(HeaderEvent), MessageID: h.Get(HeaderMessageID), Body: data}
	var rec rx.Prescription
	if err := json.Unmarshal([]byte(h.Get(HeaderRecord)), &rec); err != nil {
		return nil, fmt.Errorf("event %d: bad %s header: %w", seq, HeaderRecord, err)
	}
	if rec.OrderSeq == 0 {
		rec.OrderSeq = seq
	}
	ev.Record = &rec
	return ev, nil
}

// Healthy reports whether every stream and bucket the broker writes
// answers and has a leader (unavailable.go: checkLeaders, its answer kept
// a second); the error names the first that does not. The streams are the
// store's own (ownStreams) and those added with AddHealthStream: the
// scheduler's lease bucket KV_EPS_LEASES, once the lease opens it
// (SingleActiveScheduler). A leader election (one node of three lost: a
// majority remains) leaves streams without a leader for seconds while the
// others still write, so the checks must have failed for longer than the
// quorum grace (quorum.go) before Healthy says so: otherwise every
// instance would leave a load balancer at once. Requests meanwhile answer
// 503 with Retry-After one by one.
func (s *Store) Healthy(ctx context.Context) error {
	return s.quorum.observe(s.checkQuorum(ctx), time.Now())
}

// SubjectToken maps an ODS code to the one NATS subject token that stands
// for it in every subject the broker builds (notifications). Spine
// allows ODS codes of 1 to 8 letters, digits and '-', which are safe in a
// subject and stay as they are; a code holding anything else (which
// validation should have refused, but subjects do not rely on it) is
// encoded as '_' and the hexadecimal of its bytes, which holds no '.', '*',
// '>' or white space and cannot be the token of another code ('_' is not an
// ODS character). "*" stays the wildcard.
func SubjectToken(ods string) string {
	if ods == "*" {
		return ods
	}
	safe := ods != ""
	for i := 0; safe && i < len(ods); i++ {
		c := ods[i]
		safe = c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-'
	}
	if safe {
		return ods
	}
	return "_" + hex.EncodeToString([]byte(ods))
}

// DispenserNotifySubject is eps.notify.dispenser.<ODS token>.<event>.
func DispenserNotifySubject(ods, event string) string {
	return SubjectNotifyDispenser + SubjectToken(ods) + "." + event
}

// PrescriberNotifySubject is eps.notify.prescriber.<ODS token>.<event>.
func PrescriberNotifySubject(ods, event string) string {
	return SubjectNotifyPrescriber + SubjectToken(ods) + "." + event
}
