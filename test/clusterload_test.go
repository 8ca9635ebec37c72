package test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The fault scenarios' load and what must hold after it: prescribers post
// orders to the broker instances in turn, nominated dispensers release
// theirs through any instance, every answer is kept, and afterwards the
// event log (EPS_EVENTS, read directly) is checked against the answers.
// The deployment under test (embedded NATS nodes in the test process with
// broker instances, or broker processes forming the cluster) is behind
// the deployment interface; the load, the steps' driver and the checks are
// the same for all.

// deployment is a cluster of NATS nodes and broker instances that the
// scenarios load and break.
type deployment interface {
	// brokers is how many broker instances there are; url(k) is broker
	// k's base URL, "" while it is stopped.
	brokers() int
	url(k int) string
	// eventLog reads EPS_EVENTS (once the load is over).
	eventLog(ctx context.Context) *eventCounts
	// later starts, once the load is over, one more broker instance on
	// the deployment's cluster whose clock is ahead by more than
	// service.AbandonAfter, caught up with the event log, and returns its
	// URL: there a retry takes over the X-Request-ID reservation of a
	// request that never answered.
	later(ctx context.Context) string
	stopNode(i int)
	startNode(i int)
	stopBroker(k int)
	startBroker(k int)
	partition(i int, mode cutMode)
	heal(i int)
	// waitCurrent waits until every stream of the broker has a leader and
	// all its replicas current.
	waitCurrent(ctx context.Context)
	// waitCaughtUp waits until broker k's tracker index and ready queues
	// hold the whole event log.
	waitCaughtUp(ctx context.Context, k int)
}

// loadDispensers are the nominated dispensers of the load's orders.
var loadDispensers = []string{"FA565", "FCG71", "FH542"}

// sharedKeys gives every data dir the token issuer key and pseudonym key
// of the first (as instances sharing one NATS cluster must share them),
// and returns the issuer key, to mint tokens every instance accepts.
func sharedKeys(t testing.TB, dirs ...string) ed25519.PrivateKey {
	t.Helper()
	key, err := auth.LoadOrCreateIssuerKey(dirs[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broker.LoadOrCreatePseudonymKey(dirs[0], ""); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dirs[0], "keys", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs[1:] {
		if err := os.MkdirAll(filepath.Join(d, "keys"), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(d, "keys", filepath.Base(f)), readFile(t, f), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return key
}

// answer is one HTTP exchange of the load as its client saw it.
type answer struct {
	status int // 0: no answer (err says why)
	err    error
	kind   string // for a 5xx: status and OperationOutcome code
	body   []byte
	header http.Header
	start  time.Time
	took   time.Duration
}

// refused says the broker was not there to take the request (stopped):
// nothing was sent.
func (a answer) refused() bool { return errors.Is(a.err, syscall.ECONNREFUSED) }

// unknown says the request may or may not have taken effect: a 5xx, or a
// connection lost or timed out after the request was sent.
func (a answer) unknown() bool { return a.status >= 500 || (a.status == 0 && !a.refused()) }

// load drives a deployment and records every answer.
type load struct {
	t    testing.TB
	d    deployment
	key  ed25519.PrivateKey
	tmpl *fhirgen.Template
	http *http.Client

	mu        sync.Mutex
	acked     map[string]bool   // order ShortID -> answered 200
	unknown   map[string]string // order ShortID -> what it got (5xx or lost)
	releases  map[string][]string
	handedOut map[string]string   // prescription ID -> the release (X-Request-ID) that handed it over
	twice     []string            // prescription IDs handed over by two releases
	attempts  map[string][]string // release X-Request-ID -> each attempt's broker and answer
	kinds     map[string]int      // 5xx and lost answers by kind ("order 503 SERVICE_UNAVAILABLE")
	wrong     []string            // answers that are neither correct nor a 5xx
	outages   [][2]time.Time      // spans of requests answered 5xx or lost
	refusedN  atomic.Int64
	// After the load: the requests a client must resend with the same
	// X-Request-ID until it has a definite answer, and what they got.
	undecided   map[string]string    // release X-Request-ID -> its dispenser, last answer not 200
	resendOrder map[string]sentOrder // order ShortID -> the request (answered 5xx or lost)
	retried     map[string][]string  // release X-Request-ID -> what its resend handed over
	resends     int                  // resend attempts (orders and releases)
	replayed    int                  // resent orders answered from their X-Request-ID's record
	only        string               // when set (after the load): every request goes to this URL
	ackedN      atomic.Int64
	ackedBy     [3]atomic.Int64 // orders acknowledged by each broker
	releasedN   atomic.Int64
	seq         atomic.Int64
	rr          atomic.Int64
	avoid       [3]atomic.Int64 // until when (Unix ns) each broker is passed over
}

func newLoad(t testing.TB, d deployment, key ed25519.PrivateKey) *load {
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	return &load{t: t, d: d, key: key, tmpl: tmpl,
		http:  &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		acked: map[string]bool{}, unknown: map[string]string{}, releases: map[string][]string{},
		handedOut: map[string]string{}, kinds: map[string]int{}, attempts: map[string][]string{},
		undecided: map[string]string{}, resendOrder: map[string]sentOrder{}, retried: map[string][]string{}}
}

func (l *load) token(role auth.Role, ods string) string {
	tok, err := auth.Mint(l.key, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: string(role) + "-user-" + ods, ODS: ods, Role: role}, time.Hour, time.Now())
	if err != nil {
		panic(err)
	}
	return tok
}

// send posts body to path on broker k (-1: the later broker, l.only).
func (l *load) send(k int, path, token, requestID string, body []byte) answer {
	a := answer{start: time.Now()}
	u := l.only
	if k >= 0 {
		u = l.d.url(k)
	}
	if u == "" {
		a.err, a.kind = syscall.ECONNREFUSED, "connection refused"
		return a
	}
	req, _ := http.NewRequest(http.MethodPost, u+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Request-ID", requestID)
	res, err := l.http.Do(req)
	if err == nil {
		a.status, a.header = res.StatusCode, res.Header
		a.body, err = io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			a.status = 0
		}
	}
	a.err, a.took = err, time.Since(a.start)
	if a.status >= 500 {
		var oo outcome
		_ = json.Unmarshal(a.body, &oo)
		a.kind = fmt.Sprint(a.status)
		if codes := oo.codes(); len(codes) > 0 {
			a.kind += " " + codes[0]
		}
	} else if a.refused() {
		a.kind = "connection refused"
	} else if a.status == 0 {
		// What the connection said, without addresses: "EOF",
		// "connection reset by peer", a timeout.
		msg := err.Error()
		a.kind = "no answer: " + strings.TrimSpace(msg[strings.LastIndex(msg, ": ")+1:])
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(msg, "Client.Timeout") {
			a.kind = "no answer in 60s"
		}
	}
	return a
}

// note records an answer that is not the success the caller expected:
// it says whether the caller may go on (a refused connection, a 5xx, a
// lost answer, a 503 or 429 with Retry-After, a 409 in flight); anything
// else is kept as wrong.
func (l *load) note(what string, a answer) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case a.refused():
		l.refusedN.Add(1)
		return
	case a.unknown():
		l.kinds[what+" "+a.kind]++
		l.outages = append(l.outages, [2]time.Time{a.start, a.start.Add(a.took)})
		if (a.status == 503 || a.status == 429) && a.header.Get("Retry-After") == "" {
			l.wrong = append(l.wrong, fmt.Sprintf("%s: %d without Retry-After: %.300s", what, a.status, a.body))
		}
	case (a.status == 429 || a.status == 409) && a.header.Get("Retry-After") != "":
		l.kinds[what+" "+fmt.Sprint(a.status)]++
	default:
		l.wrong = append(l.wrong, fmt.Sprintf("%s: %d %v: %.300s", what, a.status, a.err, a.body))
	}
}

// next picks the broker for a request, in turn, passing over those that
// answered 503 or 429 less than their Retry-After ago, lost an answer in
// the last second or refused a connection in the last 200 ms (as a load
// balancer's passive health check does), unless all did.
func (l *load) next() int {
	if l.only != "" {
		return -1
	}
	n := l.d.brokers()
	first := int(l.rr.Add(1))
	for i := range n {
		if k := (first + i) % n; time.Now().UnixNano() >= l.avoid[k].Load() {
			return k
		}
	}
	return first % n
}

// passOver has next pass broker k over after answer a, for its
// Retry-After (503, 429), a second (no answer) or 200 ms (refused).
func (l *load) passOver(k int, a answer) {
	if k < 0 {
		return
	}
	var d time.Duration
	switch {
	case a.status == 503 || a.status == 429:
		secs, _ := strconv.Atoi(a.header.Get("Retry-After"))
		d = time.Duration(max(secs, 1)) * time.Second
	case a.status == 0 && !a.refused():
		d = time.Second
	case a.refused():
		d = 200 * time.Millisecond
	default:
		return
	}
	l.avoid[k].Store(time.Now().Add(d).UnixNano())
}

// prescribe posts new orders until stop, each once, with its own
// X-Request-ID, to the brokers in turn.
func (l *load) prescribe(stop <-chan struct{}, n int) {
	tok := l.token(auth.RolePrescriber, "A83008")
	// A steady intake: each prescriber sends at most 20 orders a second
	// (the machine that runs the cluster runs the load too).
	pace := time.NewTicker(50 * time.Millisecond)
	defer pace.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-pace.C:
		}
		g, err := l.tmpl.Order(fhirgen.Options{Sender: "A83008", Performer: loadDispensers[(n+i)%len(loadDispensers)]})
		if err != nil {
			panic(err)
		}
		k := l.next()
		id := fmt.Sprintf("order-%d", l.seq.Add(1))
		a := l.send(k, "/FHIR/R4/$process-message", tok, id, g.Body)
		l.passOver(k, a)
		switch {
		case a.status == 200:
			l.ackedBy[k].Add(1)
			l.mu.Lock()
			l.acked[g.ShortID] = true
			l.mu.Unlock()
			l.ackedN.Add(1)
		case a.refused():
			l.note("order", a)
		case a.unknown():
			l.mu.Lock()
			l.unknown[g.ShortID] = a.kind
			l.resendOrder[g.ShortID] = sentOrder{g: g, key: id}
			l.mu.Unlock()
			l.note("order", a)
		default:
			l.note("order", a)
		}
	}
}

// release has ods release its ready prescriptions until stop (and once
// stop is closed, until its queue is empty on every instance: drain).
// A release answered 5xx, lost or 409 (in flight) is sent again with the
// same X-Request-ID to the same instance, as the README tells dispensing
// systems to, up to three times; then the dispenser goes on with a new
// release (what the lost one released, if anything, is then with the
// dispenser unreported: the check counts it). An empty answer waits for
// more orders.
func (l *load) release(stop <-chan struct{}, ods string, drain bool) {
	tok := l.token(auth.RoleDispenser, ods)
	body := releaseBody(l.t, ods, "")
	empty := 0
	for {
		if !drain {
			select {
			case <-stop:
				return
			default:
			}
		}
		k := l.next()
		id := fmt.Sprintf("release-%s-%d", ods, l.seq.Add(1))
		var a answer
		for try := 0; ; try++ {
			a = l.send(k, "/FHIR/R4/Task/$release", tok, id, body)
			l.passOver(k, a)
			l.mu.Lock()
			l.attempts[id] = append(l.attempts[id], fmt.Sprintf("broker %d at %s: %d %s", k, a.start.Format("15:04:05.000"), a.status, a.kind))
			l.mu.Unlock()
			if a.status == 200 || a.refused() || (!a.unknown() && a.status != 409) || try == 3 {
				break
			}
			l.note("release", a)
			if a.status == 0 || a.status == 409 || a.status >= 500 {
				time.Sleep(200 * time.Millisecond) // Retry-After pacing
			}
		}
		if a.status != 200 {
			l.note("release", a)
			l.mu.Lock()
			l.undecided[id] = ods
			l.mu.Unlock()
			continue
		}
		ids := releasedIDs(a.body)
		if ids == nil {
			l.note("release (not a release answer)", answer{status: -1, body: a.body})
			continue
		}
		l.mu.Lock()
		l.releases[id] = ids
		l.handOver(id, ids)
		l.mu.Unlock()
		l.releasedN.Add(int64(len(ids)))
		if len(ids) > 0 {
			empty = 0
			continue
		}
		if drain {
			// Drained when every instance answered empty in a row.
			if empty++; empty >= 2*l.d.brokers() {
				return
			}
			continue
		}
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond): // pacing: nothing ready yet
		}
	}
}

// handOver records that release id handed ids over (l.mu held).
func (l *load) handOver(id string, ids []string) {
	for _, p := range ids {
		if prev, ok := l.handedOut[p]; ok {
			l.twice = append(l.twice, fmt.Sprintf("%s by %s and %s", p, prev, id))
		}
		l.handedOut[p] = id
	}
}

// resendUntilDefinite sends a request again with the same X-Request-ID,
// user and body to the later broker (l.only) until it gets a definite
// answer, as a dispensing or prescribing system must: not a 5xx, a lost
// answer or a 409 in flight. Each attempt is kept in l.attempts[id].
func (l *load) resendUntilDefinite(ctx context.Context, path, token, id string, body []byte) answer {
	for {
		a := l.send(-1, path, token, id, body)
		l.mu.Lock()
		l.resends++
		l.attempts[id] = append(l.attempts[id], fmt.Sprintf("resent to the later broker at %s: %d %s", a.start.Format("15:04:05.000"), a.status, a.kind))
		l.mu.Unlock()
		if !a.unknown() && a.status != 409 {
			return a
		}
		select {
		case <-ctx.Done():
			l.t.Fatalf("resend of %s: no definite answer before the test's deadline (last %d %s %.300s)", id, a.status, a.kind, a.body)
		case <-time.After(200 * time.Millisecond): // Retry-After pacing
		}
	}
}

// resendOrders resends every order answered 5xx or lost to the later
// broker: each must be answered 200 (the original answer replayed, its
// order taken, or its abandoned reservation taken over), and is then
// acknowledged (check requires it in the log exactly once).
func (l *load) resendOrders(ctx context.Context) {
	tok := l.token(auth.RolePrescriber, "A83008")
	for _, id := range slices.Sorted(maps.Keys(l.resendOrder)) {
		o := l.resendOrder[id]
		a := l.resendUntilDefinite(ctx, "/FHIR/R4/$process-message", tok, o.key, o.g.Body)
		l.mu.Lock()
		if a.status != 200 {
			l.wrong = append(l.wrong, fmt.Sprintf("order %s (first answered %s) resent with its X-Request-ID: %d %.300s", id, l.unknown[id], a.status, a.body))
		} else {
			l.acked[id] = true
			if a.header.Get("X-Idempotent-Replay") == "true" {
				l.replayed++
			}
		}
		l.mu.Unlock()
	}
}

// resendReleases resends every release whose client never got a definite
// answer (its last attempt answered 5xx, 409 in flight, lost or refused)
// to the later broker, with the same X-Request-ID, user and body, once
// every queue is drained: a release whose request never answered is taken
// over there and hands over what it released; one that released nothing
// finds nothing left to release. What each hands over is kept in
// l.retried and l.handedOut.
func (l *load) resendReleases(ctx context.Context) {
	for _, id := range slices.Sorted(maps.Keys(l.undecided)) {
		ods := l.undecided[id]
		a := l.resendUntilDefinite(ctx, "/FHIR/R4/Task/$release", l.token(auth.RoleDispenser, ods), id, releaseBody(l.t, ods, ""))
		ids := releasedIDs(a.body)
		l.mu.Lock()
		if a.status != 200 || ids == nil {
			l.wrong = append(l.wrong, fmt.Sprintf("release %s resent with its X-Request-ID: %d %.300s", id, a.status, a.body))
		} else {
			l.retried[id] = ids
			l.handOver(id, ids)
		}
		l.mu.Unlock()
	}
}

// releasedIDs reads the prescription IDs of a release answer (nil when it
// is none; empty when it handed out nothing).
func releasedIDs(body []byte) []string {
	var p struct {
		ResourceType string
		Parameter    []struct {
			Name     string
			Resource struct {
				Entry []struct{ Resource json.RawMessage }
			}
		}
	}
	if json.Unmarshal(body, &p) != nil || p.ResourceType != "Parameters" || len(p.Parameter) == 0 || p.Parameter[0].Name != "passedPrescriptions" {
		return nil
	}
	ids := []string{}
	for _, e := range p.Parameter[0].Resource.Entry {
		var b struct {
			Entry []struct {
				Resource struct {
					ResourceType    string
					GroupIdentifier struct{ Value string }
				}
			}
		}
		if json.Unmarshal(e.Resource, &b) != nil {
			return nil
		}
		for _, x := range b.Entry {
			if x.Resource.ResourceType == "MedicationRequest" {
				ids = append(ids, x.Resource.GroupIdentifier.Value)
				break
			}
		}
	}
	return ids
}

// readiness samples every broker's /readyz and sums, per broker, how long
// it answered 503 (not ready while running: no quorum, catching up).
type readiness struct {
	mu       sync.Mutex
	notReady []time.Duration
	reasons  map[string]int
}

func (r *readiness) snapshot() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.notReady)
}

func (l *load) watchReady(stop <-chan struct{}) *readiness {
	r := &readiness{notReady: make([]time.Duration, l.d.brokers()), reasons: map[string]int{}}
	c := &http.Client{Timeout: 5 * time.Second}
	for k := range l.d.brokers() {
		go func() {
			last := time.Now()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				now := time.Now()
				u := l.d.url(k)
				if u == "" {
					last = now
					continue
				}
				res, err := c.Get(u + "/readyz")
				if err != nil {
					// No answer in 5 s (a refused connection is a stopped
					// broker, not counted) is not ready to a load balancer.
					if !errors.Is(err, syscall.ECONNREFUSED) {
						r.mu.Lock()
						r.notReady[k] += time.Since(last)
						r.reasons["no answer"]++
						r.mu.Unlock()
					}
					last = time.Now()
					continue
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusServiceUnavailable {
					// The reason without its figures ("event 24 of 30").
					reason := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "not ready: "))
					reason = strings.TrimRight(strings.Map(func(r rune) rune {
						if r >= '0' && r <= '9' {
							return -1
						}
						return r
					}, reason), " :")
					r.mu.Lock()
					r.notReady[k] += time.Since(last)
					r.reasons[strings.TrimSpace(reason)]++
					r.mu.Unlock()
				}
				last = now
			}
		}()
	}
	return r
}

// step is one fault of a scenario (or a recovery), with what to wait for
// after it.
type step struct {
	name string
	do   func(ctx context.Context)
}

// runScenario loads d with prescribers and dispensers, runs the steps one
// after the other, each once the load has made progress (orders
// acknowledged and prescriptions released since the step before), then
// quiesces, drains every dispenser's queue on every instance, and checks
// the event log against every answer. It logs the figures.
func runScenario(t *testing.T, ctx context.Context, d deployment, key ed25519.PrivateKey, steps []step) {
	l := newLoad(t, d, key)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const prescribers = 4
	for i := range prescribers {
		wg.Add(1)
		go func() { defer wg.Done(); l.prescribe(stop, i) }()
	}
	for _, ods := range loadDispensers {
		wg.Add(1)
		go func() { defer wg.Done(); l.release(stop, ods, false) }()
	}
	ready := l.watchReady(stop)
	start := time.Now()
	progress := func(after string) {
		t.Helper()
		a0, r0 := l.ackedN.Load(), l.releasedN.Load()
		for l.ackedN.Load() < a0+20 || l.releasedN.Load() < r0+10 {
			select {
			case <-ctx.Done():
				close(stop)
				t.Fatalf("after %s: no progress (%d orders acknowledged, %d released since; answers %v)",
					after, l.ackedN.Load()-a0, l.releasedN.Load()-r0, l.figures())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	progress("the start")
	for _, s := range steps {
		t0 := time.Now()
		by := make([]int64, d.brokers())
		for k := range by {
			by[k] = l.ackedBy[k].Load()
		}
		nr := ready.snapshot()
		s.do(ctx)
		progress(s.name)
		for k := range by {
			by[k] = l.ackedBy[k].Load() - by[k]
			nr[k] = (ready.snapshot()[k] - nr[k]).Round(10 * time.Millisecond)
		}
		t.Logf("%s: progress after %s; meanwhile orders acknowledged by each broker %v, /readyz 503 on each %v (%d orders in all so far)",
			s.name, time.Since(t0).Round(time.Millisecond), by, nr, l.ackedN.Load())
	}
	close(stop)
	wg.Wait()
	loaded := time.Since(start)
	defer l.report(t, loaded, ready)
	defer func(t0 time.Time) { t.Logf("catch-up, drain and checks: %s", time.Since(t0).Round(time.Millisecond)) }(time.Now())

	// Quiesced: every instance catches up, every dispenser's queue is
	// drained through the instances in turn.
	for k := range d.brokers() {
		d.waitCaughtUp(ctx, k)
	}
	t.Logf("every broker caught up: %s", time.Since(start).Round(time.Millisecond)-loaded)
	drain := func() {
		var dw sync.WaitGroup
		for _, ods := range loadDispensers {
			dw.Add(1)
			go func() { defer dw.Done(); l.release(nil, ods, true) }()
		}
		dw.Wait()
	}
	drain()
	t.Logf("every queue drained: %s", time.Since(start).Round(time.Millisecond)-loaded)

	// Every request without a definite answer is resent with its
	// X-Request-ID until it gets one, through a broker whose clock is past
	// service.AbandonAfter (rather than waiting two minutes): first the
	// orders, then (what they stored released by a second drain) the
	// releases, once nothing is left to release.
	l.only = d.later(ctx)
	l.resendOrders(ctx)
	drain()
	before := maps.Clone(l.handedOut)
	l.resendReleases(ctx)
	recovered, handed := 0, 0
	for _, ids := range l.retried {
		recovered += min(len(ids), 1)
		handed += len(ids)
	}
	t.Logf("resent with the same X-Request-ID: %d orders (%d answered from their record), %d releases (%d of them handed over %d prescriptions their first attempt released), in %d attempts: %s",
		len(l.resendOrder), l.replayed, len(l.undecided), recovered, handed, l.resends, time.Since(start).Round(time.Millisecond)-loaded)

	l.check(t, ctx, before)
}

// report logs the figures of a scenario.
func (l *load) report(t *testing.T, loaded time.Duration, ready *readiness) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ready.mu.Lock()
	defer ready.mu.Unlock()
	var notReady []string
	for k, dur := range ready.notReady {
		notReady = append(notReady, fmt.Sprintf("broker %d %s", k, dur.Round(10*time.Millisecond)))
	}
	t.Logf("load %s: %d orders acknowledged (%d by a first answer, the rest after a resend), %d releases answered 200 handing out %d prescriptions (resends included), %d requests refused by a stopped broker",
		loaded.Round(time.Millisecond), len(l.acked), l.ackedN.Load(), len(l.releases), len(l.handedOut), l.refusedN.Load())
	t.Logf("5xx and lost answers by kind: %v", l.kinds)
	t.Logf("time without quorum: /readyz 503 on %s (reasons seen %v); writes answered 5xx or lost over %s",
		strings.Join(notReady, ", "), ready.reasons, spanUnion(l.outages).Round(10*time.Millisecond))
}

func (l *load) figures() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.kinds)
}

// spanUnion is how long at least one of the spans lasted.
func spanUnion(spans [][2]time.Time) time.Duration {
	s := slices.Clone(spans)
	sort.Slice(s, func(i, j int) bool { return s[i][0].Before(s[j][0]) })
	var total time.Duration
	var cur [2]time.Time
	for i, sp := range s {
		if i == 0 || sp[0].After(cur[1]) {
			total += cur[1].Sub(cur[0])
			cur = sp
		} else if sp[1].After(cur[1]) {
			cur[1] = sp[1]
		}
	}
	return total + cur[1].Sub(cur[0])
}

// eventCounts is what the checks read of the event log, per prescription:
// its prescription-order events, its release events, and the message ID
// (the release's X-Request-ID) of its last release.
type eventCounts struct {
	orders, releases map[string]int
	releasedUnder    map[string]string
	releasedAt       map[string]string // the sequence and time of its last release event
}

// logCounts reads EPS_EVENTS from the cluster of urls.
func logCounts(t testing.TB, ctx context.Context, urls string) *eventCounts {
	t.Helper()
	ec := &eventCounts{orders: map[string]int{}, releases: map[string]int{}, releasedUnder: map[string]string{}, releasedAt: map[string]string{}}
	// Read from next on; an attempt that fails (a node catching up answers
	// no responders, or a request gets no answer) starts again where it
	// stopped, on a new connection, each request bounded.
	next, last := uint64(1), uint64(0)
	for attempt := 0; ; attempt++ {
		err := readEvents(ctx, urls, ec, &next, &last)
		if err == nil {
			return ec
		}
		if ctx.Err() != nil {
			t.Fatalf("reading %s at %d of %d: %v", broker.StreamEvents, next, last, err)
		}
		t.Logf("reading %s at %d of %d (attempt %d): %v; again", broker.StreamEvents, next, last, attempt, err)
	}
}

// readEvents reads EPS_EVENTS from *next up to its last sequence when the
// read began (*last, found on the first call) into ec.
func readEvents(ctx context.Context, urls string, ec *eventCounts, next, last *uint64) error {
	nc, err := nats.Connect(urls)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(actx, broker.StreamEvents)
	if err != nil {
		return err
	}
	if *last == 0 {
		if *last = s.CachedInfo().State.LastSeq; *last == 0 {
			return nil
		}
	}
	c, err := s.OrderedConsumer(actx, jetstream.OrderedConsumerConfig{HeadersOnly: true,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: *next})
	if err != nil {
		return err
	}
	it, err := c.Messages(jetstream.PullMaxMessages(1000))
	if err != nil {
		return err
	}
	defer it.Stop()
	for *next <= *last {
		m, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
		if err != nil {
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		id := strings.TrimPrefix(m.Subject(), broker.SubjectRx)
		switch m.Headers().Get(broker.HeaderEvent) {
		case rx.EventOrder:
			ec.orders[id]++
		case rx.EventRelease, rx.EventNominatedRelease:
			ec.releases[id]++
			ec.releasedUnder[id] = m.Headers().Get(broker.HeaderMessageID)
			ec.releasedAt[id] = fmt.Sprintf("event %d at %s", meta.Sequence.Stream, meta.Timestamp.Format("15:04:05.000"))
		}
		*next = meta.Sequence.Stream + 1
	}
	return nil
}

// check holds every answer against the event log: each acknowledged order
// (resent ones included) is in the log exactly once; an order answered 5xx
// or lost is there at most once; no prescription was handed out by two
// releases, each handed out has one release event, and after the drain
// every order in the log was released exactly once and handed over by
// exactly one answer (a first answer or a resend's: none to nobody). A
// resent release hands over exactly what the log says it released.
// before is what the first answers handed over (before the resends): the
// prescriptions released but handed to nobody without the resends are
// counted.
func (l *load) check(t *testing.T, ctx context.Context, before map[string]string) {
	t.Helper()
	ec := l.d.eventLog(ctx)
	orders, releases := ec.orders, ec.releases
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.wrong {
		t.Errorf("wrong answer: %s", w)
	}
	for _, w := range l.twice {
		t.Errorf("handed out twice: %s", w)
	}
	for id := range l.acked {
		if orders[id] != 1 {
			t.Errorf("order %s answered 200 is %d times in the event log", id, orders[id])
		}
	}
	present := 0
	for id, kind := range l.unknown {
		switch orders[id] {
		case 0:
		case 1:
			present++
		default:
			t.Errorf("order %s answered %s is %d times in the event log", id, kind, orders[id])
		}
	}
	var unreported []string
	nobodyBefore := 0
	byRelease := map[string][]string{} // release X-Request-ID -> what the log says it released
	for id, rid := range ec.releasedUnder {
		byRelease[rid] = append(byRelease[rid], id)
		if _, ok := before[id]; !ok {
			nobodyBefore++
		}
	}
	for rid, got := range l.retried {
		want := byRelease[rid]
		slices.Sort(want)
		got = slices.Sorted(slices.Values(got))
		if !slices.Equal(got, want) {
			t.Errorf("release %s resent with its X-Request-ID handed over %v; the event log says it released %v; its client saw %v", rid, got, want, l.attempts[rid])
		}
	}
	for id, n := range orders {
		if !l.acked[id] && l.unknown[id] == "" {
			t.Errorf("the event log holds order %s, which no client sent", id)
		}
		switch _, handed := l.handedOut[id]; {
		case releases[id] > 1:
			t.Errorf("prescription %s released %d times in the event log", id, releases[id])
		case releases[id] == 0:
			t.Errorf("prescription %s (%d order events) was never released, though every queue was drained", id, n)
		case !handed:
			unreported = append(unreported, id)
		}
	}
	for id := range l.handedOut {
		if releases[id] != 1 {
			t.Errorf("prescription %s handed out, with %d release events in the log", id, releases[id])
		}
	}
	t.Logf("event log: %d orders (%d acknowledged after the resends, %d of %d first answered 5xx or lost are present), %d released; released but handed to nobody: %d before the resends, %d after",
		len(orders), len(l.acked), present, len(l.unknown), len(releases), nobodyBefore, len(unreported))
	if len(unreported) > 0 {
		// By the release that wrote them, with what its client saw.
		under := map[string][]string{}
		for _, id := range unreported {
			under[ec.releasedUnder[id]] = append(under[ec.releasedUnder[id]], id+" ("+ec.releasedAt[id]+")")
		}
		t.Errorf("%d prescriptions released in the event log but handed to no dispenser, even after every release was resent with its X-Request-ID, by %d releases:", len(unreported), len(under))
		for rid, ids := range under {
			t.Logf("  release %s: %v; its client saw %v; its 200 handed over %v", rid, ids, l.attempts[rid], l.releases[rid])
		}
	}
}

// httpGet is a GET bounded by ctx and 5 s: the status (0 when it failed)
// and the body.
func httpGet(ctx context.Context, url string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
