package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// fillMarker is the file a --stored fill leaves in its data dir, so that a
// later run can reuse the fill.
const fillMarker = "epsctl-load-fill.json"

// searchSample is how many stored prescription IDs the fill keeps for the
// searches (spread over the fill).
const searchSample = 10000

// storedFill describes a fill: what it stored, and a sample of the IDs.
type storedFill struct {
	Stored       int      `json:"stored"`
	Dispensers   []string `json:"dispensers"`
	PerDispenser []int    `json:"per_dispenser"`
	Released     []int    `json:"released_per_dispenser"` // by the runs that measured it so far
	Sender       string   `json:"sender"`
	Order        string   `json:"order"`
	FillSync     string   `json:"fill_sync"`
	FillSeconds  float64  `json:"fill_seconds"`
	Projected    float64  `json:"projections_caught_up_seconds"`
	Retried      int64    `json:"retried"`
	IDs          []string `json:"sample_ids"`
}

// storedReport is what the --stored part measured.
type storedReport struct {
	Fill           storedFill `json:"fill"`
	Reused         bool       `json:"reused_earlier_fill"`
	DataDir        string     `json:"data_dir"`
	EventsInLog    uint64     `json:"events_in_log"`
	Indexed        int        `json:"tracker_indexed"`
	JetStreamSync  string     `json:"jetstream_sync"`
	ReadySeconds   float64    `json:"restart_to_readyz_seconds"`
	TrackerSeconds float64    `json:"restart_to_tracker_caught_up_seconds"`
	RSSReady       int64      `json:"rss_bytes_when_ready"`
	RSSAfter       int64      `json:"rss_bytes_after"`
	PeakRSS        int64      `json:"peak_rss_bytes_since_restart"`
	PeakReset      bool       `json:"peak_reset_at_restart"`
	Release        *loadPhase `json:"release"`
	Released       int64      `json:"released"`
	ShortReleases  int64      `json:"short_releases"`
	ReleasesCapped string     `json:"releases_capped,omitempty"`
	Search         *loadPhase `json:"search"`
	Found          int64      `json:"found"`
	ReleaseNote    string     `json:"release_note"`
	SearchNote     string     `json:"search_note"`
	SharedProcess  string     `json:"shared_process"`
}

// dispenserCodes are the --stored orders' nominated dispensers.
func dispenserCodes(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("FX%03d", i+1)
	}
	return out
}

func runStored(ctx context.Context, e *env, info io.Writer, o *loadOptions) (*storedReport, int) {
	dir := o.storedDir
	if dir == "" {
		if o.dataDir != "" {
			dir = filepath.Join(o.dataDir, "stored")
		} else {
			var remove func()
			var err error
			if dir, remove, err = makeTempDir("epsload-stored"); err != nil {
				fmt.Fprintln(e.stderr, "epsctl load:", err)
				return nil, exitFailure
			}
			defer remove()
		}
	}
	rep := &storedReport{DataDir: dir, JetStreamSync: o.syncPolicy,
		SharedProcess: "RSS is this process's: the broker, its embedded NATS server and the load generator"}
	fill, err := readFill(dir)
	switch {
	case err == nil && fill.Stored == o.stored && len(fill.Dispensers) == o.dispensers:
		rep.Fill, rep.Reused = *fill, true
		fmt.Fprintf(info, "reusing the fill of %d prescriptions in %s (it took %s)\n", fill.Stored, dir, fmtSeconds(fill.FillSeconds))
	case err == nil:
		fmt.Fprintf(e.stderr, "epsctl load: %s holds a fill of %d prescriptions to %d dispensers, not %d to %d: give another --stored-dir\n",
			dir, fill.Stored, len(fill.Dispensers), o.stored, o.dispensers)
		return nil, exitUsage
	case !errors.Is(err, os.ErrNotExist):
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	default:
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			fmt.Fprintf(e.stderr, "epsctl load: %s is not empty and holds no fill of epsctl load: give an empty or new --stored-dir\n", dir)
			return nil, exitUsage
		}
		f, code := fillStored(ctx, e, info, o, dir)
		if code != exitOK {
			return nil, code
		}
		rep.Fill = *f
	}
	if code := measureStored(ctx, e, info, o, dir, rep); code != exitOK {
		return nil, code
	}
	return rep, exitOK
}

// writeFill writes the fill's marker (again, after releases).
func writeFill(dir string, f *storedFill) error {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, fillMarker), b, 0o600)
}

func readFill(dir string) (*storedFill, error) {
	b, err := os.ReadFile(filepath.Join(dir, fillMarker))
	if err != nil {
		return nil, err
	}
	var f storedFill
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, fillMarker), err)
	}
	return &f, nil
}

// storedConfig is the --stored broker's configuration under sync policy.
func storedConfig(o *loadOptions, dir, sync string) config.Config {
	cfg := config.Default()
	cfg.DataDir, cfg.HTTPAddr, cfg.JetStreamSync, cfg.LogLevel = dir, "127.0.0.1:0", sync, "warn"
	cfg.TokenCacheSize = o.tokenCache
	return cfg
}

// fillStored starts a broker on dir under --fill-sync and posts o.stored
// 1-item orders to its HTTP handler in this process (the broker's own
// intake path, without the TCP), nominated to the dispensers in turn; then
// waits for its tracker index to hold them and stops it.
func fillStored(ctx context.Context, e *env, info io.Writer, o *loadOptions, dir string) (*storedFill, int) {
	tmpl, err := oneItemOrder()
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	cfg := storedConfig(o, dir, o.fillSync)
	cfg.RateLimit = 0 // the fill is one user's, as fast as the broker goes
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitUsage
	}
	a, stop, err := startApp(ctx, cfg)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load: start broker to fill:", err)
		return nil, exitFailure
	}
	defer stop()
	tok, err := auth.Mint(a.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: "load-fill", ODS: o.sender, Role: auth.RolePrescriber}, cfg.TokenMaxLifetime, time.Now())
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	f := &storedFill{Stored: o.stored, Dispensers: dispenserCodes(o.dispensers), Sender: o.sender, FillSync: o.fillSync}
	f.PerDispenser = make([]int, o.dispensers)
	for i := 0; i < o.stored; i++ {
		f.PerDispenser[i%o.dispensers]++
	}
	gens := make([]*orderGen, o.dispensers)
	for i, d := range f.Dispensers {
		if gens[i], err = newOrderGen(tmpl, o.sender, d); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return nil, exitFailure
		}
	}
	f.Order = fmt.Sprintf("1-item NHS order (the 4-item example's first item), %d bytes", len(gens[0].order().Body))
	fmt.Fprintf(info, "filling %s with %d prescriptions (%s) nominated to %d dispensers %s..%s, sender %s, %d in flight, JetStream sync %s\n",
		dir, o.stored, f.Order, o.dispensers, f.Dispensers[0], f.Dispensers[len(f.Dispensers)-1], o.sender, o.fillConcurrency, o.fillSync)
	var bar *progressbar.ProgressBar
	if !o.quiet && isTerminal(e.stderr) {
		bar = progressbar.NewOptions64(int64(o.stored), progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("fill"),
			progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("orders"),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	step := max(1, o.stored/searchSample)
	var next, retried atomic.Int64
	var mu sync.Mutex
	var fillErr error
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := a.Handler()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.fillConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for fctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= o.stored {
					return
				}
				id, err := fillOne(fctx, h, gens[i%o.dispensers], tok, &retried)
				if err != nil {
					mu.Lock()
					if fillErr == nil && fctx.Err() == nil {
						fillErr = fmt.Errorf("order %d: %w", i+1, err)
					}
					mu.Unlock()
					cancel()
					return
				}
				if i%step == 0 {
					mu.Lock()
					f.IDs = append(f.IDs, id)
					mu.Unlock()
				}
				if bar != nil {
					_ = bar.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	f.FillSeconds = time.Since(start).Seconds()
	if bar != nil {
		_ = bar.Finish()
	}
	if fillErr == nil && ctx.Err() != nil {
		fillErr = ctx.Err()
	}
	if fillErr != nil {
		fmt.Fprintln(e.stderr, "epsctl load: fill:", fillErr)
		return nil, exitFailure
	}
	// The tracker index holds every stored order before the broker stops,
	// so that its snapshot (saved at shutdown) is whole.
	if err := waitTracker(ctx, a); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load: fill:", err)
		return nil, exitFailure
	}
	// And every other projection (the ready queues) has applied them.
	if err := waitConsumers(ctx, a.Store.JetStream(), 30*time.Minute); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load: fill:", err)
		return nil, exitFailure
	}
	f.Projected = time.Since(start).Seconds()
	f.Retried = retried.Load()
	stop()
	if err := writeFill(dir, f); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return nil, exitFailure
	}
	fmt.Fprintf(info, "filled in %s (%.0f orders/s); projections caught up at %s; %d answers 503/429 retried\n",
		fmtSeconds(f.FillSeconds), float64(o.stored)/f.FillSeconds, fmtSeconds(f.Projected), f.Retried)
	return f, exitOK
}

// fillOne posts one new order to h until it is accepted: a 503 or 429 is
// retried after its Retry-After (at most 1 s), a duplicate ID with new IDs.
func fillOne(ctx context.Context, h http.Handler, gen *orderGen, tok string, retried *atomic.Int64) (string, error) {
	for dup := 0; ; {
		g := gen.order()
		for {
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/FHIR/R4/$process-message", bytes.NewReader(g.Body))
			req.RemoteAddr = "127.0.0.1:1"
			req.Header.Set("Content-Type", "application/fhir+json")
			req.Header.Set("Authorization", "Bearer "+tok)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch rec.Code {
			case http.StatusOK:
				return g.ShortID, nil
			case http.StatusServiceUnavailable, http.StatusTooManyRequests:
				retried.Add(1)
				wait := 50 * time.Millisecond
				if d, err := time.ParseDuration(rec.Header().Get("Retry-After") + "s"); err == nil && d > 0 {
					wait = min(d, time.Second)
				}
				select {
				case <-time.After(wait):
				case <-ctx.Done():
					return "", ctx.Err()
				}
				continue
			case http.StatusBadRequest:
				if bytes.Contains(rec.Body.Bytes(), []byte("DUPLICATE_PRESCRIPTION_ID")) && dup < 3 {
					dup++
					retried.Add(1)
				} else {
					return "", fmt.Errorf("status %d: %.300s", rec.Code, rec.Body.Bytes())
				}
			default:
				return "", fmt.Errorf("status %d: %.300s", rec.Code, rec.Body.Bytes())
			}
			break
		}
	}
}

// waitTracker waits until a's tracker index has applied everything the
// event log held at start and everything written since.
func waitTracker(ctx context.Context, a *app.App) error {
	for {
		if a.Tracker.Index.Applied() >= a.Tracker.MustReach() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the tracker index: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// measureStored restarts the broker on dir under --jetstream-sync and
// measures readiness, RSS, nominated releases and searches.
func measureStored(ctx context.Context, e *env, info io.Writer, o *loadOptions, dir string, rep *storedReport) int {
	fail := func(err error) int {
		fmt.Fprintln(e.stderr, "epsctl load: stored:", err)
		return exitFailure
	}
	cfg := storedConfig(o, dir, o.syncPolicy)
	cfg.DebugListen = o.debugListen
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return exitUsage
	}
	// What the fill left behind is freed, so that RSS and its peak are
	// the restarted broker's (and this process's).
	runtime.GC()
	debug.FreeOSMemory()
	rep.PeakReset = resetPeakRSS()
	start := time.Now()
	a, stop, err := startApp(ctx, cfg)
	if err != nil {
		return fail(fmt.Errorf("restart: %w", err))
	}
	defer stop()
	base := "http://" + a.Addr()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	for {
		res, err := client.Get(base + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if ctx.Err() != nil {
			return fail(ctx.Err())
		}
		time.Sleep(2 * time.Millisecond)
	}
	rep.ReadySeconds = time.Since(start).Seconds()
	if err := waitTracker(ctx, a); err != nil {
		return fail(err)
	}
	rep.TrackerSeconds = time.Since(start).Seconds()
	rep.RSSReady, _ = procMemory()
	rep.Indexed = a.Tracker.Index.Len()
	if st, err := a.Store.JetStream().Stream(ctx, broker.StreamEvents); err == nil {
		if si, err := st.Info(ctx, jetstream.WithSubjectFilter("")); err == nil {
			rep.EventsInLog = si.State.Msgs
		}
	}
	fmt.Fprintf(info, "restarted under JetStream sync %s: /readyz 200 after %s, tracker index caught up after %s\n",
		o.syncPolicy, fmtSeconds(rep.ReadySeconds), fmtSeconds(rep.TrackerSeconds))

	tokens := map[string]string{}
	mint := func(sub, ods string, role auth.Role) string {
		if tok, ok := tokens[sub]; ok {
			return tok
		}
		tok, _ := auth.Mint(a.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: sub, ODS: ods, Role: role}, cfg.TokenMaxLifetime, time.Now())
		tokens[sub] = tok
		return tok
	}
	do := func(method, path, tok string, body []byte) (int, []byte, time.Duration, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		if body != nil {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		t0 := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return 0, nil, 0, err
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, b, time.Since(t0), err
	}

	// Nominated releases of 25, the dispensers in turn; each dispenser's
	// queue must still hold 25 for every release it is asked for.
	left := append([]int(nil), rep.Fill.PerDispenser...)
	if len(rep.Fill.Released) != len(left) {
		rep.Fill.Released = make([]int, len(left))
	}
	for d := range left {
		left[d] -= rep.Fill.Released[d]
	}
	full := 0
	for _, n := range left {
		full += n / 25
	}
	releases := o.releases
	if releases > full {
		rep.ReleasesCapped = fmt.Sprintf("%d releases asked for; the queues hold %d full releases of 25", o.releases, full)
		releases = full
	}
	rel := &loadPhase{Side: "nominated-release-25", Concurrency: 1, hist: newHist()}
	var rc phaseCounter
	cpu0, t0 := cpuClock(), time.Now()
	for i, d := 0, 0; i < releases && ctx.Err() == nil; d = (d + 1) % len(left) {
		if left[d] < 25 {
			continue
		}
		left[d] -= 25
		i++
		ods := rep.Fill.Dispensers[d]
		status, body, took, err := do(http.MethodPost, "/FHIR/R4/Task/$release", mint("load-"+ods, ods, auth.RoleDispenser), fhirgen.Release(ods, ""))
		n, perr := releasedCount(body)
		switch {
		case err != nil:
			rc.failed(err)
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			rc.failed(refusedError{status})
		case status != http.StatusOK || perr != nil:
			rc.failed(fmt.Errorf("release: status %d: %.200s", status, body))
		default:
			_ = rel.hist.RecordValue(took.Microseconds())
			rc.ok.Add(1)
			rep.Released += int64(n)
			rep.Fill.Released[d] += n
			if n < 25 {
				rep.ShortReleases++
			}
		}
	}
	rc.into(rel)
	rel.finish(time.Since(t0), cpuClock()-cpu0)
	rep.Release = rel
	rep.ReleaseNote = "one dispenser at a time, over HTTP; each release answers up to 25 order Bundles"

	// Searches by prescription ID, random stored IDs, as the tracker role.
	srch := &loadPhase{Side: "search-by-id", Concurrency: 1, hist: newHist()}
	var sc phaseCounter
	tok := mint("load-tracker", "X26", auth.RoleTracker)
	ids := rep.Fill.IDs
	cpu0, t0 = cpuClock(), time.Now()
	for i := 0; i < o.searches && len(ids) > 0 && ctx.Err() == nil; i++ {
		id := ids[rand.IntN(len(ids))]
		status, body, took, err := do(http.MethodGet, "/FHIR/R4/RequestGroup?prescriptionId="+url.QueryEscape(id), tok, nil)
		var b struct{ Total int }
		switch {
		case err != nil:
			sc.failed(err)
		case status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
			sc.failed(refusedError{status})
		case status != http.StatusOK || json.Unmarshal(body, &b) != nil:
			sc.failed(fmt.Errorf("search: status %d: %.200s", status, body))
		default:
			_ = srch.hist.RecordValue(took.Microseconds())
			sc.ok.Add(1)
			if b.Total > 0 {
				rep.Found++
			}
		}
	}
	sc.into(srch)
	srch.finish(time.Since(t0), cpuClock()-cpu0)
	rep.Search = srch
	rep.SearchNote = fmt.Sprintf("GET /FHIR/R4/RequestGroup?prescriptionId= as the tracker role, one at a time, IDs drawn from %d stored ones", len(ids))
	rep.RSSAfter, rep.PeakRSS = procMemory()
	if err := writeFill(dir, &rep.Fill); err != nil {
		return fail(err)
	}
	return exitOK
}

// releasedCount is the number of order Bundles a release answer hands over.
func releasedCount(body []byte) (int, error) {
	var p struct {
		ResourceType string
		Parameter    []struct {
			Name     string
			Resource struct {
				Entry []json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return 0, err
	}
	for _, q := range p.Parameter {
		if q.Name == "passedPrescriptions" {
			return len(q.Resource.Entry), nil
		}
	}
	return 0, errors.New("no passedPrescriptions")
}

func (r *storedReport) print(w io.Writer) {
	f := r.Fill
	mb := func(b int64) float64 { return float64(b) / (1 << 20) }
	fmt.Fprintf(w, "\nstored: %d prescriptions, %s, nominated to %d dispensers (%s..%s) in turn, sender %s\n",
		f.Stored, f.Order, len(f.Dispensers), f.Dispensers[0], f.Dispensers[len(f.Dispensers)-1], f.Sender)
	reused := ""
	if r.Reused {
		reused = " (an earlier run's fill, reused)"
	}
	fmt.Fprintf(w, "fill: %s, %.0f orders/s, under JetStream sync %s through the broker's HTTP handler in this process; projections caught up after %s%s\n",
		fmtSeconds(f.FillSeconds), float64(f.Stored)/f.FillSeconds, f.FillSync, fmtSeconds(f.Projected), reused)
	fmt.Fprintf(w, "event log: %d events; tracker index: %d prescriptions; data dir %s\n", r.EventsInLog, r.Indexed, r.DataDir)
	fmt.Fprintf(w, "restart under JetStream sync %s: /readyz 200 after %s, tracker index caught up after %s\n",
		r.JetStreamSync, fmtSeconds(r.ReadySeconds), fmtSeconds(r.TrackerSeconds))
	peak := "peak since restart"
	if !r.PeakReset {
		peak = "peak of the whole run (could not reset it)"
	}
	fmt.Fprintf(w, "RSS (%s): %.0f MB when ready, %.0f MB after the releases and searches, %s %.0f MB\n",
		r.SharedProcess, mb(r.RSSReady), mb(r.RSSAfter), peak, mb(r.PeakRSS))
	fmt.Fprintf(w, "\n%-21s %6s %6s %7s %8s %8s %8s %9s %8s\n", "operation", "count", "found", "failed", "503/429", "p50 ms", "p99 ms", "p99.9 ms", "max ms")
	fmt.Fprintf(w, "%-21s %6d %6d %7d %8d %8.2f %8.2f %9.2f %8.2f\n", r.Release.Side, r.Release.OK, r.Released, r.Release.Failed, r.Release.Refused,
		r.Release.P50, r.Release.P99, r.Release.P999, r.Release.Max)
	fmt.Fprintf(w, "%-21s %6d %6d %7d %8d %8.2f %8.2f %9.2f %8.2f\n", r.Search.Side, r.Search.OK, r.Found, r.Search.Failed, r.Search.Refused,
		r.Search.P50, r.Search.P99, r.Search.P999, r.Search.Max)
	fmt.Fprintf(w, "release: %s (found: prescriptions released)\nsearch: %s (found: searches that found it)\n", r.ReleaseNote, r.SearchNote)
	if r.ShortReleases > 0 {
		fmt.Fprintf(w, "short releases: %d answered fewer than 25 while the dispenser's queue held 25 or more accepted orders\n", r.ShortReleases)
	}
	if r.ReleasesCapped != "" {
		fmt.Fprintf(w, "releases capped: %s\n", r.ReleasesCapped)
	}
	for _, p := range []*loadPhase{r.Release, r.Search} {
		if p.FirstFailure != "" {
			fmt.Fprintf(w, "first %s failure: %s\n", p.Side, p.FirstFailure)
		}
	}
}
