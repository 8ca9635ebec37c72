package broker

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// ownStreams are the streams (and buckets, by their streams) the broker
// makes and writes, all with the same replicas.
func ownStreams() []string {
	return []string{StreamEvents, "KV_" + BucketRequests, StreamAudit, "KV_" + BucketSessions,
		"KV_" + BucketNominations, StreamNotify, StreamDead}
}

// scaleStreams gives every stream of names the replicas want, where it has
// others: the create-or-update of OpenStore does so for most, but the
// nominations bucket is only opened once it exists (openNominations), so
// an R1 deployment moved onto a cluster would keep it R1. The durable
// consumers (replicas 0) follow their stream.
func scaleStreams(ctx context.Context, js jetstream.JetStream, want int, log *zap.Logger, names ...string) error {
	for _, name := range names {
		st, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		cfg := st.CachedInfo().Config
		if cfg.Replicas == want {
			continue
		}
		from := cfg.Replicas
		cfg.Replicas = want
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: replicas %d to %d: %w", name, from, want, err)
		}
		if log != nil {
			log.Info("stream replicas changed", zap.String("stream", name), zap.Int("from", from), zap.Int("to", want))
		}
	}
	return nil
}
