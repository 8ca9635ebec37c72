package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// ownStreams are the streams (and buckets, by their streams) the broker
// makes and writes, all with the same replicas.
func ownStreams() []string {
	return []string{StreamEvents, "KV_" + BucketRequests, StreamAudit, "KV_" + BucketSessions,
		"KV_" + BucketNominations, StreamNotify, StreamDead}
}

// keptReplicas is the replicas the broker's streams and buckets are made
// or updated with: want, or more where one of them (the lease bucket too)
// already has more. An instance never lowers them: one started with a
// lower --replicas (a mistake, or a release whose default was 1 during a
// rolling upgrade) would otherwise leave every acknowledged prescription
// on fewer copies for the whole cluster. It keeps them and says so; an
// operator who means to lower them does it on NATS (nats stream edit
// --replicas), where it is one deliberate act.
func keptReplicas(ctx context.Context, js jetstream.JetStream, want int, log *zap.Logger) (int, error) {
	kept, from := want, ""
	for _, name := range append(ownStreams(), "KV_"+BucketLeases) {
		st, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("stream %s: %w", name, err)
		}
		if r := st.CachedInfo().Config.Replicas; r > kept {
			kept, from = r, name
		}
	}
	if kept > want && log != nil {
		log.Warn("the broker's streams have more replicas than this instance asks (--replicas): kept, never lowered; lower them on NATS if that is meant",
			zap.String("stream", from), zap.Int("replicas", kept), zap.Int("asked", want))
	}
	return kept, nil
}

// Replicas is the replicas of the store's streams and buckets: those asked,
// or more where the streams already had more (keptReplicas).
func (s *Store) Replicas() int { return s.replicas }

// scaleStreams gives every stream of names the replicas want (never fewer
// than they have: OpenStore asks keptReplicas first), where it has others: the create-or-update of OpenStore does so for most, but the
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

// NodeReplicasBehind counts the broker's streams and buckets (the lease
// bucket too) whose replica on the NATS node named node is not current, as
// each stream's leader reports it: a stream without a leader, whose info
// does not come, or that has no replica on node counts as behind. 0 on a
// restarted embedded cluster node means its copies have caught up, and the
// next node may be stopped.
func NodeReplicasBehind(ctx context.Context, js jetstream.JetStream, node string) int {
	behind := 0
	for _, name := range append(ownStreams(), "KV_"+BucketLeases) {
		if !replicaCurrent(ctx, js, name, node) {
			behind++
		}
	}
	return behind
}

func replicaCurrent(ctx context.Context, js jetstream.JetStream, name, node string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		return false
	}
	cl := st.CachedInfo().Cluster
	if cl == nil || cl.Leader == "" {
		return false
	}
	if cl.Leader == node {
		return true
	}
	for _, p := range cl.Replicas {
		if p.Name == node {
			return p.Current && !p.Offline
		}
	}
	return false
}

// RegisterNodeCurrent adds eps_nats_node_replicas_behind, for an embedded
// cluster node named node: NodeReplicasBehind at each scrape.
func (m *Metrics) RegisterNodeCurrent(st *Store, node string) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "eps_nats_node_replicas_behind",
		Help: "Embedded cluster node only: the broker's streams and buckets whose replica on this node is not current (per each stream's leader; a stream without a leader counts). 0 after a restart: this node has caught up, the next may be stopped.",
	}, func() float64 { return float64(NodeReplicasBehind(context.Background(), st.js, node)) }))
}
