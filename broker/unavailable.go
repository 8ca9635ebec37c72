package broker

import (
	"context"
	"errors"
	"os"

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
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
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
