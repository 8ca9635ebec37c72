package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Two instances' handles on one lease in EPS_LEASES, on an embedded
// server: one holds it at a time (compare-and-set on the key's revision);
// a renewal whose answer was lost is read back; a lease its holder stops
// renewing is removed by the server after its TTL and the other takes it,
// the old holder's renewal then failing; a release hands it over at once.
func TestLeaseOnJetStream(t *testing.T) {
	js, ctx := embeddedJS(t)
	const ttl = time.Second
	a, err := OpenLease(ctx, js, LeaseConfig{Key: "test", Holder: "instance-a", TTL: ttl, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenLease(ctx, js, LeaseConfig{Key: "test", Holder: "instance-b", TTL: ttl + 500*time.Millisecond, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b.TTL() != ttl {
		t.Errorf("TTL %v: the server counts whole seconds, want %v", b.TTL(), ttl)
	}
	kv, err := js.KeyValue(ctx, BucketLeases)
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		t.Helper()
		e, err := kv.Get(ctx, "test")
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return ""
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value())
	}
	must := func(ok bool, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	// One holder at a time.
	if !must(a.Acquire(ctx)) || must(b.Acquire(ctx)) || must(b.Renew(ctx)) {
		t.Fatal("a acquires, then b may neither acquire nor renew")
	}
	if !must(a.Renew(ctx)) || !must(a.Acquire(ctx)) || holder() != "instance-a" {
		t.Fatalf("a renews (and acquiring again renews): held by %q", holder())
	}
	if err := b.Release(ctx); err != nil || holder() != "instance-a" {
		t.Fatalf("b released a's lease: %v, held by %q", err, holder())
	}

	// A renewal of a's stored without its answer reaching a: a's next
	// renewal fails its compare-and-set, reads the key back, finds it names
	// a, and renews from there.
	e, err := kv.Get(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	lost, err := kv.Update(ctx, "test", []byte("instance-a"), e.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if !must(a.Renew(ctx)) {
		t.Fatal("a lost its lease to its own renewal")
	}
	lastRenewal := time.Now()
	if e, err := kv.Get(ctx, "test"); err != nil || e.Revision() <= lost {
		t.Fatalf("a did not renew after reading back: %v", err)
	}

	// a stops renewing (it died): the server removes the entry after the
	// TTL (a watcher sees the marker it leaves), b acquires, and a's
	// renewal fails.
	w, err := kv.Watch(ctx, "test", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for lapsed := false; !lapsed; {
		select {
		case u := <-w.Updates():
			lapsed = u != nil && u.Operation() != jetstream.KeyValuePut
		case <-ctx.Done():
			t.Fatal("the lease did not lapse")
		}
	}
	t.Logf("a lease of %v lapsed %v after its last renewal", ttl, time.Since(lastRenewal).Round(time.Millisecond))
	if !must(b.Acquire(ctx)) || holder() != "instance-b" {
		t.Fatalf("b did not take the lapsed lease: held by %q", holder())
	}
	if must(a.Renew(ctx)) || must(a.Acquire(ctx)) {
		t.Fatal("a renewed or acquired the lease b took")
	}
	if err := a.Release(ctx); err != nil || holder() != "instance-b" {
		t.Fatalf("a released b's lease: %v, held by %q", err, holder())
	}

	// b releases it: a acquires at once, without waiting for a TTL.
	if err := b.Release(ctx); err != nil || holder() != "" {
		t.Fatalf("release: %v, held by %q", err, holder())
	}
	if !must(a.Acquire(ctx)) || must(b.Acquire(ctx)) || holder() != "instance-a" {
		t.Fatalf("a did not take the released lease: held by %q", holder())
	}
}
