package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/config"
)

// embeddedJS starts an embedded server on a temp data dir.
func embeddedJS(t *testing.T) (jetstream.JetStream, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	n, err := ConnectNATS(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	js, _ := jetstream.New(n.Conn)
	return js, ctx
}

// deadMessages lists the dead letter stream's messages: subject -> the
// Eps-Dead-Seq of each message on it.
func deadMessages(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string][]string {
	t.Helper()
	st, err := js.Stream(ctx, StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(SubjectDead+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[m.Subject] = append(out[m.Subject], m.Header.Get(HeaderDeadSeq))
		seq = m.Sequence + 1
	}
}

// A message met again by a consumer of the same name (an ordered consumer
// rereading its stream from the start, as the tracker index does without a
// snapshot) is not copied to the dead letter again: the dead letter holds
// one per (consumer, message), the metric counts it dead once and
// dead_again after. Writers racing on one dead letter store it once.
func TestDeadLetterOnce(t *testing.T) {
	js, ctx := embeddedJS(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := createDeadStream(ctx, js, 1, 1<<20); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"ok", "corrupt", "ok", "corrupt"} {
		if _, err := js.Publish(ctx, "t.x", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	decode := func(_ uint64, _ time.Time, _ string, _ nats.Header, data []byte) (string, error) {
		if string(data) == "corrupt" {
			return "", errors.New("not a message of ours")
		}
		return string(data), nil
	}
	// The stream's duplicate window, shortened, plays no part: a rebuild
	// can come at any time after.
	st, err := js.Stream(ctx, StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	dcfg := st.CachedInfo().Config
	dcfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, dcfg); err != nil {
		t.Fatal(err)
	}
	// Three reads of the whole stream, each by a new runner of the same
	// name (a broker start without a snapshot), each with its own metrics.
	for run := 1; run <= 3; run++ {
		if run > 1 {
			time.Sleep(2 * dcfg.Duplicates) // past the duplicate window
		}
		m := NewMetrics()
		r, err := StartRunner(ctx, js, m, zap.NewNop(), RunnerConfig[string]{
			Name: "test-ordered", Stream: "T", Decode: decode,
			Apply: func(context.Context, *Delivery[string]) error { return nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.WaitApplied(ctx, 4); err != nil {
			t.Fatalf("run %d: %v: %s", run, err, r.State())
		}
		r.Stop()
		want := map[string]float64{"applied": 2, "dead": 2, "dead_again": 0}
		if run > 1 {
			want = map[string]float64{"applied": 2, "dead": 0, "dead_again": 2}
		}
		for outcome, n := range want {
			if got := consumerCounter(t, m, "eps_consumer_messages_total", "test-ordered", outcome); got != n {
				t.Errorf("run %d: %s %v, want %v", run, outcome, got, n)
			}
		}
		got := deadMessages(t, ctx, js)
		wantDead := map[string][]string{DeadSubject("test-ordered", "T", 2): {"2"}, DeadSubject("test-ordered", "T", 4): {"4"}}
		if fmt.Sprint(got) != fmt.Sprint(wantDead) {
			t.Fatalf("run %d: dead letter holds %v, want %v", run, got, wantDead)
		}
	}

	// A dead letter deleted (its cause dealt with) is written again by the
	// next consumer that meets the message.
	if err := st.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	r, err := StartRunner(ctx, js, m, zap.NewNop(), RunnerConfig[string]{
		Name: "test-ordered", Stream: "T", Decode: decode,
		Apply: func(context.Context, *Delivery[string]) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitApplied(ctx, 4); err != nil {
		t.Fatalf("%v: %s", err, r.State())
	}
	r.Stop()
	if d, a := consumerCounter(t, m, "eps_consumer_messages_total", "test-ordered", "dead"),
		consumerCounter(t, m, "eps_consumer_messages_total", "test-ordered", "dead_again"); d != 1 || a != 1 {
		t.Errorf("after a dead letter was deleted: dead %v, dead_again %v; want 1, 1", d, a)
	}
	if got := deadMessages(t, ctx, js); len(got[DeadSubject("test-ordered", "T", 2)]) != 1 || len(got[DeadSubject("test-ordered", "T", 4)]) != 1 {
		t.Errorf("after a dead letter was deleted: %v", got)
	}

	// Racing writers (two broker instances' indexes): stored once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored []bool
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := WriteDeadLetter(ctx, js, "test-race", "T", 1, 1, "t.x", nil, []byte("ok"), errors.New("test"))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			stored = append(stored, s)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if n := len(slices.DeleteFunc(stored, func(s bool) bool { return !s })); n != 1 {
		t.Errorf("%d of 8 racing writers stored the dead letter, want 1", n)
	}
	if got := deadMessages(t, ctx, js)[DeadSubject("test-race", "T", 1)]; len(got) != 1 {
		t.Errorf("raced dead letter: %v", got)
	}
}

// A dead letter stream of the earlier layout (eps.dead.<consumer>, the same
// message there more than once when the index was rebuilt) is moved to the
// per-message subjects when the broker opens it: one copy per (consumer,
// message), with its headers and data, the earlier ones deleted; a message
// on such a subject that is not a dead letter of the broker's stays. The
// stream's configuration is unchanged but for its description, and a
// consumer meeting one of the moved messages again writes no copy.
func TestDeadLetterMigration(t *testing.T) {
	js, ctx := embeddedJS(t)
	// As the broker made it before.
	old := jetstream.StreamConfig{
		Name:        StreamDead,
		Description: "Dead letter: copies of the messages a consumer could not apply (eps.dead.<consumer>; headers Eps-Dead-*)",
		Subjects:    []string{SubjectDead + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Duplicates:  2 * time.Minute,
		MaxBytes:    1 << 20,
	}
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	oldLetter := func(consumer string, seq uint64, data string) {
		t.Helper()
		m := &nats.Msg{Subject: SubjectDead + consumer, Data: []byte(data), Header: nats.Header{}}
		m.Header.Set(HeaderEvent, "prescription-order")
		m.Header.Set(HeaderDeadReason, "undecodable: test")
		m.Header.Set(HeaderDeadStream, StreamEvents)
		m.Header.Set(HeaderDeadSeq, strconv.FormatUint(seq, 10))
		m.Header.Set(HeaderDeadSubject, SubjectRx+"X")
		m.Header.Set(HeaderDeadConsumer, consumer)
		m.Header.Set(HeaderDeadDelivery, "1")
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	oldLetter(ConsumerQueueProjector, 5, "five")
	oldLetter(ConsumerTrackerIndex, 5, "five")
	oldLetter(ConsumerTrackerIndex, 9, "nine")
	oldLetter(ConsumerTrackerIndex, 5, "five") // the index rebuilt: again
	oldLetter(ConsumerTrackerIndex, 9, "nine")
	if _, err := js.Publish(ctx, SubjectDead+"operator", []byte("not a dead letter")); err != nil {
		t.Fatal(err)
	}

	for start := 1; start <= 2; start++ { // the second start finds nothing to move
		if err := createDeadStream(ctx, js, 1, 1<<20); err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		got := deadMessages(t, ctx, js)
		want := map[string][]string{
			DeadSubject(ConsumerQueueProjector, StreamEvents, 5): {"5"},
			DeadSubject(ConsumerTrackerIndex, StreamEvents, 5):   {"5"},
			DeadSubject(ConsumerTrackerIndex, StreamEvents, 9):   {"9"},
			SubjectDead + "operator":                             {""},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("start %d: dead letter holds %v, want %v", start, got, want)
		}
	}
	st, _ := js.Stream(ctx, StreamDead)
	m, err := st.GetLastMsgForSubject(ctx, DeadSubject(ConsumerTrackerIndex, StreamEvents, 9))
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "nine" || m.Header.Get(HeaderEvent) != "prescription-order" || m.Header.Get(HeaderDeadReason) != "undecodable: test" ||
		m.Header.Get(HeaderDeadSubject) != SubjectRx+"X" || m.Header.Get(HeaderDeadConsumer) != ConsumerTrackerIndex {
		t.Errorf("moved dead letter: %s %v", m.Data, m.Header)
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxMsgsPerSubject > 0 || cfg.Discard != old.Discard || cfg.MaxBytes != old.MaxBytes || !slices.Equal(cfg.Subjects, old.Subjects) {
		t.Errorf("stream config changed: %+v", cfg)
	}
	stored, err := WriteDeadLetter(ctx, js, ConsumerTrackerIndex, StreamEvents, 9, 1, SubjectRx+"X", nil, []byte("nine"), errors.New("again"))
	if err != nil || stored {
		t.Errorf("a moved dead letter met again: stored %v, %v", stored, err)
	}
}
