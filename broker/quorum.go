package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
)

// DefaultQuorumGrace is how long the broker's streams may be without a
// leader (or JetStream without an answer) before readiness says the
// cluster has no quorum. nats-server v2.15.3 (raft.go) elects a new
// leader after a follower has heard nothing for a random election timeout
// of 4 to 9 s (heartbeats every 1 s), and a leader cut off from its
// majority steps down after 10 s (lostQuorumInterval); the meta leader
// (which answers stream info) is elected alike and in parallel. A lost
// node is thus replaced within about 9 s and a vote round; 15 s leaves
// room for a split vote or a loaded machine, and is still short next to a
// load balancer's usual unhealthy thresholds.
const DefaultQuorumGrace = 15 * time.Second

// quorumState follows the readiness checks: since when they have failed.
type quorumState struct {
	mu    sync.Mutex
	grace time.Duration
	since time.Time // first failed check since the last good one; zero: good
	err   error     // the last failed check
}

// observe records a check and returns what readiness says: nil while
// the checks fail for less than the grace (an election in progress:
// requests meanwhile answer 503 with Retry-After one by one), the error
// once they have failed for longer.
func (q *quorumState) observe(err error, now time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err == nil {
		q.since, q.err = time.Time{}, nil
		return nil
	}
	if q.since.IsZero() {
		q.since = now
	}
	q.err = err
	if d := now.Sub(q.since); d >= q.grace {
		return fmt.Errorf("%w (for %v, more than the %v an election takes)", err, d.Round(time.Second), q.grace)
	}
	return nil
}

// failingFor is how long the checks have failed (0: the last one passed),
// and the last failure.
func (q *quorumState) failingFor(now time.Time) (time.Duration, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.since.IsZero() {
		return 0, nil
	}
	return now.Sub(q.since), q.err
}

// QuorumGrace is the grace Healthy allows (StoreConfig.QuorumGrace or
// DefaultQuorumGrace).
func (s *Store) QuorumGrace() time.Duration { return s.quorum.grace }

// checkQuorum is one check: the connection, then the streams' leaders.
func (s *Store) checkQuorum(ctx context.Context) error {
	if s.js.Conn().Status() == nats.RECONNECTING {
		return nats.ErrConnectionReconnecting
	}
	return s.checkLeaders(ctx)
}

// Quorate is one check without the grace: whether JetStream answers and
// every stream and bucket the broker writes has a leader now (start-up
// waits for it on a cluster before it starts its consumers).
func (s *Store) Quorate(ctx context.Context) error { return s.checkQuorum(ctx) }

// QuorumWatch is a broker on an external NATS cluster following its
// streams' quorum. A NATS client keeps a healthy connection to a node
// that is cut off from the cluster's majority: every request through it
// answers 503 while the majority serves elsewhere. When the checks have
// failed for longer than the grace while connected, it makes the client
// reconnect (to the next server of its pool), backing off (the grace,
// doubled each time, up to quorumBackoffMax) so that a cluster without
// any quorum is not hammered. An embedded cluster node's broker does not
// use it: it is in-process on its own server, and a node cut off from
// the majority has no other to go to (it stays not ready).
type QuorumWatch struct {
	store *Store
	nc    *nats.Conn
	log   *zap.Logger
	every time.Duration

	// Forced counts the reconnects forced.
	mu     sync.Mutex
	forced int
}

// quorumBackoffMax bounds the pause between two forced reconnects.
const quorumBackoffMax = 5 * time.Minute

// NewQuorumWatch makes the watcher of s over nc.
func NewQuorumWatch(s *Store, nc *nats.Conn, log *zap.Logger) *QuorumWatch {
	return &QuorumWatch{store: s, nc: nc, log: log, every: max(s.quorum.grace/5, healthTTL)}
}

// Forced is how many reconnects the watcher has forced.
func (w *QuorumWatch) Forced() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.forced
}

// Run checks until ctx ends.
func (w *QuorumWatch) Run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	backoff := w.store.quorum.grace
	var next time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = w.store.Healthy(ctx)
		now := time.Now()
		failing, err := w.store.quorum.failingFor(now)
		if failing == 0 {
			backoff, next = w.store.quorum.grace, time.Time{}
			continue
		}
		if failing < w.store.quorum.grace || now.Before(next) || w.nc.Status() != nats.CONNECTED {
			continue
		}
		w.log.Warn("JetStream has no leader for the broker's streams through this NATS server: reconnecting to another",
			zap.String("server", w.nc.ConnectedUrlRedacted()), zap.Duration("for", failing.Round(time.Second)),
			zap.Duration("next_try_after", backoff), zap.Error(err))
		if ferr := w.nc.ForceReconnect(); ferr != nil {
			w.log.Warn("forced reconnect", zap.Error(ferr))
		}
		w.mu.Lock()
		w.forced++
		w.mu.Unlock()
		next = now.Add(backoff)
		backoff = min(backoff*2, quorumBackoffMax)
	}
}
