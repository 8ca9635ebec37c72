package test

import (
	"bufio"
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// metricValue reads one sample of the broker's /metrics, e.g.
// `eps_storage_alert{stream="EPS_EVENTS"}`; ok false when absent.
func (b *testBroker) metricValue(sample string) (float64, bool) {
	b.t.Helper()
	res := b.do("GET", "/metrics", "", nil)
	if res.Status != 200 {
		b.t.Fatalf("metrics: %d", res.Status)
	}
	sc := bufio.NewScanner(bytes.NewReader(res.Body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				b.t.Fatalf("metric %s: %v", line, err)
			}
			return f, true
		}
	}
	return 0, false
}

// An event log at its size limit refuses the next order with 507 and an
// OperationOutcome; nothing of it is stored, nothing stored before is
// dropped, a retry with the same X-Request-ID is refused again (not
// replayed), and the used-fraction gauge, its alert and /readyz say so, the alert
// firing while orders were still accepted.
func TestStorageFullEventLog(t *testing.T) {
	const limit = 256 << 10
	b := startBroker(t, "", func(c *configT) { c.EventsMaxBytes = limit })
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	presc := b.token(auth.RolePrescriber, "A83008")

	if v, ok := b.metricValue(`eps_storage_limit_bytes{stream="EPS_EVENTS"}`); !ok || v != limit {
		t.Fatalf("eps_storage_limit_bytes of EPS_EVENTS = %v (present %v), want %d", v, ok, limit)
	}
	if v, _ := b.metricValue(`eps_storage_alert{stream="EPS_EVENTS"}`); v != 0 {
		t.Fatalf("alert on an empty event log")
	}
	if res := b.do("GET", "/readyz", "", nil); res.Status != 200 || strings.Contains(string(res.Body), "EPS_EVENTS") {
		t.Fatalf("readyz on an empty event log: %d %s", res.Status, res.Body)
	}

	var accepted []string
	alertedWhileAccepting := false
	var refused *fhirgen.Generated
	var res *response
	for i := 0; i < 200 && refused == nil; i++ {
		g, err := tmpl.Order(fhirgen.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := b.metricValue(`eps_storage_alert{stream="EPS_EVENTS"}`); v == 1 {
			alertedWhileAccepting = len(accepted) > 0
		}
		res = b.post(presc, g.Body, "X-Request-ID", "fill-"+g.ShortID)
		switch res.Status {
		case 200:
			accepted = append(accepted, g.ShortID)
		case 507:
			refused = g
		default:
			t.Fatalf("order %d: %d %s", i, res.Status, res.Body)
		}
	}
	if refused == nil {
		t.Fatalf("%d orders accepted into a %d-byte event log", len(accepted), limit)
	}
	if v, ok := b.metricValue(`eps_storage_bytes{stream="EPS_EVENTS"}`); ok {
		t.Logf("%d orders took %.0f bytes of the event log (%.0f each)", len(accepted), v, v/float64(len(accepted)))
	}
	if len(accepted) < 3 {
		t.Fatalf("only %d orders accepted before the event log was full", len(accepted))
	}
	if !alertedWhileAccepting {
		t.Errorf("eps_storage_alert did not fire before the event log refused an order")
	}
	oo := res.outcome(t)
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) != 1 || oo.Issue[0].Code != "no-store" || !oo.hasCode("INSUFFICIENT_STORAGE") ||
		!strings.Contains(oo.Issue[0].Diagnostics, "EPS_EVENTS is full") {
		t.Errorf("refused order answer: %s", res.Body)
	}
	if res.Header.Get("Retry-After") == "" {
		t.Errorf("507 without Retry-After")
	}
	if n := b.events(refused.ShortID); n != 0 {
		t.Errorf("refused order has %d events in the log", n)
	}
	if n := b.events(""); n != uint64(len(accepted)) {
		t.Errorf("event log holds %d messages, %d orders were accepted", n, len(accepted))
	}
	if n := b.events(accepted[0]); n != 1 {
		t.Errorf("first order has %d events: an old prescription was dropped to make room", n)
	}
	// The same X-Request-ID again: refused again (a 5xx is not remembered).
	again := b.post(presc, refused.Body, "X-Request-ID", "fill-"+refused.ShortID)
	if again.Status != 507 || again.Header.Get("X-Idempotent-Replay") != "" {
		t.Errorf("retry of the refused order: %d %v", again.Status, again.Header)
	}
	if v, _ := b.metricValue(`eps_storage_used_ratio{stream="EPS_EVENTS"}`); v < 0.8 || v > 1 {
		t.Errorf("eps_storage_used_ratio of the full event log = %v", v)
	}
	if v, _ := b.metricValue(`eps_storage_alert{stream="EPS_EVENTS"}`); v != 1 {
		t.Errorf("eps_storage_alert of the full event log = %v", v)
	}
	if v, _ := b.metricValue(`eps_storage_full_total{stream="EPS_EVENTS"}`); v != 2 {
		t.Errorf("eps_storage_full_total of EPS_EVENTS = %v, want the 2 refused writes", v)
	}
	ready := b.do("GET", "/readyz", "", nil)
	if ready.Status != 200 || !strings.Contains(string(ready.Body), "storage: EPS_EVENTS is full") {
		t.Errorf("readyz with a full event log: %d %s", ready.Status, ready.Body)
	}
}

// A full audit trail refuses tracker reads with 507 (no read goes
// unaudited), and the nominations bucket gets its limit (discard new) on
// its stream.
func TestStorageFullAuditAndLimits(t *testing.T) {
	b := startBroker(t, "", func(c *configT) { c.AuditMaxBytes = 64 << 10; c.NominationsMaxBytes = 1 << 20 })
	ctx := context.Background()
	st, err := b.App.Store.JetStream().Stream(ctx, "KV_"+broker.BucketNominations)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := st.CachedInfo().Config; cfg.MaxBytes != 1<<20 || cfg.Discard.String() != "DiscardNew" {
		t.Errorf("nominations stream: max_bytes %d, discard %s", cfg.MaxBytes, cfg.Discard)
	}
	for _, name := range []string{broker.StreamEvents, "KV_" + broker.BucketRequests, "KV_" + broker.BucketSessions} {
		s, err := b.App.Store.JetStream().Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if cfg := s.CachedInfo().Config; cfg.MaxBytes <= 0 || cfg.Discard.String() != "DiscardNew" {
			t.Errorf("%s: automatic max_bytes %d, discard %s", name, cfg.MaxBytes, cfg.Discard)
		}
	}
	admin := b.token(auth.RoleAdmin, "X26")
	status := 0
	for i := 0; i < 2000 && status != 507; i++ {
		res := b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+fhirgen.NHSNumber(), admin, nil)
		status = res.Status
		if status == 507 && !res.outcome(t).hasCode("INSUFFICIENT_STORAGE") {
			t.Errorf("507 answer: %s", res.Body)
		}
		if status != 200 && status != 507 {
			t.Fatalf("search %d: %d %s", i, res.Status, res.Body)
		}
	}
	if status != 507 {
		t.Fatalf("a 64 KiB audit trail never filled")
	}
	if v, _ := b.metricValue(`eps_storage_full_total{stream="jetstream"}`); v < 1 {
		t.Errorf("refused audit write not counted: %v", v)
	}
}

// A limit set (or lowered) on an event log that already holds more drops
// nothing: the stored prescriptions stay, and new ones are refused with 507.
func TestStorageLimitLoweredDropsNothing(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir, func(c *configT) { c.EventsMaxBytes = -1 })
	orders := postOrders(t, b, 8, fhirgen.Options{})
	before := b.events("")
	b.stop()

	b = startBroker(t, dir, func(c *configT) { c.EventsMaxBytes = 64 << 10 })
	if n := b.events(""); n != before {
		t.Fatalf("event log holds %d messages after the limit was lowered, %d before", n, before)
	}
	for _, g := range orders {
		if n := b.events(g.ShortID); n != 1 {
			t.Errorf("prescription %s has %d events after the limit was lowered", g.ShortID, n)
		}
	}
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	if res := b.post(b.token(auth.RolePrescriber, "A83008"), g.Body); res.Status != 507 {
		t.Errorf("order into an event log over its limit: %d %s", res.Status, res.Body)
	}
	if v, _ := b.metricValue(`eps_storage_used_ratio{stream="EPS_EVENTS"}`); v <= 1 {
		t.Errorf("eps_storage_used_ratio %v, want over 1 for an event log over its limit", v)
	}
}

// Other full buckets answer 507 too: the X-Request-ID bucket (for requests
// that carry one) and the nominations bucket (for nomination changes).
func TestStorageFullBuckets(t *testing.T) {
	for _, tc := range []struct {
		name   string
		limit  func(c *configT)
		stream string
		send   func(b *testBroker, i int) *response
	}{
		{"X-Request-ID bucket", func(c *configT) { c.RequestsMaxBytes = 64 << 10 }, "KV_EPS_REQUESTS", func(b *testBroker, i int) *response {
			// A refused order: its 400 is remembered for its X-Request-ID.
			return b.post(b.token(auth.RolePrescriber, "A83008"), []byte(`{"resourceType":"Bundle"}`), "X-Request-ID", "req-"+strconv.Itoa(i)+"-"+strings.Repeat("x", 150))
		}},
		{"nominations bucket", func(c *configT) { c.NominationsMaxBytes = 64 << 10 }, "KV_EPS_NOMINATIONS", func(b *testBroker, i int) *response {
			return b.do("PUT", "/api/v1/nominations/"+fhirgen.NHSNumber()+"/P1", b.token(auth.RoleAdmin, "X26"), []byte(`{"ods":"FA565"}`), "Content-Type", "application/json")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBroker(t, "", tc.limit)
			var res *response
			i := 0
			for ; i < 3000; i++ {
				res = tc.send(b, i)
				if res.Status == 507 {
					break
				}
				if res.Status >= 500 {
					t.Fatalf("request %d: %d %s", i, res.Status, res.Body)
				}
			}
			if res.Status != 507 {
				t.Fatalf("a 64 KiB %s never filled", tc.stream)
			}
			if oo := res.outcome(t); !oo.hasCode("INSUFFICIENT_STORAGE") || oo.Issue[0].Code != "no-store" {
				t.Errorf("507 answer: %s", res.Body)
			}
			if v, _ := b.metricValue(`eps_storage_used_ratio{stream="` + tc.stream + `"}`); v < 0.8 {
				t.Errorf("eps_storage_used_ratio of %s = %v after %d writes", tc.stream, v, i)
			}
		})
	}
}

// A limit that does not fit in the JetStream storage stops the broker at
// start, naming the stream and the setting to lower.
func TestStorageLimitThatDoesNotFit(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir, cfg.HTTPAddr = t.TempDir(), "127.0.0.1:0"
	cfg.EventsMaxBytes = 1 << 60
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), nil)
	if err == nil {
		cancel()
		_ = a.Serve(ctx)
		t.Fatal("a broker started with an event log limit of 1 EiB")
	}
	if !strings.Contains(err.Error(), "EPS_EVENTS") || !strings.Contains(err.Error(), "--events-max-bytes") {
		t.Errorf("error: %v", err)
	}
}

// The scheduler's lease bucket is among the streams the storage metrics
// and /readyz cover: its fixed limit (64 KiB: a full bucket refuses lease
// writes, and no instance could then run the scheduler) is exported with
// its use, and readiness requires it to answer with a leader, naming it
// when it does not.
func TestLeaseBucketStorageAndReadiness(t *testing.T) {
	b := startBroker(t, "")
	lease := "KV_" + broker.BucketLeases
	if v, ok := b.metricValue(`eps_storage_limit_bytes{stream="` + lease + `"}`); !ok || v != 64<<10 {
		t.Errorf("eps_storage_limit_bytes of %s = %v (present %v), want %d", lease, v, ok, 64<<10)
	}
	if _, ok := b.metricValue(`eps_storage_alert{stream="` + lease + `"}`); !ok {
		t.Errorf("no eps_storage_alert for %s", lease)
	}
	waitReady(t, b, 200, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.App.Store.JetStream().DeleteStream(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if body := waitReady(t, b, 503, 30*time.Second); !strings.Contains(body, lease) {
		t.Errorf("/readyz without the lease bucket: %s, want it named", body)
	}
	// The storage metrics still answer, without the bucket.
	if _, ok := b.metricValue(`eps_storage_bytes{stream="` + broker.StreamEvents + `"}`); !ok {
		t.Errorf("no eps_storage_bytes for %s once the lease bucket is gone", broker.StreamEvents)
	}
}
