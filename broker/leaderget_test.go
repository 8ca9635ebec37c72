package broker

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/internal/natscluster"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The stored-message API's answers, as nats-server sends them, decode to
// the message (subject, sequence, headers, data, time), to
// jetstream.ErrMsgNotFound, or to the server's error as a
// *jetstream.APIError that IsUnavailable classifies; a malformed answer is
// an error, never a message.
func TestDecodeLeaderGet(t *testing.T) {
	hdrs := base64.StdEncoding.EncodeToString([]byte("NATS/1.0\r\nEps-Event: prescription-order\r\nNats-Msg-Id: abc\r\n\r\n"))
	data := base64.StdEncoding.EncodeToString([]byte(`{"resourceType":"Bundle"}`))
	found := fmt.Sprintf(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"eps.rx.A1","seq":42,"hdrs":%q,"data":%q,"time":"2026-12-02T05:00:00.123456789Z"}}`, hdrs, data)
	m, err := decodeLeaderGet([]byte(found))
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "eps.rx.A1" || m.Sequence != 42 || string(m.Data) != `{"resourceType":"Bundle"}` ||
		!m.Time.Equal(time.Date(2026, 12, 2, 5, 0, 0, 123456789, time.UTC)) {
		t.Errorf("decoded %+v", m)
	}
	if m.Header.Get(HeaderEvent) != "prescription-order" || m.Header.Get(jetstream.MsgIDHeader) != "abc" {
		t.Errorf("headers %v", m.Header)
	}

	noHeaders, err := decodeLeaderGet([]byte(`{"message":{"subject":"eps.rx.A1","seq":7,"time":"2026-12-02T05:00:00Z"}}`))
	if err != nil || noHeaders.Sequence != 7 || noHeaders.Header != nil || len(noHeaders.Data) != 0 {
		t.Errorf("a message without headers or data: %+v, %v", noHeaders, err)
	}

	if _, err := decodeLeaderGet([]byte(`{"error":{"code":404,"err_code":10037,"description":"no message found"}}`)); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("not found: %v, want jetstream.ErrMsgNotFound", err)
	}

	// No leader, no quorum: 503 for the client, never "not found".
	_, err = decodeLeaderGet([]byte(`{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10008 || errors.Is(err, jetstream.ErrMsgNotFound) || !IsUnavailable(err) {
		t.Errorf("temporarily unavailable: %v, want the server's error, unavailable", err)
	}
	// A refusal that is not about availability stays an error of its own.
	_, err = decodeLeaderGet([]byte(`{"error":{"code":400,"err_code":10003,"description":"bad request"}}`))
	if !errors.As(err, &apiErr) || apiErr.ErrorCode != 10003 || IsUnavailable(err) {
		t.Errorf("bad request: %v, want the server's error, not unavailable", err)
	}

	for name, answer := range map[string]string{
		"no message":  `{"type":"io.nats.jetstream.api.v1.stream_msg_get_response"}`,
		"not json":    `NATS/1.0 503`,
		"bad headers": fmt.Sprintf(`{"message":{"subject":"eps.rx.A1","seq":1,"hdrs":%q,"time":"2026-12-02T05:00:00Z"}}`, base64.StdEncoding.EncodeToString([]byte("HTTP/1.1 200\r\n\r\n"))),
	} {
		if m, err := decodeLeaderGet([]byte(answer)); err == nil || m != nil {
			t.Errorf("%s: %+v, %v; want an error", name, m, err)
		}
	}
}

// apiRequests watches the JetStream API requests of the event log's and
// the X-Request-ID bucket's message reads that cross a NATS server: direct
// gets (any replica answers) and stored-message requests (the leader
// answers).
type apiRequests struct {
	direct, leader []*nats.Subscription
}

func watchReads(t testing.TB, nc *nats.Conn) *apiRequests {
	t.Helper()
	r := &apiRequests{}
	for _, stream := range []string{StreamEvents, "KV_" + BucketRequests} {
		for subj, subs := range map[string]*[]*nats.Subscription{
			"$JS.API.DIRECT.GET." + stream + ".>": &r.direct,
			"$JS.API.DIRECT.GET." + stream:        &r.direct,
			"$JS.API.STREAM.MSG.GET." + stream:    &r.leader,
		} {
			sub, err := nc.SubscribeSync(subj)
			if err != nil {
				t.Fatal(err)
			}
			*subs = append(*subs, sub)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// counts returns the requests seen so far, once every request sent
// before it was called has reached the watcher: a flush of the sender's
// connection (the server has routed them), then of the watcher's (they
// came before its PONG, so they are queued on its subscriptions).
func (r *apiRequests) counts(t testing.TB, sender, watcher *nats.Conn) (direct, leader int) {
	t.Helper()
	if err := sender.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	count := func(subs []*nats.Subscription) int {
		n := 0
		for _, s := range subs {
			p, _, err := s.Pending()
			if err != nil {
				t.Fatal(err)
			}
			n += p
		}
		return n
	}
	return count(r.direct), count(r.leader)
}

// singleServer starts a JetStream server (not clustered) on loopback and
// returns its client URL.
func singleServer(t testing.TB) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), SyncAlways: true, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// storeOn opens a store with replicas on the NATS server(s) at urls ("":
// a fresh embedded server) and returns it with its connection.
func storeOn(t testing.TB, urls string, replicas int) (*Store, *nats.Conn) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.NATSURL = urls
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := ConnectNATS(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	st, err := OpenStore(ctx, n.Conn, StoreConfig{Replicas: replicas, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20,
		Pseudonyms: testPseudonyms(t, 7)}, NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	return st, n.Conn
}

// storeEvents writes two events on prescription id (an order, then a
// release under messageID) and returns their sequences.
func storeEvents(t testing.TB, ctx context.Context, st *Store, id, messageID string) (order, release uint64) {
	t.Helper()
	order, err := st.appendEvent(ctx, rx.EventOrder, "order-"+id, &rx.Prescription{ID: id}, []byte("order bytes"), 0)
	if err != nil {
		t.Fatal(err)
	}
	release, err = st.appendEvent(ctx, rx.EventNominatedRelease, messageID, &rx.Prescription{ID: id, OrderSeq: order}, []byte("release bytes"), order)
	if err != nil {
		t.Fatal(err)
	}
	return order, release
}

// On a single server (R1) the event log's reads stay direct gets: the
// only replica is consistent, and a direct get costs less. The leader
// read (leaderGet) answers the same there: by sequence, last on a subject,
// next on a subject, the log's last, and "not found".
func TestR1ReadsStayDirect(t *testing.T) {
	st, nc := storeOn(t, singleServer(t), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	order, release := storeEvents(t, ctx, st, "R1-A", "rel-1")
	if st.eventsReplicated() {
		t.Fatal("an R1 event log counted as replicated")
	}
	watcher, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	w := watchReads(t, watcher)
	cur, err := st.Current(ctx, "R1-A")
	if err != nil || cur.Seq != release {
		t.Fatalf("current: %+v, %v; want the release at %d", cur, err, release)
	}
	if ev, err := st.Event(ctx, order); err != nil || ev.Seq != order || ev.Event != rx.EventOrder || string(ev.Body) != "order bytes" {
		t.Fatalf("event %d: %+v, %v", order, ev, err)
	}
	if _, err := st.Current(ctx, "R1-NONE"); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("a prescription never stored: %v, want not found", err)
	}
	reserveTwice(t, ctx, st)
	// 3 of the event log, 3 of the bucket, and the key-value client's own
	// (see reserveTwice).
	if direct, leader := w.counts(t, nc, watcher); direct != 7 || leader != 0 {
		t.Errorf("R1 reads: %d direct gets, %d leader reads; want 7 direct, 0 leader", direct, leader)
	}

	for name, c := range map[string]struct {
		req  leaderGetRequest
		want uint64
	}{
		"by sequence":     {leaderGetRequest{Seq: order}, order},
		"last on subject": {leaderGetRequest{LastFor: SubjectRx + "R1-A"}, release},
		"next on subject": {leaderGetRequest{Seq: order + 1, NextFor: SubjectRx + "R1-A"}, release},
		"log's last":      {leaderGetRequest{LastFor: ">", NoHeaders: true}, release},
	} {
		m, err := st.leaderGet(ctx, StreamEvents, c.req)
		if err != nil || m.Sequence != c.want || m.Subject != SubjectRx+"R1-A" {
			t.Errorf("%s: %+v, %v; want sequence %d", name, m, err, c.want)
			continue
		}
		direct, err := st.events.GetMsg(ctx, m.Sequence)
		if err != nil {
			t.Fatal(err)
		}
		if !c.req.NoHeaders && (m.Header.Get(HeaderRecord) != direct.Header.Get(HeaderRecord) || m.Header.Get(HeaderEvent) != direct.Header.Get(HeaderEvent)) {
			t.Errorf("%s: headers %v, the direct get's %v", name, m.Header, direct.Header)
		}
		if string(m.Data) != string(direct.Data) || !m.Time.Equal(direct.Time) {
			t.Errorf("%s: data %q at %v, the direct get's %q at %v", name, m.Data, m.Time, direct.Data, direct.Time)
		}
	}
	if _, err := st.leaderGet(ctx, StreamEvents, leaderGetRequest{Seq: release + 100}); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a sequence past the log: %v, want not found", err)
	}
	if _, err := st.leaderGet(ctx, StreamEvents, leaderGetRequest{LastFor: SubjectRx + "R1-NONE"}); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("a subject without messages: %v, want not found", err)
	}
	if seq, err := st.leaderLastSeq(ctx); err != nil || seq != release {
		t.Errorf("the log's last sequence: %d, %v; want %d", seq, err, release)
	}
	if seq, _, found, err := st.followingMsg(ctx, SubjectRx+"R1-A", order); err != nil || !found || seq != release {
		t.Errorf("the message after the order: %d %v %v; want the release at %d", seq, found, err, release)
	}
	if _, _, found, err := st.followingMsg(ctx, SubjectRx+"R1-A", release); err != nil || found {
		t.Errorf("the message after the release: found %v, %v; want none", found, err)
	}
}

// On a replicated event log (R3 on a three-node cluster) the reads that
// decide go to the stream leader: the current state, an event by its
// sequence, and the log's last sequence before a scan under an
// X-Request-ID; none is a direct get, which a follower may answer from an
// older state.
func TestR3ReadsGoToTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	o := natscluster.Options{Name: "leaderget", SyncAlways: true, NoLog: true}
	for i := range 3 {
		o.ServerNames, o.StoreDirs = append(o.ServerNames, fmt.Sprintf("n%d", i)), append(o.StoreDirs, t.TempDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := natscluster.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Shutdown)
	urls := strings.Join(cl.ClientURLs(), ",")
	st, nc := storeOn(t, urls, 3)
	if !st.eventsReplicated() {
		t.Fatal("an R3 event log counted as not replicated")
	}
	order, release := storeEvents(t, ctx, st, "R3-A", "rel-3")
	// On the store's server: what the store sends reaches it in order.
	watcher, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	w := watchReads(t, watcher)
	st.recent = recentEvents{} // Event reads the server, not what Current kept
	cur, err := st.Current(ctx, "R3-A")
	if err != nil || cur.Seq != release {
		t.Fatalf("current: %+v, %v; want the release at %d", cur, err, release)
	}
	st.recent = recentEvents{}
	if ev, err := st.Event(ctx, order); err != nil || ev.Seq != order || string(ev.Body) != "order bytes" {
		t.Fatalf("event %d: %+v, %v", order, ev, err)
	}
	if _, err := st.Current(ctx, "R3-NONE"); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("a prescription never stored: %v, want not found", err)
	}
	evs, err := st.EventsUnder(ctx, "rel-3", time.Now().Add(-time.Minute), 2*time.Minute, rx.EventNominatedRelease)
	if err != nil || len(evs) != 1 || evs[0].Seq != release {
		t.Fatalf("events under rel-3: %v, %v; want the release at %d", evs, err, release)
	}
	reserveTwice(t, ctx, st)
	// 4 of the event log and 3 of the bucket from the leader; the one
	// direct get is the key-value client's own (see reserveTwice).
	if direct, leader := w.counts(t, nc, watcher); direct != 1 || leader != 7 {
		t.Errorf("R3 reads: %d direct gets, %d leader reads; want 1 direct (the key-value client's), 7 leader", direct, leader)
	}
}

// reserveTwice reserves an X-Request-ID, keeps it marked unresolved (which
// reads its entry), reserves it again for the same request (which reads it
// and takes it over at once), gives it up and reads it (none): three reads
// of the bucket by the store. The second reservation's create, refused as
// the key exists, makes the key-value client read the key itself (a direct
// get, to tell a deleted key it may create again): that one decides
// nothing of the store's (a key it takes as present is read again by the
// store).
func reserveTwice(t *testing.T, ctx context.Context, st *Store) {
	t.Helper()
	key := service.RequestKey("disp-user", "FA565", "rel-leader")
	hash := service.RequestHash("POST", "/FHIR/R4/Task/$release", []byte(`{"nominated":true}`))
	now := time.Now()
	_, res, err := st.ReserveRequest(ctx, key, hash, now)
	if err != nil || res.Rev == 0 {
		t.Fatalf("reserve: %+v %v", res, err)
	}
	if err := st.CompleteRequest(ctx, key, res.Rev, &service.SavedResponse{BodyHash: hash, Unresolved: true}); err != nil {
		t.Fatalf("keep unresolved: %v", err)
	}
	saved, taken, err := st.ReserveRequest(ctx, key, hash, now)
	if err != nil || saved != nil || taken.TakenOver.IsZero() || taken.Rev <= res.Rev {
		t.Fatalf("retry: %+v %+v %v; want the unresolved reservation taken over at once", saved, taken, err)
	}
	// Deleted (given up), it is no entry: the next reservation is new.
	if err := st.ReleaseRequest(ctx, key, taken.Rev); err != nil {
		t.Fatal(err)
	}
	if _, e := st.requestEntry(ctx, key); !errors.Is(e, jetstream.ErrKeyNotFound) {
		t.Errorf("a released reservation read as %v, want not found", e)
	}
}

// A scan that must reach a sequence its consumer's replica does not hold
// yet waits for it and reads it once stored; one that never comes fails
// as unavailable within the caller's context, never a short answer. (On a
// single server the sequence to reach stands for a leader's that the
// consumer's replica has not applied.)
func TestScanReadsUpToTheLeadersLast(t *testing.T) {
	st, _ := storeOn(t, "", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, release := storeEvents(t, ctx, st, "SCAN-A", "rel-s")
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{SubjectRx + ">"}, HeadersOnly: true}

	// Stored while the scan waits (or before it began: the same answer).
	later := make(chan uint64, 1)
	go func() {
		seq, err := st.appendEvent(ctx, rx.EventOrder, "order-SCAN-B", &rx.Prescription{ID: "SCAN-B"}, nil, 0)
		if err != nil {
			t.Error(err)
		}
		later <- seq
	}()
	var read []uint64
	if err := st.scanStreamUntil(ctx, "event log", StreamEvents, cfg, release+1, func(_ jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		read = append(read, md.Sequence.Stream)
		return true, nil
	}); err != nil {
		t.Fatalf("scan up to %d: %v", release+1, err)
	}
	if seq := <-later; seq != release+1 || len(read) != 3 || read[2] != seq {
		t.Errorf("scan up to %d read %v, the write was stored at %d", release+1, read, seq)
	}

	// A sequence never stored: unavailable, within the context.
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	read = read[:0]
	err := st.scanStreamUntil(sctx, "event log", StreamEvents, cfg, release+10, func(_ jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		read = append(read, md.Sequence.Stream)
		return true, nil
	})
	if err == nil || !IsUnavailable(err) {
		t.Errorf("scan up to a sequence never stored: %v (read %v), want unavailable", err, read)
	}
	if ctx.Err() != nil {
		t.Fatal("the scan outlived its context")
	}

	// A scan whose window starts after the last message reaches it at
	// once: its consumer starts past the log's end.
	evs, err := st.EventsUnder(ctx, "rel-s", time.Now().Add(time.Hour), time.Minute, rx.EventNominatedRelease)
	if err != nil || len(evs) != 0 {
		t.Errorf("events under rel-s from an hour on: %v, %v; want none", evs, err)
	}
}

// The event log never removes a message: no deletes, no purges, no age or
// count limits, and a full log refuses new writes rather than dropping
// old ones. leaderLastSeq reads the last sequence as the last message's,
// which only holds while that is so (and an acknowledged prescription must
// never go anyway).
func TestEventLogKeepsEveryMessage(t *testing.T) {
	st, _, _ := commitStore(t, 0)
	c := st.events.CachedInfo().Config
	if !c.DenyDelete || !c.DenyPurge || c.MaxAge != 0 || c.MaxMsgs > 0 || c.MaxMsgsPerSubject > 0 ||
		c.Discard != jetstream.DiscardNew || c.Retention != jetstream.LimitsPolicy {
		t.Errorf("%s: deny delete %v, deny purge %v, max age %v, max msgs %d, per subject %d, discard %v, retention %v; want a log that keeps every message",
			c.Name, c.DenyDelete, c.DenyPurge, c.MaxAge, c.MaxMsgs, c.MaxMsgsPerSubject, c.Discard, c.Retention)
	}
}
