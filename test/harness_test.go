// Package test holds the end-to-end tests: the whole broker, in-process or
// as its real binary, with an embedded NATS JetStream server on a temp dir,
// driven over HTTP and NATS as its users drive it.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// fixtures is where the NHS example messages are kept in this repository.
const fixtures = "testdata/nhs/nhs-eps-api"

// testBroker is a broker running in-process on a temp data dir.
type testBroker struct {
	t    testing.TB
	App  *app.App
	URL  string
	Dir  string
	stop func()
}

// startBroker starts a broker on dir (a new temp dir when empty).
func startBroker(t testing.TB, dir string, mutate ...func(*config.Config)) *testBroker {
	t.Helper()
	return startBrokerClock(t, dir, nil, mutate...)
}

// startBrokerClock starts a broker whose clock is now (time.Now when nil).
func startBrokerClock(t testing.TB, dir string, now func() time.Time, mutate ...func(*config.Config)) *testBroker {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.ShutdownDelay = 0 // stop at once (drain_test.go tests the delay)
	for _, m := range mutate {
		m(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log, now)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := a.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	b := &testBroker{t: t, App: a, URL: "http://" + a.Addr(), Dir: dir}
	var once bool
	b.stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("broker stopped with %v", err)
		}
	}
	t.Cleanup(b.stop)
	return b
}

// token mints a bearer token that the broker accepts.
func (b *testBroker) token(role auth.Role, ods string) string {
	b.t.Helper()
	tok, err := auth.Mint(b.App.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: string(role) + "-user-" + ods, ODS: ods, Role: role}, time.Hour, time.Now())
	if err != nil {
		b.t.Fatal(err)
	}
	return tok
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// outcome is the part of an OperationOutcome the tests look at.
type outcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity string `json:"severity"`
		Code     string `json:"code"`
		Details  struct {
			Coding []struct{ System, Code, Display string } `json:"coding"`
		} `json:"details"`
		Diagnostics string   `json:"diagnostics"`
		Expression  []string `json:"expression"`
	} `json:"issue"`
}

func (r *response) outcome(t *testing.T) outcome {
	t.Helper()
	var oo outcome
	if err := json.Unmarshal(r.Body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Fatalf("status %d: body is not an OperationOutcome with issues (%v): %s", r.Status, err, r.Body)
	}
	return oo
}

// codes lists every details.coding code of an OperationOutcome.
func (oo outcome) codes() []string {
	var out []string
	for _, is := range oo.Issue {
		for _, c := range is.Details.Coding {
			out = append(out, c.Code)
		}
	}
	return out
}

func (oo outcome) hasCode(code string) bool {
	for _, c := range oo.codes() {
		if c == code {
			return true
		}
	}
	return false
}

func (b *testBroker) do(method, path, token string, body []byte, headers ...string) *response {
	b.t.Helper()
	req, err := http.NewRequest(method, b.URL+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: rb}
}

func (b *testBroker) post(token string, body []byte, headers ...string) *response {
	b.t.Helper()
	return b.do(http.MethodPost, "/FHIR/R4/$process-message", token, body, headers...)
}

// events counts the event log messages about one prescription (all
// prescriptions when id is empty).
func (b *testBroker) events(id string) uint64 {
	b.t.Helper()
	ctx := context.Background()
	s, err := b.App.Store.JetStream().Stream(ctx, broker.StreamEvents)
	if err != nil {
		b.t.Fatal(err)
	}
	if id == "" {
		info, err := s.Info(ctx)
		if err != nil {
			b.t.Fatal(err)
		}
		return info.State.Msgs
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(broker.SubjectRx+id))
	if err != nil {
		b.t.Fatal(err)
	}
	return info.State.Subjects[broker.SubjectRx+id]
}

// readyQueue is what a nominated release reads: a dispenser's ready queue
// (up to limit entries, oldest first) once the queues hold every event the
// log held when it is called.
func (b *testBroker) readyQueue(ctx context.Context, ods string, limit int) ([]service.QueueEntry, error) {
	if err := b.App.Tracker.CatchUp(ctx); err != nil {
		return nil, err
	}
	return b.App.Tracker.ReadyQueue(ods, 0, limit), nil
}

// settle waits until the projections have applied every event in the log
// when it is called: the notifier's and the tracker index's (with the
// ready queues) applied sequences (a message waiting for a redelivery holds them back).
// On a timeout it fails with each projection's state.
func (b *testBroker) settle() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	si, err := b.App.Store.JetStream().Stream(ctx, broker.StreamEvents)
	if err != nil {
		b.t.Fatal(err)
	}
	target := si.CachedInfo().State.LastSeq
	qerr := b.App.Notifier().WaitApplied(ctx, target)
	terr := b.App.Tracker.Index.WaitApplied(ctx, target)
	if qerr == nil && terr == nil {
		return
	}
	state := fmt.Sprintf("projections did not apply the event log up to %d in 20s:\n  %s\n  %s (index applied %d)",
		target, b.App.Notifier().State(), b.App.Tracker.State(), b.App.Tracker.Index.Applied())
	if c, err := b.App.Store.JetStream().Consumer(context.Background(), broker.StreamEvents, broker.ConsumerQueueProjector); err == nil {
		if info, err := c.Info(context.Background()); err == nil {
			state += fmt.Sprintf("\n  %s on the server: pending %d, ack pending %d, redelivered %d, ack floor %d",
				broker.ConsumerQueueProjector, info.NumPending, info.NumAckPending, info.NumRedelivered, info.AckFloor.Stream)
		}
	}
	b.t.Fatal(state)
}

// orderFixtures lists the signed prescription-order fixtures (the
// *-Process-Request-*Send*200_OK.json files whose event is
// prescription-order).
func orderFixtures(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(fixtures, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		if strings.Contains(name, "Process-Request") && strings.Contains(name, "Send") && strings.HasSuffix(name, "200_OK.json") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 15 {
		t.Fatalf("found only %d order fixtures under %s", len(out), fixtures)
	}
	return out
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// orderFacts reads what a test needs from an order fixture.
type orderFacts struct {
	BundleID, ShortID, Sender, Performer, SiteType string
}

func factsOf(t testing.TB, body []byte) orderFacts {
	t.Helper()
	var b struct {
		Identifier struct{ Value string } `json:"identifier"`
		Entry      []struct {
			Resource json.RawMessage `json:"resource"`
		} `json:"entry"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	f := orderFacts{BundleID: b.Identifier.Value}
	for _, e := range b.Entry {
		var r struct {
			ResourceType string `json:"resourceType"`
			Sender       struct {
				Identifier struct{ Value string } `json:"identifier"`
			} `json:"sender"`
			GroupIdentifier struct{ Value string } `json:"groupIdentifier"`
			DispenseRequest struct {
				Performer struct {
					Identifier struct{ Value string } `json:"identifier"`
				} `json:"performer"`
				Extension []struct {
					URL         string                `json:"url"`
					ValueCoding struct{ Code string } `json:"valueCoding"`
				} `json:"extension"`
			} `json:"dispenseRequest"`
		}
		if err := json.Unmarshal(e.Resource, &r); err != nil {
			t.Fatal(err)
		}
		switch r.ResourceType {
		case "MessageHeader":
			f.Sender = r.Sender.Identifier.Value
		case "MedicationRequest":
			f.ShortID = r.GroupIdentifier.Value
			f.Performer = r.DispenseRequest.Performer.Identifier.Value
			for _, x := range r.DispenseRequest.Extension {
				if strings.HasSuffix(x.URL, "Extension-DM-PerformerSiteType") {
					f.SiteType = x.ValueCoding.Code
				}
			}
		}
	}
	return f
}

type configT = config.Config

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func mustDecode(b []byte) map[string]any {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		panic(err)
	}
	return m
}

// orderWorkers starts n goroutines on wg, each sending orders made from
// tmpl (new identifiers each) one after another until stop is closed: send
// sends one, and its worker ends when it returns false. A template error
// fails the test.
func orderWorkers(t *testing.T, wg *sync.WaitGroup, n int, stop <-chan struct{}, tmpl *fhirgen.Template, send func(g *fhirgen.Generated) bool) {
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				g, err := tmpl.Order(fhirgen.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				if !send(g) {
					return
				}
			}
		})
	}
}

// wake tells whoever waits on ch (a buffer of one) that something
// happened, without waiting: one wake-up stands for any number.
func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
