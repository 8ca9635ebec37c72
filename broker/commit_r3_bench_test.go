package broker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/internal/natscluster"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// BenchmarkGroupCommitMinBatch: the group commit with MinCommitBatch (8)
// against 2 (the fewest writes committed as one atomic batch), on a
// single node (R1, each atomic batch staged in a file store of its own)
// and on a three-node cluster in this process (R3, batches staged in
// memory), 16 or 64 writers storing new prescriptions with a 15 KB body
// under sync always. ns/op is per write; writes/commit is the mean a
// commit took, %batched the share of writes committed in atomic batches
// (commits of minbatch writes or more). Compare with
// benchstat -col /minbatch. The three nodes share the machine's cores and
// disk: R3 here is a floor for the cost of replication.
func BenchmarkGroupCommitMinBatch(b *testing.B) {
	body := make([]byte, 15*1024)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for _, replicas := range []int{1, 3} {
		for _, writers := range []int{16, 64} {
			for _, minBatch := range []int{MinCommitBatch, 2} {
				b.Run(fmt.Sprintf("R%d/writers=%d/minbatch=%d", replicas, writers, minBatch), func(b *testing.B) {
					cfg := config.Default()
					cfg.DataDir = b.TempDir()
					if replicas > 1 {
						cfg.NATSURL = benchCluster(b, replicas)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					defer cancel()
					n, err := ConnectNATS(ctx, cfg, zap.NewNop())
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(n.Close)
					st, err := OpenStore(ctx, n.Conn, StoreConfig{Replicas: replicas, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20,
						Pseudonyms: testPseudonyms(b, 7)}, NewMetrics())
					if err != nil {
						b.Fatal(err)
					}
					st.commit.minBatch = minBatch
					var commits, batched atomic.Int64
					st.commit.beforeCommit = func(size int) {
						commits.Add(1)
						if size >= minBatch {
							batched.Add(int64(size))
						}
					}
					var next atomic.Int64
					b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
					b.SetBytes(int64(len(body)))
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							id := fmt.Sprint("BENCH-", next.Add(1))
							if _, err := st.appendEvent(context.Background(), "test", id, &rx.Prescription{ID: id}, body, 0); err != nil {
								b.Error(err)
								return
							}
						}
					})
					b.StopTimer()
					if c := commits.Load(); c > 0 {
						b.ReportMetric(float64(b.N)/float64(c), "writes/commit")
						b.ReportMetric(100*float64(batched.Load())/float64(b.N), "%batched")
					}
				})
			}
		}
	}
}

// benchCluster starts an n-node NATS cluster on loopback
// (internal/natscluster), JetStream with sync always on a store dir each,
// and waits until it has a meta leader with every node current that can
// place an R(n) stream; it returns the client URLs, comma-separated.
func benchCluster(b *testing.B, n int) string {
	b.Helper()
	o := natscluster.Options{Name: "bench", SyncAlways: true, NoLog: true}
	for i := range n {
		o.ServerNames, o.StoreDirs = append(o.ServerNames, fmt.Sprintf("n%d", i+1)), append(o.StoreDirs, b.TempDir())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, err := natscluster.Start(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Shutdown)
	return strings.Join(cl.ClientURLs(), ",")
}
