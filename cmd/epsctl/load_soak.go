package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// The soak's mix: for every soakReleaseEvery orders a nominated release
// of up to 25 (the dispensers in turn: more than arrives, so the queues
// stay short), for every soakSearchEvery orders a search by prescription
// ID (of a recently accepted order).
const (
	soakReleaseEvery = 20
	soakSearchEvery  = 4
	soakMaxInFlight  = 1024 // per kind of request; one due beyond it is counted as not sent
	soakRecentIDs    = 4096 // accepted prescription IDs the searches draw from
)

// soakSample is one sample of a soak: the last interval's traffic and the
// process's and JetStream's state at its end.
type soakSample struct {
	Elapsed     float64 `json:"elapsed_seconds"` // at the sample
	Orders      int64   `json:"orders"`          // accepted in the interval
	OrderRate   float64 `json:"orders_per_second"`
	OrderP99    float64 `json:"order_p99_ms"`
	Releases    int64   `json:"releases"`
	ReleaseP99  float64 `json:"release_p99_ms"`
	Searches    int64   `json:"searches"`
	SearchP99   float64 `json:"search_p99_ms"`
	Failed      int64   `json:"failed"`          // in the interval, every kind
	Refused     int64   `json:"refused_503_429"` // in the interval, every kind
	RSS         int64   `json:"rss_bytes"`
	HeapInuse   uint64  `json:"heap_inuse_bytes"`
	HeapLive    uint64  `json:"heap_live_bytes"` // marked live by the last GC
	Goroutines  int     `json:"goroutines"`
	InFlight    int64   `json:"requests_in_flight"` // the load generator's, at the sample (each holds a connection: its goroutines and FDs count)
	FDs         int     `json:"open_fds"`           // -1: unknown
	StoredBytes uint64  `json:"jetstream_stored_bytes"`
	Pending     uint64  `json:"event_log_consumers_pending"`    // pending and unacknowledged, every consumer of the event log
	Behind      string  `json:"most_behind_consumer,omitempty"` // the consumer with the most pending and unacknowledged
	Leader      string  `json:"event_log_leader,omitempty"`     // the event log's stream leader (a cluster)
	Indexed     int     `json:"tracker_indexed"`
}

// soakReport is what a soak measured.
type soakReport struct {
	Seconds       float64      `json:"seconds"`
	SampleSeconds float64      `json:"sample_seconds"`
	WarmupSeconds float64      `json:"warmup_seconds"`
	Cluster       bool         `json:"cluster"`
	OrderRate     float64      `json:"orders_per_second_offered"`
	ReleaseRate   float64      `json:"releases_per_second_offered"`
	SearchRate    float64      `json:"searches_per_second_offered"`
	Dispensers    int          `json:"dispensers"`
	Samples       []soakSample `json:"samples"`
	Orders        int64        `json:"orders"`
	Releases      int64        `json:"releases"`
	Released      int64        `json:"released"`
	Searches      int64        `json:"searches"`
	Found         int64        `json:"found"`
	Failed        int64        `json:"failed"`
	Refused       int64        `json:"refused_503_429"`
	NotSent       int64        `json:"not_sent_too_many_in_flight"`
	FirstFailure  string       `json:"first_failure,omitempty"`
	// From and To are the samples the growth is measured between: the
	// first at or after the warm-up (the first sample when none is) and
	// the last.
	// LeaderChanges counts the samples whose event log leader differs
	// from the sample before's (a cluster).
	LeaderChanges int         `json:"event_log_leader_changes"`
	From          *soakSample `json:"from"`
	To            *soakSample `json:"to"`
	Verdict       string      `json:"verdict"`
	Note          string      `json:"note"`
}

// soakCounter counts one kind of request of a soak: totals and the
// current interval's latencies.
type soakCounter struct {
	ok, failed, refused atomic.Int64
	mu                  sync.Mutex
	hist                *hdrhistogram.Histogram // this interval's, microseconds
	sumOK               int64                   // ok at the last sample
	sumFailed           int64
	sumRefused          int64
}

func newSoakCounter() *soakCounter { return &soakCounter{hist: newHist()} }

func (c *soakCounter) record(due time.Time) {
	c.mu.Lock()
	_ = c.hist.RecordValue(time.Since(due).Microseconds())
	c.mu.Unlock()
	c.ok.Add(1)
}

// interval returns what happened since the last call: requests answered
// well, failed, refused, and the p99 latency in ms.
func (c *soakCounter) interval() (ok, failed, refused int64, p99 float64) {
	c.mu.Lock()
	h := c.hist
	c.hist = newHist()
	c.mu.Unlock()
	o, f, r := c.ok.Load(), c.failed.Load(), c.refused.Load()
	ok, failed, refused = o-c.sumOK, f-c.sumFailed, r-c.sumRefused
	c.sumOK, c.sumFailed, c.sumRefused = o, f, r
	_, p99, _, _ = quantilesMS(h)
	return ok, failed, refused, p99
}

// soak is a running soak: the broker it loads and what it counts.
type soak struct {
	a          *app.App
	base       string
	client     *http.Client
	gens       []*orderGen
	releases   [][]byte // a release body per dispenser
	prescriber string
	dispensers []string // tokens, one per dispenser
	tracker    string
	orders     *soakCounter
	release    *soakCounter
	search     *soakCounter
	released   atomic.Int64
	found      atomic.Int64
	notSent    atomic.Int64
	inFlight   atomic.Int64

	mu       sync.Mutex
	recent   []string // ring of accepted prescription IDs
	next     int
	firstErr string
}

func (s *soak) fail(c *soakCounter, err error) {
	if _, ok := err.(refusedError); ok {
		c.refused.Add(1)
		return
	}
	c.failed.Add(1)
	s.mu.Lock()
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
	s.mu.Unlock()
}

// do sends a request to the broker and reads the whole answer.
func (s *soak) do(ctx context.Context, method, path, tok string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+tok)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	res, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err == nil && (res.StatusCode == http.StatusServiceUnavailable || res.StatusCode == http.StatusTooManyRequests) {
		err = refusedError{res.StatusCode}
	} else if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s %s: status %d: %.200s", method, strings.SplitN(path, "?", 2)[0], res.StatusCode, b)
	}
	return res.StatusCode, b, err
}

func (s *soak) order(ctx context.Context, i int, due time.Time) {
	g := s.gens[i%len(s.gens)].order()
	if _, _, err := s.do(ctx, http.MethodPost, "/FHIR/R4/$process-message", s.prescriber, g.Body); err != nil {
		if ctx.Err() == nil {
			s.fail(s.orders, err)
		}
		return
	}
	s.orders.record(due)
	s.mu.Lock()
	if len(s.recent) < soakRecentIDs {
		s.recent = append(s.recent, g.ShortID)
	} else {
		s.recent[s.next] = g.ShortID
		s.next = (s.next + 1) % soakRecentIDs
	}
	s.mu.Unlock()
}

func (s *soak) releaseOne(ctx context.Context, i int, due time.Time) {
	d := i % len(s.releases)
	_, body, err := s.do(ctx, http.MethodPost, "/FHIR/R4/Task/$release", s.dispensers[d], s.releases[d])
	if err == nil {
		var n int
		if n, err = releasedCount(body); err == nil {
			s.released.Add(int64(n))
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.fail(s.release, err)
		}
		return
	}
	s.release.record(due)
}

func (s *soak) searchOne(ctx context.Context, i int, due time.Time) {
	s.mu.Lock()
	id := ""
	if len(s.recent) > 0 {
		id = s.recent[(i*7919)%len(s.recent)]
	}
	s.mu.Unlock()
	if id == "" {
		return // nothing accepted yet
	}
	_, body, err := s.do(ctx, http.MethodGet, "/FHIR/R4/RequestGroup?prescriptionId="+url.QueryEscape(id), s.tracker, nil)
	var b struct{ Total int }
	if err == nil {
		if err = json.Unmarshal(body, &b); err != nil {
			err = fmt.Errorf("search: %w", err)
		}
	}
	if err != nil {
		if ctx.Err() == nil {
			s.fail(s.search, err)
		}
		return
	}
	if b.Total > 0 {
		s.found.Add(1)
	}
	s.search.record(due)
}

// openLoop calls fn at rate per second until ctx is done, each call in
// its own goroutine from when it is due (not when the one before
// answered), at most soakMaxInFlight at once; a call due beyond that is
// counted as not sent. It returns when every call has returned.
func (s *soak) openLoop(ctx context.Context, rate float64, fn func(context.Context, int, time.Time)) {
	if rate <= 0 {
		return
	}
	sem := make(chan struct{}, soakMaxInFlight)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			s.notSent.Add(1)
			continue
		}
		wg.Add(1)
		s.inFlight.Add(1)
		go func() {
			defer func() { s.inFlight.Add(-1); <-sem; wg.Done() }()
			// Each request runs to its end even when the soak ends
			// meanwhile: cutting it off would leave a write half-taken.
			fn(context.WithoutCancel(ctx), i, due)
		}()
	}
	wg.Wait()
}

// runSoak runs the soak (--soak) against an in-process broker on a
// single embedded node, or with --cluster on a three-node cluster.
func runSoak(ctx context.Context, e *env, info io.Writer, o *loadOptions) (*soakReport, int) {
	fail := func(err error) (*soakReport, int) {
		fmt.Fprintln(e.stderr, "epsctl load: soak:", err)
		return nil, exitFailure
	}
	dir := o.dataDir
	if dir == "" {
		var remove func()
		var err error
		if dir, remove, err = makeTempDir("epssoak"); err != nil {
			return fail(err)
		}
		defer remove()
	}
	cfg := config.Default()
	cfg.DataDir, cfg.HTTPAddr, cfg.JetStreamSync, cfg.LogLevel = dir, "127.0.0.1:0", o.syncPolicy, "warn"
	cfg.DebugListen, cfg.TokenCacheSize = o.debugListen, o.tokenCache
	where := "a single embedded NATS node (R1)"
	if o.cluster {
		cdir := filepath.Join(dir, "cluster")
		cl, err := startLoadCluster(ctx, cdir, o.syncPolicy, int32(max(cfg.MaxBodyBytes*2, 1<<20)))
		if err != nil {
			return fail(fmt.Errorf("start the cluster: %w", err))
		}
		defer cl.stop()
		cfg.DataDir = filepath.Join(cdir, "broker")
		cfg.NATSURL, cfg.Replicas = strings.Join(cl.URLs, ","), clusterNodes
		where = fmt.Sprintf("a %d-node NATS cluster in this process (loopback, one store dir each under %s), streams R%d", clusterNodes, cdir, clusterNodes)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitUsage
	}
	a, stop, err := startApp(ctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("start broker: %w", err))
	}
	defer stop()
	tmpl, err := oneItemOrder()
	if err != nil {
		return fail(err)
	}
	s := &soak{a: a, base: "http://" + a.Addr(), orders: newSoakCounter(), release: newSoakCounter(), search: newSoakCounter()}
	// Idle connections are closed after a while, so that a burst of slow
	// answers (many connections at once) does not stay in the goroutine
	// and FD counts for the rest of the soak.
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 20 * time.Second}
	s.client = &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	mint := func(sub, ods string, role auth.Role) (string, error) {
		return auth.Mint(a.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: sub, ODS: ods, Role: role}, cfg.TokenMaxLifetime, time.Now())
	}
	if s.prescriber, err = mint("soak-prescriber", o.sender, auth.RolePrescriber); err != nil {
		return fail(err)
	}
	if s.tracker, err = mint("soak-tracker", "X26", auth.RoleTracker); err != nil {
		return fail(err)
	}
	for _, ods := range dispenserCodes(o.dispensers) {
		g, err := newOrderGen(tmpl, o.sender, ods)
		if err != nil {
			return fail(err)
		}
		tok, err := mint("soak-"+ods, ods, auth.RoleDispenser)
		if err != nil {
			return fail(err)
		}
		s.gens, s.dispensers, s.releases = append(s.gens, g), append(s.dispensers, tok), append(s.releases, fhirgen.Release(ods, ""))
	}
	rep := &soakReport{Seconds: o.soak.Seconds(), SampleSeconds: o.sample.Seconds(), WarmupSeconds: o.warmup.Seconds(), Cluster: o.cluster,
		OrderRate: o.soakRate, ReleaseRate: o.soakRate / soakReleaseEvery, SearchRate: o.soakRate / soakSearchEvery, Dispensers: o.dispensers,
		Note: "RSS, heap, goroutines and open FDs are this process's: the broker, its NATS server(s) and the load generator " +
			"(each request in flight or idle keep-alive connection adds goroutines and two FDs, client and server side; idle ones close after 20 s); " +
			"the tracker index grows with every stored prescription (about 324 bytes each), so some heap growth is the data's"}
	fmt.Fprintf(info, "soak: broker on %s against %s, JetStream sync %s, data dir %s\n", s.base, where, o.syncPolicy, dir)
	fmt.Fprintf(info, "offered: %.0f orders/s (1-item, %d dispensers in turn), %.1f nominated releases/s of up to 25, %.1f searches/s by prescription ID; for %s, a sample every %s, growth measured from %s\n\n",
		rep.OrderRate, o.dispensers, rep.ReleaseRate, rep.SearchRate, o.soak, o.sample, o.warmup)
	fmt.Fprintln(info, soakHeader)

	var bar *progressbar.ProgressBar
	if !o.quiet && isTerminal(e.stderr) {
		bar = progressbar.NewOptions64(int64(max(o.soak/time.Second, 1)), progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("soak"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	stopBar := tickBar(bar, time.Second)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range []struct {
		rate float64
		fn   func(context.Context, int, time.Time)
	}{{rep.OrderRate, s.order}, {rep.ReleaseRate, s.releaseOne}, {rep.SearchRate, s.searchOne}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.openLoop(sctx, l.rate, l.fn)
		}()
	}
	// A sample every --sample; the soak ends at the last one (the first
	// at or after --soak), whose interval holds every request's answer.
	start, last := time.Now(), time.Duration(0)
	tk := time.NewTicker(o.sample)
	for done := false; !done && ctx.Err() == nil; {
		select {
		case <-tk.C:
		case <-ctx.Done():
			continue
		}
		if time.Since(start) >= o.soak-o.sample/10 {
			cancel()
			wg.Wait()
			done = true
		}
		elapsed := time.Since(start)
		smp := s.sample(ctx, elapsed, elapsed-last)
		last = elapsed
		rep.Samples = append(rep.Samples, smp)
		if bar != nil {
			_ = bar.Clear()
		}
		printSoakSample(info, &smp)
	}
	tk.Stop()
	stopBar()
	if bar != nil {
		_ = bar.Finish()
	}
	wg.Wait()
	rep.Orders, rep.Releases, rep.Searches = s.orders.ok.Load(), s.release.ok.Load(), s.search.ok.Load()
	rep.Released, rep.Found, rep.NotSent = s.released.Load(), s.found.Load(), s.notSent.Load()
	for _, c := range []*soakCounter{s.orders, s.release, s.search} {
		rep.Failed += c.failed.Load()
		rep.Refused += c.refused.Load()
	}
	rep.FirstFailure = s.firstErr
	rep.verdict(o.warmup)
	return rep, exitOK
}

const soakHeader = "elapsed  orders/s  order p99  release p99  search p99  failed  503/429  RSS MB  heap inuse MB  heap live MB  goroutines  in flight  FDs  stored MB  pending  indexed  leader"

func printSoakSample(w io.Writer, s *soakSample) {
	mb := func(b uint64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "%7s  %8.1f  %9.2f  %11.2f  %10.2f  %6d  %7d  %6.0f  %13.1f  %12.1f  %10d  %9d  %3d  %9.1f  %7d  %7d  %s\n",
		fmtSeconds(s.Elapsed), s.OrderRate, s.OrderP99, s.ReleaseP99, s.SearchP99, s.Failed, s.Refused,
		mb(uint64(max(s.RSS, 0))), mb(s.HeapInuse), mb(s.HeapLive), s.Goroutines, s.InFlight, s.FDs, mb(s.StoredBytes), s.Pending, s.Indexed, s.Leader)
}

// sample takes a sample: the last interval's traffic, then the process's
// memory, goroutines and FDs, and JetStream's stored bytes and pending.
func (s *soak) sample(ctx context.Context, elapsed, interval time.Duration) soakSample {
	smp := soakSample{Elapsed: elapsed.Round(time.Millisecond).Seconds()}
	var f, r int64
	var f2, r2 int64
	smp.Orders, f, r, smp.OrderP99 = s.orders.interval()
	smp.Releases, f2, r2, smp.ReleaseP99 = s.release.interval()
	f, r = f+f2, r+r2
	smp.Searches, f2, r2, smp.SearchP99 = s.search.interval()
	smp.Failed, smp.Refused = f+f2, r+r2
	if interval > 0 {
		smp.OrderRate = float64(smp.Orders) / interval.Seconds()
	}
	smp.RSS, _ = procMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	smp.HeapInuse = ms.HeapInuse
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	if live[0].Value.Kind() == metrics.KindUint64 {
		smp.HeapLive = live[0].Value.Uint64()
	}
	smp.Goroutines = runtime.NumGoroutine()
	smp.InFlight = s.inFlight.Load()
	smp.FDs = openFDs()
	smp.Indexed = s.a.Tracker.Index.Len()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	js := s.a.Store.JetStream()
	if ai, err := js.AccountInfo(qctx); err == nil {
		smp.StoredBytes = ai.Store
	}
	if st, err := js.Stream(qctx, broker.StreamEvents); err == nil {
		if ci := st.CachedInfo().Cluster; ci != nil {
			smp.Leader = ci.Leader
		}
		l := st.ListConsumers(qctx)
		most := uint64(0)
		for ci := range l.Info() {
			n := ci.NumPending + uint64(max(ci.NumAckPending, 0))
			smp.Pending += n
			if n > most {
				most, smp.Behind = n, ci.Name
			}
		}
	}
	return smp
}

// openFDs counts the process's open file descriptors (-1: unknown, not
// Linux).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}

// verdict sets From, To and the verdict line: the growth from the first
// sample at or after the warm-up to the last.
func (r *soakReport) verdict(warmup time.Duration) {
	if len(r.Samples) == 0 {
		r.Verdict = "no samples"
		return
	}
	from := &r.Samples[0]
	for i := range r.Samples {
		if r.Samples[i].Elapsed >= warmup.Seconds() {
			from = &r.Samples[i]
			break
		}
	}
	to := &r.Samples[len(r.Samples)-1]
	r.From, r.To = from, to
	for i := 1; i < len(r.Samples); i++ {
		if a, b := r.Samples[i-1].Leader, r.Samples[i].Leader; a != "" && b != "" && a != b {
			r.LeaderChanges++
		}
	}
	mb := func(b uint64) float64 { return float64(b) / (1 << 20) }
	pct := func(a, b float64) string {
		if a == 0 {
			return "-"
		}
		return fmt.Sprintf("%+.1f%%", 100*(b-a)/a)
	}
	behind := ""
	if to.Behind != "" && to.Pending > 0 {
		behind = " (most: " + to.Behind + ")"
	}
	perRx := "-"
	if n := to.Indexed - from.Indexed; n > 0 {
		perRx = fmt.Sprintf("%.0f B", (float64(to.HeapLive)-float64(from.HeapLive))/float64(n))
	}
	r.Verdict = fmt.Sprintf("from %s to %s: goroutines %d -> %d (%+d), heap live %.1f -> %.1f MB (%s; %s per prescription indexed meanwhile, %d -> %d), "+
		"heap in use %.1f -> %.1f MB (%s), RSS %.0f -> %.0f MB (%s), open FDs %d -> %d (%+d), JetStream stored %.1f -> %.1f MB, "+
		"event log consumers pending %d -> %d%s",
		fmtSeconds(from.Elapsed), fmtSeconds(to.Elapsed), from.Goroutines, to.Goroutines, to.Goroutines-from.Goroutines,
		mb(from.HeapLive), mb(to.HeapLive), pct(float64(from.HeapLive), float64(to.HeapLive)), perRx, from.Indexed, to.Indexed,
		mb(from.HeapInuse), mb(to.HeapInuse), pct(float64(from.HeapInuse), float64(to.HeapInuse)),
		mb(uint64(max(from.RSS, 0))), mb(uint64(max(to.RSS, 0))), pct(float64(from.RSS), float64(to.RSS)),
		from.FDs, to.FDs, to.FDs-from.FDs, mb(from.StoredBytes), mb(to.StoredBytes), from.Pending, to.Pending, behind)
}

func (r *soakReport) print(w io.Writer) {
	where := "single node"
	if r.Cluster {
		where = fmt.Sprintf("%d-node cluster", clusterNodes)
	}
	fmt.Fprintf(w, "\nsoak (%s): %s, %d samples; %d orders accepted (%.1f/s), %d releases (%d prescriptions released), %d searches (%d found); %d failed, %d answered 503/429, %d not sent (%d already in flight)\n",
		where, fmtSeconds(r.Seconds), len(r.Samples), r.Orders, float64(r.Orders)/max(r.Seconds, 1e-9), r.Releases, r.Released, r.Searches, r.Found,
		r.Failed, r.Refused, r.NotSent, soakMaxInFlight)
	if r.FirstFailure != "" {
		fmt.Fprintf(w, "first failure: %s\n", r.FirstFailure)
	}
	if r.Cluster {
		fmt.Fprintf(w, "event log leader changes seen between samples: %d\n", r.LeaderChanges)
	}
	fmt.Fprintf(w, "note: %s\n", r.Note)
	fmt.Fprintf(w, "soak verdict: %s\n", r.Verdict)
}
