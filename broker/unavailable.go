package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream error codes of a cluster that cannot answer now (nats-server's
// jetstream_errors_generated.go): nothing was decided, a retry later may
// succeed.
const (
	jsErrClusterNoPeers       = 10005 // no suitable peers for placement (nodes down)
	jsErrClusterNotAvailable  = 10008 // JetStream system temporarily unavailable (no meta leader)
	jsErrClusterNotLeader     = 10009 // JetStream cluster can not handle request
	jsErrInsufficientResource = 10023 // insufficient resources
	jsErrStreamOffline        = 10118 // stream is offline
	jsErrConsumerOffline      = 10119 // consumer is offline
	jsErrStreamOfflineReason  = 10194 // stream is offline: reason
	jsErrConsumerOfflineRsn   = 10195 // consumer is offline: reason
)

// errNoProgress is a read of a stream (scanStream) that got nothing while
// messages were pending: the stream's leader or its replica did not
// deliver them in time.
var errNoProgress = errors.New("no progress")

// IsUnavailable reports whether err means that NATS or JetStream could not
// answer now: a request that timed out or found no responder (a stream
// without a leader, a cluster without quorum), a connection that is down
// or reconnecting, or one of JetStream's "temporarily unavailable", "no
// leader", "offline" or "no suitable peers" answers. Such a request is
// answered 503 with Retry-After (KindUnavailable), never 500: the broker is
// sound and another try, here or on another instance, may succeed. It is
// the one place that classifies these errors (the HTTP API's last resort
// for an error no service mapped, the start-up wait, readiness).
//
// A write whose outcome is unknown (a timeout after it was sent) is
// resolved by reading it back before any answer (commit.go); this says only
// how an error that reaches a client is answered.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs), errors.Is(err, errNoProgress),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrStaleConnection),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrClusterNoPeers, jsErrClusterNotAvailable, jsErrClusterNotLeader, jsErrInsufficientResource,
			jsErrStreamOffline, jsErrConsumerOffline, jsErrStreamOfflineReason, jsErrConsumerOfflineRsn:
			return true
		}
		// A full stream is 507 (storagelimits.go), told apart before this.
		return apiErr.Code == 503 && apiErr.ErrorCode != jsErrStorageResourcesExceeded
	}
	return false
}

// healthTTL is how long a readiness answer is kept: readiness probes of
// several load balancers do not each ask JetStream for every stream.
const healthTTL = time.Second

// healthBound bounds one check of the streams' leaders.
const healthBound = 2 * time.Second

// ErrNoLeader is a stream or bucket of the broker without a leader: the
// cluster has no quorum for it (a majority of its replicas down or cut
// off), so it takes no writes.
var ErrNoLeader = errors.New("no leader")

// healthCache keeps the last check of the streams' leaders.
type healthCache struct {
	check sync.Mutex // held while the streams are asked
	mu    sync.Mutex
	at    time.Time
	err   error
	more  []string // streams and buckets other parts of the broker write (AddHealthStream)
}

// writtenStreams are the streams (and buckets, by their streams) the
// broker writes on requests and in its projections.
func (s *Store) writtenStreams() []string {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return append(ownStreams(), s.health.more...)
}

// AddHealthStream adds a stream (a bucket: "KV_" and its name) to those
// whose leader readiness requires.
func (s *Store) AddHealthStream(name string) {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	s.health.more = append(s.health.more, name)
	s.health.at = time.Time{}
}

// checkLeaders reports the first of the broker's streams (in the order of
// writtenStreams) that has no leader or does not answer within
// healthBound, naming it; the answer is kept for healthTTL.
func (s *Store) checkLeaders(ctx context.Context) error {
	names := s.writtenStreams()
	// One check at a time: probes that come meanwhile take its answer.
	s.health.check.Lock()
	defer s.health.check.Unlock()
	s.health.mu.Lock()
	if !s.health.at.IsZero() && time.Since(s.health.at) < healthTTL {
		err := s.health.err
		s.health.mu.Unlock()
		return err
	}
	s.health.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, healthBound)
	defer cancel()
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			st, err := s.js.Stream(ctx, name)
			switch {
			case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
				errs[i] = fmt.Errorf("stream %s: %w (JetStream did not answer in %v: the cluster may have no quorum)", name, ErrNoLeader, healthBound)
			case err != nil:
				errs[i] = fmt.Errorf("stream %s: %w", name, err)
			default:
				if cl := st.CachedInfo().Cluster; cl != nil && cl.Leader == "" {
					errs[i] = fmt.Errorf("stream %s: %w (the cluster has no quorum for it)", name, ErrNoLeader)
				}
			}
		})
	}
	wg.Wait()
	var err error
	for _, e := range errs {
		if e != nil {
			err = e
			break
		}
	}
	if ctx.Err() != nil && err == nil {
		err = ctx.Err()
	}
	s.health.mu.Lock()
	s.health.at, s.health.err = time.Now(), err
	s.health.mu.Unlock()
	return err
}
