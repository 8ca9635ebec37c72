package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// IsUnavailable tells the errors of a NATS or JetStream that cannot answer
// now (503, retry) from every other (a refusal, a conflict, a fault):
// real ones, got from a server, and JetStream's cluster answers, wrapped as
// the adapter wraps them.
func TestIsUnavailable(t *testing.T) {
	// A server without JetStream, and a subject whose subscriber never
	// answers: the errors a request then gets.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, noJetStream := js.Stream(ctx, StreamEvents)
	_, noResponders := nc.Request("eps.nobody", nil, time.Second)
	sub, _ := nc.SubscribeSync("eps.silent")
	defer sub.Unsubscribe()
	_, timeout := nc.Request("eps.silent", nil, 50*time.Millisecond)
	rctx, rcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, ctxTimeout := nc.RequestWithContext(rctx, "eps.silent", nil)
	rcancel()
	nc2, _ := nats.Connect(srv.ClientURL())
	nc2.Close()
	_, closed := nc2.Request("eps.silent", nil, time.Second)

	api := func(code jetstream.ErrorCode, status int) error {
		return fmt.Errorf("stream %s: %w", StreamEvents, &jetstream.APIError{ErrorCode: code, Code: status, Description: "x"})
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"JetStream not enabled (server)", noJetStream, true},
		{"no responders (server)", fmt.Errorf("read prescription: %w", noResponders), true},
		{"request timeout (server)", timeout, true},
		{"context deadline (server)", ctxTimeout, true},
		{"connection closed (server)", closed, true},
		{"no response from stream", fmt.Errorf("publish: %w", jetstream.ErrNoStreamResponse), true},
		{"async publish timeout", jetstream.ErrAsyncPublishTimeout, true},
		{"a read of a stream without progress", fmt.Errorf("read audit: %w with 3 pending", errNoProgress), true},
		{"JetStream system temporarily unavailable", api(10008, 503), true},
		{"cluster can not handle request", api(10009, 500), true},
		{"no suitable peers", api(10005, 400), true},
		{"stream offline", api(10118, 500), true},
		{"insufficient resources", api(10023, 503), true},
		{"another 503 of JetStream", api(10999, 503), true},
		{"nil", nil, false},
		{"storage full (507)", api(jsErrStorageResourcesExceeded, 503), false},
		{"wrong last sequence (a conflict)", api(jetstream.JSErrCodeStreamWrongLastSequence, 400), false},
		{"message not found", jetstream.ErrMsgNotFound, false},
		{"stream not found", jetstream.ErrStreamNotFound, false},
		{"client went away", context.Canceled, false},
		{"a fault", errors.New("bad record header"), false},
	} {
		if c.err == nil && c.want {
			t.Errorf("%s: the server gave no error", c.name)
			continue
		}
		if got := IsUnavailable(c.err); got != c.want {
			t.Errorf("%s (%v): IsUnavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// The reconnect delay grows from about 100 ms to at most 5 s (plus up to
// half of it at random): many brokers do not all come back at once, and
// none waits long once the server is back.
func TestReconnectDelay(t *testing.T) {
	for attempt, base := range map[int]time.Duration{0: 100 * time.Millisecond, 1: 100 * time.Millisecond,
		2: 200 * time.Millisecond, 5: 1600 * time.Millisecond, 6: 5 * time.Second, 50: 5 * time.Second, 1 << 20: 5 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 100 {
			d := ReconnectDelay(attempt)
			if d < base || d > base+base/2 {
				t.Fatalf("attempt %d: delay %v, want %v to %v", attempt, d, base, base+base/2)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempt %d: no jitter (always %v)", attempt, base)
		}
	}
}
