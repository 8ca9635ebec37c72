package broker

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// runnerJS is an embedded JetStream (embeddedJS) holding stream T
// (subjects t.>) for a runner to read, and the dead letter stream.
func runnerJS(t *testing.T) (jetstream.JetStream, context.Context) {
	t.Helper()
	js, ctx := embeddedJS(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := createDeadStream(ctx, js, 1, 1<<20); err != nil {
		t.Fatal(err)
	}
	return js, ctx
}

// The runner on a real (embedded) JetStream: an applied message is
// acknowledged; a transient failure is retried until it applies, and holds
// the applied sequence back meanwhile; a message failing every delivery and
// one it cannot decode go to the dead letter with the reason; an apply that
// finishes later is acknowledged when it does.
func TestRunnerOnJetStream(t *testing.T) {
	js, ctx := runnerJS(t)
	m := NewMetrics()

	var (
		mu       sync.Mutex
		failures = map[string]int{}
		applied  []string
		runner   *Runner[string]
		// Applied as seen by each delivery of "always" (3), and whether
		// "flaky" (2) had been applied then.
		seen []struct {
			applied   uint64
			flakyDone bool
		}
	)
	transient := errors.New("not yet")
	apply := func(_ context.Context, d *Delivery[string]) error {
		mu.Lock()
		defer mu.Unlock()
		switch d.Value {
		case "flaky":
			if failures[d.Value] < 2 {
				failures[d.Value]++
				return transient
			}
		case "always":
			failures[d.Value]++
			seen = append(seen, struct {
				applied   uint64
				flakyDone bool
			}{runner.Applied(), slices.Contains(applied, "flaky")})
			return transient
		case "later":
			go func() {
				mu.Lock()
				applied = append(applied, d.Value)
				mu.Unlock()
				d.Finish(nil)
			}()
			return ErrApplyPending
		}
		applied = append(applied, d.Value)
		return nil
	}
	decode := func(_ uint64, _ time.Time, _ string, _ nats.Header, data []byte) (string, error) {
		if string(data) == "corrupt" {
			return "", errors.New("not a message of ours")
		}
		return string(data), nil
	}
	runner, err := StartRunner(ctx, js, m, zap.NewNop(), RunnerConfig[string]{
		Name: "test-runner", Stream: "T", Durable: true,
		Retry:  RetryPolicy{Base: time.Millisecond, Max: 4 * time.Millisecond, MaxDeliveries: 3},
		Decode: decode, Apply: apply,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer runner.Stop()
	msgs := []string{"ok", "flaky", "always", "corrupt", "later"}
	for _, body := range msgs {
		mu.Lock() // the runner is set before the first apply reads it
		_, err := js.Publish(ctx, "t.x", []byte(body))
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := runner.WaitApplied(ctx, uint64(len(msgs))); err != nil {
		t.Fatalf("%v: %s", err, runner.State())
	}
	mu.Lock()
	slices.Sort(applied) // "flaky" is retried after "later"
	if got := strings.Join(applied, " "); got != "flaky later ok" {
		t.Errorf("applied %q, want flaky later ok", got)
	}
	if failures["always"] != 3 {
		t.Errorf("always: %d deliveries, want 3", failures["always"])
	}
	// A message waiting for its redelivery holds the applied sequence back.
	for _, sn := range seen {
		if want := uint64(1); !sn.flakyDone && sn.applied != want || sn.flakyDone && sn.applied != 2 {
			t.Errorf("Applied %d with flaky (2) applied: %v", sn.applied, sn.flakyDone)
		}
	}
	mu.Unlock()
	if st := runner.State(); st.InHand != 0 || st.Redelivering != 0 || st.Applied != 5 {
		t.Errorf("state %s", st)
	}

	// The dead letter: "always" (3) and "corrupt" (4), with their reasons.
	dead := map[uint64]string{}
	for seq := uint64(1); seq <= 2; seq++ {
		raw, err := js.Stream(ctx, StreamDead)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := raw.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		s, _ := strconv.ParseUint(msg.Header.Get(HeaderDeadSeq), 10, 64)
		if msg.Subject != DeadSubject("test-runner", "T", s) || msg.Header.Get(HeaderDeadStream) != "T" || msg.Header.Get(HeaderDeadSubject) != "t.x" {
			t.Errorf("dead letter %d: %s %v", seq, msg.Subject, msg.Header)
		}
		dead[s] = msg.Header.Get(HeaderDeadReason) + " / " + string(msg.Data) + " / " + msg.Header.Get(HeaderDeadDelivery)
	}
	if d := dead[3]; d != "not yet / always / 3" {
		t.Errorf("dead letter of 3: %q", d)
	}
	if d := dead[4]; d != "undecodable: not a message of ours / corrupt / 1" {
		t.Errorf("dead letter of 4: %q", d)
	}
	for outcome, want := range map[string]float64{"applied": 3, "retried": 4, "dead": 2} {
		if got := consumerCounter(t, m, "eps_consumer_messages_total", "test-runner", outcome); got != want {
			t.Errorf("%s: %v, want %v", outcome, got, want)
		}
	}
	// Nothing left for the consumer on the server: all acknowledged or
	// terminated.
	c, _ := js.Consumer(ctx, "T", "test-runner")
	if info, err := c.Info(ctx); err != nil || info.NumAckPending != 0 || info.NumPending != 0 {
		t.Errorf("consumer info %+v %v", info, err)
	}
}

// consumerCounter reads a counter of the consumer metrics by its labels.
func consumerCounter(t *testing.T, m *Metrics, name, consumer, outcome string) float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["consumer"] == consumer && labels["outcome"] == outcome {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}
