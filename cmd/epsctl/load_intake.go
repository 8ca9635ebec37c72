package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The sides of the intake phases.
const (
	sideBroker   = "broker"    // HTTP intake of the broker
	sideRaw      = "raw"       // raw JetStream publish of the same bytes and headers, one at a time per client
	sideFloor    = "floor"     // an HTTP server that only reads the body and answers 200
	sideRawAsync = "raw-async" // raw JetStream, async-batched (interval sync only)
	sideOpenLoop = "broker-fixed-rate"
)

// baselineStream is the raw side's stream, a copy of the event log's
// settings on its own subjects; deleted after the run.
const (
	baselineStream  = "LOAD_BASELINE"
	baselineSubject = "load.rx."
)

// refusedError is an overload answer (503 or 429): counted apart from failures.
type refusedError struct{ status int }

func (e refusedError) Error() string { return fmt.Sprintf("status %d", e.status) }

// intakeTarget is what the intake phases send to.
type intakeTarget struct {
	base    string
	floor   string
	tokens  []string // one per client where the broker is in-process
	client  *http.Client
	js      jetstream.JetStream
	jsAsync jetstream.JetStream
	record  []byte   // an Eps-Record header of the broker's, for the raw side
	app     *app.App // the in-process broker; nil with --url
	orders  *orderGen

	settleWarned bool
}

func (t *intakeTarget) gen() *fhirgen.Generated { return t.orders.order() }

func (t *intakeTarget) token(worker int) string { return t.tokens[worker%len(t.tokens)] }

// post sends an order to base (the broker or the floor) as the broker is sent one.
func (t *intakeTarget) post(ctx context.Context, base, token string, body []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/FHIR/R4/$process-message", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := t.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	switch res.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return refusedError{res.StatusCode}
	}
	return fmt.Errorf("status %d", res.StatusCode)
}

// rawMsg is the event the broker would write for g: the same bytes, the
// same headers (the record of the same size), on the baseline stream.
func (t *intakeTarget) rawMsg(g *fhirgen.Generated) *nats.Msg {
	msg := &nats.Msg{Subject: baselineSubject + g.ShortID, Data: g.Body, Header: nats.Header{}}
	msg.Header.Set(broker.HeaderEvent, "prescription-order")
	msg.Header.Set(broker.HeaderMessageID, g.BundleID)
	msg.Header.Set(broker.HeaderRecord, string(t.record))
	return msg
}

func (t *intakeTarget) op(side string) func(context.Context, int, *fhirgen.Generated) error {
	switch side {
	case sideBroker:
		return func(ctx context.Context, w int, g *fhirgen.Generated) error {
			return t.post(ctx, t.base, t.token(w), g.Body)
		}
	case sideFloor:
		return func(ctx context.Context, w int, g *fhirgen.Generated) error {
			return t.post(ctx, t.floor, t.token(w), g.Body)
		}
	case sideRaw:
		return func(ctx context.Context, _ int, g *fhirgen.Generated) error {
			_, err := t.js.PublishMsg(ctx, t.rawMsg(g), jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithExpectStream(baselineStream))
			return err
		}
	}
	panic("epsctl load: no side " + side)
}

// loadPhase is one timed phase of a load run.
type loadPhase struct {
	Side         string  `json:"side"`
	Concurrency  int     `json:"concurrency"` // clients; the window of outstanding acknowledgements for raw-async; 0 for the fixed-rate phase
	Round        int     `json:"round"`       // from 1; 0 for the fixed-rate phase
	TargetRate   float64 `json:"target_rate,omitempty"`
	OK           int64   `json:"ok"`
	Failed       int64   `json:"failed"`
	Refused      int64   `json:"refused_503_429"`
	Late         int64   `json:"not_sent_too_many_in_flight,omitempty"`
	FirstFailure string  `json:"first_failure,omitempty"`
	Seconds      float64 `json:"seconds"`
	Rate         float64 `json:"orders_per_second"`
	P50          float64 `json:"p50_ms"`
	P99          float64 `json:"p99_ms"`
	P999         float64 `json:"p99_9_ms"`
	Max          float64 `json:"max_ms"`
	CPUPerOrder  float64 `json:"cpu_us_per_order"`
	// CatchUp is how long after a broker phase the consumers of the event
	// log (its projections) took to apply everything: the next phase
	// starts then (not timed); -1 when it was not measured.
	CatchUp float64 `json:"projections_caught_up_after_seconds"`
	// Commits is what the in-process broker's group commit did during a
	// broker phase (and until its projections caught up).
	Commits *commitStats `json:"commits,omitempty"`

	hist *hdrhistogram.Histogram // microseconds
}

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 120_000_000, 3) }

// finish sets the figures from the counts, histogram, elapsed and CPU time.
func (p *loadPhase) finish(elapsed, cpu time.Duration) {
	p.Seconds = elapsed.Seconds()
	if p.Seconds > 0 {
		p.Rate = float64(p.OK) / p.Seconds
	}
	p.P50, p.P99, p.P999, p.Max = quantilesMS(p.hist)
	if n := p.OK + p.Failed + p.Refused; n > 0 {
		p.CPUPerOrder = float64(cpu.Microseconds()) / float64(n)
	}
}

func quantilesMS(h *hdrhistogram.Histogram) (p50, p99, p999, max float64) {
	if h.TotalCount() == 0 {
		return 0, 0, 0, 0
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return ms(h.ValueAtQuantile(50)), ms(h.ValueAtQuantile(99)), ms(h.ValueAtQuantile(99.9)), ms(h.Max())
}

// phaseCounter counts a phase's outcomes from many goroutines.
type phaseCounter struct {
	ok, fail, refused atomic.Int64
	errOnce           sync.Once
	firstErr          atomic.Value // string
	mu                sync.Mutex
}

func (c *phaseCounter) failed(err error) {
	if errors.As(err, new(refusedError)) {
		c.refused.Add(1)
		return
	}
	c.fail.Add(1)
	c.errOnce.Do(func() { c.firstErr.Store(err.Error()) })
}

func (c *phaseCounter) into(p *loadPhase) {
	p.OK, p.Failed, p.Refused = c.ok.Load(), c.fail.Load(), c.refused.Load()
	if s, ok := c.firstErr.Load().(string); ok {
		p.FirstFailure = s
	}
}

// runPhase runs op with concurrency clients for d (no new request after
// d; those in flight finish, and the rate is over the time until they
// have) and records each successful call's latency (which excludes
// generating its order; the rate includes it, alike on every side).
func runPhase(ctx context.Context, side string, round, concurrency int, d time.Duration, gen func() *fhirgen.Generated,
	op func(context.Context, int, *fhirgen.Generated) error) *loadPhase {
	p := &loadPhase{Side: side, Round: round, Concurrency: concurrency, hist: newHist(), CatchUp: -1}
	var c phaseCounter
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cpu0, start := cpuClock(), time.Now()
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := newHist()
			for pctx.Err() == nil {
				g := gen()
				t0 := time.Now()
				// The request runs to its end even when the phase ends
				// meanwhile: cutting it off would leave the broker an
				// order half-taken (and log it as an error).
				if err := op(ctx, w, g); err != nil {
					if ctx.Err() == nil {
						c.failed(err)
					}
					continue
				}
				_ = local.RecordValue(time.Since(t0).Microseconds())
				c.ok.Add(1)
			}
			c.mu.Lock()
			p.hist.Merge(local)
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	c.into(p)
	p.finish(time.Since(start), cpuClock()-cpu0)
	return p
}

// runAsyncPhase publishes raw events with PublishMsgAsync from publishers
// goroutines, about window acknowledgements outstanding in all (the
// futures not yet read, window/publishers each; the JetStream context
// allows twice the window, so that it never stalls first). A message's
// latency is from its publish to its acknowledgement (read in publish
// order).
func runAsyncPhase(ctx context.Context, t *intakeTarget, round, window, publishers int, d time.Duration) *loadPhase {
	p := &loadPhase{Side: sideRawAsync, Round: round, Concurrency: window, hist: newHist(), CatchUp: -1}
	var c phaseCounter
	type pending struct {
		f  jetstream.PubAckFuture
		t0 time.Time
	}
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cpu0, start := cpuClock(), time.Now()
	var wg sync.WaitGroup
	for w := 0; w < publishers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := make(chan pending, max(1, window/publishers))
			done := make(chan struct{})
			local := newHist()
			go func() {
				defer close(done)
				for pd := range q {
					select {
					case <-pd.f.Ok():
						_ = local.RecordValue(time.Since(pd.t0).Microseconds())
						c.ok.Add(1)
					case err := <-pd.f.Err():
						c.failed(err)
					}
				}
			}()
			for pctx.Err() == nil {
				g := t.gen()
				t0 := time.Now()
				f, err := t.jsAsync.PublishMsgAsync(t.rawMsg(g), jetstream.WithExpectLastSequencePerSubject(0), jetstream.WithExpectStream(baselineStream))
				if err != nil {
					c.failed(err)
					continue
				}
				q <- pending{f, t0}
			}
			close(q)
			<-done
			c.mu.Lock()
			p.hist.Merge(local)
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	c.into(p)
	p.finish(time.Since(start), cpuClock()-cpu0)
	return p
}

// runOpenLoop sends orders to the broker at a fixed rate for d, whatever
// the answers' speed (open loop). Latency counts from when an order was
// due, so a broker that falls behind shows it (no coordinated omission).
// At most maxInFlight are outstanding; an order due beyond that is counted
// as not sent.
func runOpenLoop(ctx context.Context, t *intakeTarget, rate float64, d time.Duration) *loadPhase {
	const maxInFlight = 8192
	p := &loadPhase{Side: sideOpenLoop, TargetRate: rate, hist: newHist(), CatchUp: -1}
	var c phaseCounter
	var late atomic.Int64
	sem := make(chan struct{}, maxInFlight)
	op := t.op(sideBroker)
	interval := time.Duration(float64(time.Second) / rate)
	cpu0, start := cpuClock(), time.Now()
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		select {
		case sem <- struct{}{}:
		default:
			late.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			g := t.gen()
			if err := op(ctx, i, g); err != nil {
				if ctx.Err() == nil {
					c.failed(err)
				}
				return
			}
			c.mu.Lock()
			_ = p.hist.RecordValue(time.Since(due).Microseconds())
			c.mu.Unlock()
			c.ok.Add(1)
		}()
	}
	wg.Wait()
	c.into(p)
	p.Late = late.Load()
	p.finish(time.Since(start), cpuClock()-cpu0)
	return p
}

// startFloor starts the HTTP floor: a server that reads the body and
// answers 200 with a small body; TLS when the broker is served over TLS.
func startFloor(tls bool) *httptest.Server {
	answer := []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"information","code":"informational"}]}`)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/fhir+json")
		_, _ = w.Write(answer)
	})
	s := httptest.NewUnstartedServer(h)
	if tls {
		s.StartTLS()
	} else {
		s.Start()
	}
	return s
}

// loadSide is a side of the intake phases: what kind of side (sideBroker,
// sideRaw, sideFloor) against which target.
type loadSide struct {
	name string
	kind string
	t    *intakeTarget
}

// The sides of a --cluster run against the broker on the three-node cluster.
const (
	sideClusterBroker   = "cluster-broker" // HTTP intake of a broker on the cluster, R3 streams
	sideClusterRaw      = "cluster-raw"    // raw JetStream publishes on the cluster, an R3 stream
	sideClusterOpenLoop = "cluster-fixed-rate"
)

// runIntake runs the intake rounds and the fixed-rate phase.
func runIntake(ctx context.Context, e *env, info io.Writer, o *loadOptions) (*intakeReport, int) {
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	maxConc := 0
	for _, c := range o.concurrency {
		maxConc = max(maxConc, c)
	}
	orders, err := newOrderGen(tmpl, o.sender, o.performer)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	t := &intakeTarget{orders: orders, base: o.url, tokens: []string{o.token}}
	var tc *intakeTarget // the broker on the cluster (--cluster)
	var nc, ncCluster *nats.Conn
	var placements []streamPlacement
	if o.url == "" {
		dir := o.dataDir
		if dir == "" {
			var remove func()
			if dir, remove, err = makeTempDir("epsload"); err != nil {
				fmt.Fprintln(e.stderr, "epsctl load:", err)
				return nil, exitFailure
			}
			defer remove()
		}
		cfg := config.Default()
		cfg.DataDir, cfg.HTTPAddr, cfg.JetStreamSync, cfg.LogLevel = dir, "127.0.0.1:0", o.syncPolicy, "warn"
		cfg.DebugListen, cfg.TokenCacheSize = o.debugListen, o.tokenCache
		a, stop, code := startIntakeBroker(ctx, e, cfg, t, maxConc)
		if code != exitOK {
			return nil, code
		}
		defer stop()
		nc = a.NATS.Conn
		fmt.Fprintf(info, "in-process broker on %s, JetStream sync %s, token cache %d, data dir %s\n", t.base, o.syncPolicy, cfg.TokenCacheSize, dir)
		if d := a.DebugAddr(); d != "" {
			fmt.Fprintf(info, "profiles of the in-process broker (and of epsctl itself) at http://%s/debug/pprof/\n", d)
		}
		if o.cluster {
			cdir := filepath.Join(dir, "cluster")
			cl, err := startLoadCluster(ctx, cdir, o.syncPolicy, int32(max(cfg.MaxBodyBytes*2, 1<<20)))
			if err != nil {
				fmt.Fprintln(e.stderr, "epsctl load: start the cluster:", err)
				return nil, exitFailure
			}
			defer cl.stop()
			ccfg := config.Default()
			ccfg.DataDir, ccfg.HTTPAddr, ccfg.JetStreamSync, ccfg.LogLevel = filepath.Join(cdir, "broker"), "127.0.0.1:0", o.syncPolicy, "warn"
			ccfg.TokenCacheSize = o.tokenCache
			ccfg.NATSURL, ccfg.Replicas = strings.Join(cl.URLs, ","), clusterNodes
			tc = &intakeTarget{orders: orders}
			ca, cstop, code := startIntakeBroker(ctx, e, ccfg, tc, maxConc)
			if code != exitOK {
				return nil, code
			}
			defer cstop()
			ncCluster = ca.NATS.Conn
			fmt.Fprintf(info, "in-process broker on %s against a %d-node NATS cluster in this process (loopback, one store dir each under %s), streams R%d, JetStream sync %s\n",
				tc.base, clusterNodes, cdir, ccfg.Replicas, o.syncPolicy)
		}
	} else if o.natsURL != "" {
		if nc, err = nats.Connect(o.natsURL); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return nil, exitFailure
		}
		defer nc.Close()
	}

	tlsOn := strings.HasPrefix(t.base, "https://")
	floor := startFloor(tlsOn)
	defer floor.Close()
	t.floor = floor.URL
	tr := &http.Transport{MaxIdleConnsPerHost: maxConc * 2, MaxConnsPerHost: maxConc * 2}
	if tlsOn {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pool.AddCert(floor.Certificate())
		tr.TLSClientConfig = floor.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		tr.TLSClientConfig.RootCAs = pool
	}
	t.client = &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	if tc != nil {
		tc.client = t.client
	}

	// One order first: it checks the token, and its stored event gives the
	// raw side the broker's record header.
	first := t.gen()
	if err := t.post(ctx, t.base, t.token(0), first.Body); err != nil {
		fmt.Fprintf(e.stderr, "epsctl load: the first order to %s failed: %v\n", t.base, err)
		return nil, exitFailure
	}
	rep := &intakeReport{Order: fmt.Sprintf("4-item NHS order, %d bytes", len(first.Body))}
	if nc != nil {
		if err := t.setUpRaw(ctx, nc, first, o, rep); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load: raw JetStream side:", err)
			return nil, exitFailure
		}
		defer func() { _ = t.js.DeleteStream(context.Background(), baselineStream) }()
	}
	sides := []loadSide{{sideBroker, sideBroker, t}, {sideFloor, sideFloor, t}}
	if t.js != nil {
		sides = []loadSide{{sideRaw, sideRaw, t}, {sideBroker, sideBroker, t}, {sideFloor, sideFloor, t}}
	}
	if tc != nil {
		cfirst := tc.gen()
		if err := tc.post(ctx, tc.base, tc.token(0), cfirst.Body); err != nil {
			fmt.Fprintf(e.stderr, "epsctl load: the first order to the broker on the cluster %s failed: %v\n", tc.base, err)
			return nil, exitFailure
		}
		var crep intakeReport
		if err := tc.setUpRaw(ctx, ncCluster, cfirst, o, &crep); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load: raw JetStream side on the cluster:", err)
			return nil, exitFailure
		}
		defer func() { _ = tc.js.DeleteStream(context.Background(), baselineStream) }()
		if placements, err = streamPlacements(ctx, tc.js); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load: the cluster's streams:", err)
			return nil, exitFailure
		}
		rep.Cluster = &clusterReport{Nodes: clusterNodes, Streams: placements, Note: clusterNote}
		// Single and cluster in turn: raw, broker, cluster-broker,
		// cluster-raw, floor (reversed every other round).
		sides = []loadSide{sides[0], sides[1], {sideClusterBroker, sideBroker, tc}, {sideClusterRaw, sideRaw, tc}, sides[2]}
	}
	async := t.js != nil && o.syncPolicy != config.SyncAlways
	phasesTotal := o.rounds * len(o.concurrency) * len(sides)
	if async {
		phasesTotal += o.rounds
	}
	if o.rate != "off" {
		phasesTotal++
		if tc != nil {
			phasesTotal++
		}
	}
	var bar *progressbar.ProgressBar
	if !o.quiet && isTerminal(e.stderr) {
		bar = progressbar.NewOptions64(int64(phasesTotal)*int64(max(o.duration/time.Second, 1)),
			progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("load"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	timed := func(f func() *loadPhase) *loadPhase {
		stop := tickBar(bar, time.Second)
		defer stop()
		return f()
	}
	for r := 1; r <= o.rounds && ctx.Err() == nil; r++ {
		order := sides
		if r%2 == 0 { // every other round the other way round
			order = make([]loadSide, len(sides))
			for i, s := range sides {
				order[len(sides)-1-i] = s
			}
		}
		for _, conc := range o.concurrency {
			for _, side := range order {
				var before commitStats
				if side.kind == sideBroker && side.t.app != nil {
					before = readCommitStats(side.t.app.Metrics.Registry)
				}
				p := timed(func() *loadPhase {
					return runPhase(ctx, side.name, r, conc, o.duration, side.t.gen, side.t.op(side.kind))
				})
				rep.Phases = append(rep.Phases, p)
				if side.kind == sideBroker && side.t.js != nil {
					p.CatchUp = side.t.settle(ctx, e)
				}
				if side.kind == sideBroker && side.t.app != nil {
					p.Commits = readCommitStats(side.t.app.Metrics.Registry).sub(before)
				}
			}
		}
		if async {
			rep.Phases = append(rep.Phases, timed(func() *loadPhase { return runAsyncPhase(ctx, t, r, o.asyncWindow, o.asyncPublishers, o.duration) }))
		}
	}
	rep.summarise(o.concurrency)
	if rep.Cluster != nil {
		// Where the replicas are after the load: every follower current.
		if rep.Cluster.Streams, err = streamPlacements(ctx, tc.js); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load: the cluster's streams:", err)
			return nil, exitFailure
		}
	}
	if o.rate != "off" && ctx.Err() == nil {
		rate := o.rateValue
		if o.rate == "half" {
			rate = rep.saturated(maxConc) / 2
		}
		if rate > 0 {
			p := timed(func() *loadPhase { return runOpenLoop(ctx, t, rate, o.duration) })
			if t.js != nil {
				p.CatchUp = t.settle(ctx, e)
			}
			rep.FixedRate = p
		}
		if tc != nil {
			// The cluster at half its own saturated rate (or --rate).
			rate := o.rateValue
			if o.rate == "half" {
				if cs := rep.summary(sideClusterBroker, maxConc); cs != nil {
					rate = cs.Rate / 2
				}
			}
			if rate > 0 && ctx.Err() == nil {
				p := timed(func() *loadPhase { return runOpenLoop(ctx, tc, rate, o.duration) })
				p.Side = sideClusterOpenLoop
				p.CatchUp = tc.settle(ctx, e)
				rep.ClusterFixedRate = p
			}
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return rep, exitOK
}

// startIntakeBroker starts an in-process broker under cfg for the intake
// phases and sets t's base URL, app and tokens: one per client, as many
// prescribing systems, so that the broker's per-user rate limit applies
// to each, not to the whole load.
func startIntakeBroker(ctx context.Context, e *env, cfg config.Config, t *intakeTarget, clients int) (*app.App, func(), int) {
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, nil, exitUsage
	}
	a, stop, err := startApp(ctx, cfg)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load: start broker:", err)
		return nil, nil, exitFailure
	}
	t.base, t.app, t.tokens = "http://"+a.Addr(), a, nil
	for i := 0; i < clients; i++ {
		tok, err := auth.Mint(a.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: fmt.Sprintf("load-%d", i), ODS: t.orders.base.Sender, Role: auth.RolePrescriber}, cfg.TokenMaxLifetime, time.Now())
		if err != nil {
			stop()
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return nil, nil, exitFailure
		}
		t.tokens = append(t.tokens, tok)
	}
	return a, stop, exitOK
}

// setUpRaw makes the baseline stream with the event log's settings, reads
// the first order's event for its record header, and makes the JetStream
// contexts of the raw sides.
func (t *intakeTarget) setUpRaw(ctx context.Context, nc *nats.Conn, first *fhirgen.Generated, o *loadOptions, rep *intakeReport) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	events, err := js.Stream(ctx, broker.StreamEvents)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	raw, err := events.GetLastMsgForSubject(ctx, broker.SubjectRx+first.ShortID)
	if err != nil {
		return fmt.Errorf("the first order's event: %w", err)
	}
	t.record = []byte(raw.Header.Get(broker.HeaderRecord))
	if len(t.record) == 0 {
		return fmt.Errorf("the first order's event has no %s header", broker.HeaderRecord)
	}
	cfg := events.CachedInfo().Config
	cfg.Name, cfg.Description, cfg.Subjects = baselineStream, "epsctl load: raw publishes of the broker's events", []string{baselineSubject + ">"}
	cfg.MaxBytes, cfg.MaxMsgs, cfg.MaxAge = -1, -1, 0
	cfg.Mirror, cfg.Sources, cfg.SubjectTransform, cfg.RePublish, cfg.Metadata = nil, nil, nil, nil, nil
	cfg.Sealed, cfg.DenyDelete, cfg.DenyPurge, cfg.FirstSeq, cfg.Template = false, false, false, 0, ""
	if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("stream %s: %w", baselineStream, err)
	}
	t.js = js
	rep.RawHeaders = fmt.Sprintf("%s, %s, %s (%d bytes, the first order's); stream %s with %s's settings (storage %s, replicas %d)",
		broker.HeaderEvent, broker.HeaderMessageID, broker.HeaderRecord, len(t.record), baselineStream, broker.StreamEvents, cfg.Storage, cfg.Replicas)
	if o.syncPolicy != config.SyncAlways {
		if t.jsAsync, err = jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*o.asyncWindow+2),
			jetstream.WithPublishAsyncTimeout(30*time.Second)); err != nil {
			return err
		}
	}
	return nil
}

// settleLimit is the longest settle waits for the projections.
const settleLimit = 2 * time.Minute

// settle waits until every consumer of the event log has applied
// everything (nothing pending, nothing unacknowledged), at most
// settleLimit, and returns how long that took in seconds (-1: unknown).
func (t *intakeTarget) settle(ctx context.Context, e *env) float64 {
	start := time.Now()
	if err := waitConsumers(ctx, t.js, settleLimit); err != nil {
		if !t.settleWarned {
			t.settleWarned = true
			fmt.Fprintln(e.stderr, "epsctl load: waiting for the event log's consumers:", err)
		}
		return -1
	}
	return time.Since(start).Seconds()
}

// waitConsumers waits until every consumer of the event log has nothing
// pending and nothing unacknowledged, at most limit.
func waitConsumers(ctx context.Context, js jetstream.JetStream, limit time.Duration) error {
	st, err := js.Stream(ctx, broker.StreamEvents)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		behind := ""
		l := st.ListConsumers(ctx)
		for ci := range l.Info() {
			if ci.NumPending > 0 || ci.NumAckPending > 0 {
				behind = fmt.Sprintf("%s: %d pending, %d unacknowledged", ci.Name, ci.NumPending, ci.NumAckPending)
			}
		}
		if err := l.Err(); err != nil {
			return err
		}
		if behind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still behind after %s: %s", limit, behind)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// tickBar adds a second to bar every second until stop is called.
func tickBar(bar *progressbar.ProgressBar, every time.Duration) (stop func()) {
	if bar == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				_ = bar.Add(1)
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// startApp starts an in-process broker and serves it; stop drains it and
// waits until it has stopped.
func startApp(ctx context.Context, cfg config.Config) (*app.App, func(), error) {
	cfg.ShutdownDelay = 0 // no load balancer to wait for: stop at once
	actx, cancel := context.WithCancel(ctx)
	a, err := app.New(actx, cfg, zap.NewNop(), nil)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := a.Listen(); err != nil {
		cancel()
		return nil, nil, err
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(actx) }()
	var once sync.Once
	return a, func() { once.Do(func() { cancel(); <-served }) }, nil
}
