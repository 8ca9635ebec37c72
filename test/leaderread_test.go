package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// A broker instance whose NATS node is a follower of the event log, cut off
// from the others, never decides from that follower's stale copy. The
// majority (the stream leader and the other follower) goes on acknowledging
// writes; the node cut off still answers direct gets from its own replica
// (local interest first, and no route left), so a direct get there says
// "not found" for a prescription the majority has acknowledged. The
// instance's reads that decide (the current state behind every
// compare-and-set, an event by its sequence, the events under an
// X-Request-ID) go to the stream leader instead: cut off, it cannot reach
// it and answers unavailable (503, retry), never a wrong "not found" or an
// older state; once healed, it reads what the majority acknowledged.
func TestLeaderReadsOnCutOffFollower(t *testing.T) {
	t.Parallel() // a cluster scenario: see TestClusterFaults
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startNATSCluster(t, 3)
	all := c.ClientURLs()
	first := openLeaderReadStore(t, ctx, all)
	orderA := writeOrder(t, ctx, first, "LR-A")
	waitStreamReplicas(t, ctx, all, 3, broker.StreamEvents)

	// x: a follower of the event log; the store under test is connected to
	// it alone, the writer to the two others.
	leader := eventsLeader(t, ctx, all)
	x := -1
	var others []string
	for i := range 3 {
		switch {
		case c.names[i] == leader:
			others = append(others, c.clientURL(i))
		case x < 0:
			x = i
		default:
			others = append(others, c.clientURL(i))
		}
	}
	t.Logf("event log leader %s; cutting off follower %s", leader, c.names[x])
	onX := openLeaderReadStore(t, ctx, c.clientURL(x))
	writer := openLeaderReadStore(t, ctx, strings.Join(others, ","))
	if cur, err := onX.Current(ctx, "LR-A"); err != nil || cur.Seq != orderA {
		t.Fatalf("LR-A through %s before the cut: %+v, %v; want the order at %d", c.names[x], cur, err, orderA)
	}
	// Its replica serves direct gets (it subscribes once current: every
	// 2 s the server checks) before it is cut off.
	waitLocalDirectGets(t, ctx, c.cl.Server(x))

	c.Partition(x, cutDrop)
	for c.cl.Server(x).NumRoutes() > 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%s still has %d routes, cut off", c.names[x], c.cl.Server(x).NumRoutes())
		case <-time.After(50 * time.Millisecond):
		}
	}
	since := time.Now().Add(-time.Second)
	orderB := writeOrder(t, ctx, writer, "LR-B")
	releaseA := writeRelease(t, ctx, writer, "LR-A", "rel-lr")

	// What a direct get through x answers now: its replica's stale copy.
	if seq, err := directGetOn(ctx, c.clientURL(x), "LR-B"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("a direct get of LR-B through the cut-off %s: %d, %v; want its stale \"not found\" (the case this test is about)", c.names[x], seq, err)
	}

	unavailable := func(what string, err error) {
		t.Helper()
		if err == nil || !broker.IsUnavailable(err) || errors.Is(err, service.ErrNotFound) {
			t.Errorf("%s through the cut-off %s: %v; want unavailable (503), never not found", what, c.names[x], err)
		}
	}
	read := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }
	rctx, rcancel := read()
	cur, err := onX.Current(rctx, "LR-B")
	rcancel()
	if err == nil {
		t.Errorf("LR-B through the cut-off %s: %+v; want unavailable", c.names[x], cur)
	}
	unavailable("the current state of LR-B (acknowledged by the majority)", err)
	rctx, rcancel = read()
	cur, err = onX.Current(rctx, "LR-A")
	rcancel()
	if err == nil {
		t.Errorf("LR-A through the cut-off %s: state at %d (the release is at %d); want unavailable", c.names[x], cur.Seq, releaseA)
	}
	unavailable("the current state of LR-A (released by the majority)", err)
	rctx, rcancel = read()
	ev, err := onX.Event(rctx, orderB)
	rcancel()
	if err == nil {
		t.Errorf("event %d through the cut-off %s: %+v; want unavailable", orderB, c.names[x], ev)
	}
	unavailable(fmt.Sprintf("event %d (LR-B's order)", orderB), err)
	rctx, rcancel = read()
	evs, err := onX.EventsUnder(rctx, "rel-lr", since, time.Minute, rx.EventNominatedRelease)
	rcancel()
	if err == nil {
		t.Errorf("events under rel-lr through the cut-off %s: %d; want unavailable, never a short list", c.names[x], len(evs))
	}
	unavailable("the events under rel-lr", err)

	// Healed, the same store reads what the majority acknowledged.
	c.Heal(x)
	waitStreamReplicas(t, ctx, all, 3, broker.StreamEvents)
	if cur, err := retryRead(ctx, func(ctx context.Context) (*service.Event, error) { return onX.Current(ctx, "LR-B") }); err != nil || cur.Seq != orderB {
		t.Errorf("LR-B through %s after the heal: %+v, %v; want the order at %d", c.names[x], cur, err, orderB)
	}
	if cur, err := retryRead(ctx, func(ctx context.Context) (*service.Event, error) { return onX.Current(ctx, "LR-A") }); err != nil || cur.Seq != releaseA {
		t.Errorf("LR-A through %s after the heal: %+v, %v; want the release at %d", c.names[x], cur, err, releaseA)
	}
	if ev, err := retryRead(ctx, func(ctx context.Context) (*service.Event, error) { return onX.Event(ctx, orderB) }); err != nil || ev.Record.ID != "LR-B" {
		t.Errorf("event %d through %s after the heal: %+v, %v; want LR-B's order", orderB, c.names[x], ev, err)
	}
	if ev, err := retryRead(ctx, func(ctx context.Context) (*service.Event, error) {
		evs, err := onX.EventsUnder(ctx, "rel-lr", since, time.Minute, rx.EventNominatedRelease)
		if err != nil || len(evs) != 1 {
			return nil, errors.Join(err, errors.New("not one event under rel-lr"))
		}
		return evs[0], nil
	}); err != nil || ev.Seq != releaseA {
		t.Errorf("events under rel-lr through %s after the heal: %+v, %v; want the release at %d", c.names[x], ev, err, releaseA)
	}
}

// openLeaderReadStore opens the broker's store (R3) through the NATS
// servers at urls only.
func openLeaderReadStore(t *testing.T, ctx context.Context, urls string) *broker.Store {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := broker.NewPseudonyms(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := broker.OpenStore(ctx, nc, broker.StoreConfig{Replicas: 3, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20, Pseudonyms: p}, broker.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// retryRead reads until it succeeds or ctx ends, each attempt bounded: a
// store just healed may meet a leader election.
func retryRead(ctx context.Context, read func(context.Context) (*service.Event, error)) (*service.Event, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ev, err := read(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return ev, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// write stores one decided event through st, tried again while the store
// is unavailable (a leader election), bounded by ctx, and returns its
// sequence. decide returns no write when it finds its event already
// stored (by an attempt that got no answer): that event's sequence is
// returned.
func write(t *testing.T, ctx context.Context, st *broker.Store, id string, decide service.Decide) uint64 {
	t.Helper()
	for {
		var found *service.Event
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ev, err := st.Update(wctx, id, func(cur *service.Event) (*service.Write, error) {
			w, err := decide(cur)
			if w == nil {
				found = cur
			}
			return w, err
		})
		cancel()
		switch {
		case err == nil && ev == nil && found != nil:
			return found.Seq
		case err == nil && ev != nil:
			return ev.Seq
		case err == nil || !broker.IsUnavailable(err) || ctx.Err() != nil:
			t.Fatalf("write %s: %+v, %v", id, ev, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("write %s: %v", id, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeOrder(t *testing.T, ctx context.Context, st *broker.Store, id string) uint64 {
	t.Helper()
	return write(t, ctx, st, id, func(cur *service.Event) (*service.Write, error) {
		if cur != nil {
			return nil, nil // stored by an attempt without an answer
		}
		return &service.Write{Event: rx.EventOrder, MessageID: "order-" + id, Record: &rx.Prescription{ID: id}, Body: []byte("order " + id)}, nil
	})
}

func writeRelease(t *testing.T, ctx context.Context, st *broker.Store, id, messageID string) uint64 {
	t.Helper()
	return write(t, ctx, st, id, func(cur *service.Event) (*service.Write, error) {
		if cur == nil {
			return nil, errors.New("no order")
		}
		if cur.MessageID == messageID {
			return nil, nil
		}
		return &service.Write{Event: rx.EventNominatedRelease, MessageID: messageID, Record: &rx.Prescription{ID: id, OrderSeq: cur.Record.OrderSeq}}, nil
	})
}

// eventsLeader is the event log's stream leader, as its info says.
func eventsLeader(t *testing.T, ctx context.Context, urls string) string {
	t.Helper()
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if cl := s.CachedInfo().Cluster; cl != nil && cl.Leader != "" {
		return cl.Leader
	}
	t.Fatal("the event log has no leader")
	return ""
}

// waitLocalDirectGets waits until srv's replica of the event log answers
// direct gets: srv holds a subscription to the direct-get subject that is
// its own (not one a route told it of).
func waitLocalDirectGets(t *testing.T, ctx context.Context, srv *server.Server) {
	t.Helper()
	subject := "$JS.API.DIRECT.GET." + broker.StreamEvents
	for {
		routes := map[uint64]bool{}
		if rz, err := srv.Routez(nil); err == nil {
			for _, r := range rz.Routes {
				routes[r.Rid] = true
			}
		}
		if sz, err := srv.Subsz(&server.SubszOptions{Subscriptions: true, Test: subject, Limit: 1000}); err == nil {
			for _, s := range sz.Subs {
				if s.Subject == subject && !routes[s.Cid] {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never subscribed to direct gets of %s", srv.Name(), broker.StreamEvents)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// directGetOn sends a direct get of prescription id's last message
// through the NATS server at url alone, as a client of that node does,
// and returns the sequence answered, or jetstream.ErrMsgNotFound when the
// answer is "no message".
func directGetOn(ctx context.Context, url, id string) (uint64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, "$JS.API.DIRECT.GET."+broker.StreamEvents+"."+broker.SubjectRx+id, nil)
	if err != nil {
		return 0, err
	}
	if st := m.Header.Get("Status"); st == "404" {
		return 0, jetstream.ErrMsgNotFound
	} else if st != "" {
		return 0, fmt.Errorf("direct get: status %s %s", st, m.Header.Get("Description"))
	}
	return strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
}
