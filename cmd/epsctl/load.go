package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

func init() {
	register(command{
		name:    "load",
		summary: "load-test order intake: HTTP orders/s next to raw JetStream publishes/s of the same bytes",
		run:     runLoad,
	})
}

// loadPhase is one timed phase of a load run.
type loadPhase struct {
	name     string
	ok, fail int64
	firstErr error // the first failure, to say why
	elapsed  time.Duration
	hist     *hdrhistogram.Histogram // microseconds
}

func (p *loadPhase) rate() float64 { return float64(p.ok) / p.elapsed.Seconds() }

func runLoad(ctx context.Context, e *env, args []string) int {
	fs := flag.NewFlagSet("epsctl load", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	concurrency := fs.Int("concurrency", 16, "requests in flight at once")
	duration := fs.Duration("duration", 10*time.Second, "length of each phase")
	rounds := fs.Int("rounds", 3, "rounds of (raw JetStream, HTTP) phases, alternated so that drift hits both")
	syncPolicy := fs.String("jetstream-sync", config.SyncAlways, "sync policy of the in-process broker: always or an interval")
	dataDir := fs.String("data-dir", "", "data dir of the in-process broker (default: a new temp dir, removed after)")
	url := fs.String("url", "", "load a running broker at this base URL instead of an in-process one (HTTP phase only, unless --nats-url is given)")
	natsURL := fs.String("nats-url", "", "with --url: the NATS server for the raw JetStream phase (its own sync policy applies)")
	token := fs.String("token", "", "with --url: bearer token of a prescriber for --sender")
	sender := fs.String("sender", "A83008", "prescriber ODS code of the generated orders")
	performer := fs.String("performer", "FA565", "nominated dispenser ODS code of the generated orders")
	noProgress := fs.Bool("quiet", false, "no progress bar")
	debugListen := fs.String("debug-listen", "", "host:port (loopback only) to serve the in-process broker's Go profiles on, /debug/pprof/, as epsbroker --debug-listen (empty: none)")
	tokenCache := fs.Int("token-cache-size", config.Default().TokenCacheSize, "verified bearer tokens the in-process broker remembers, as epsbroker --token-cache-size; 0 to 1000000 (0: none)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: epsctl load [flags]\n\nStarts a broker in-process (embedded NATS, JetStream on a temp dir, the given sync policy)\nand measures, alternately, raw JetStream publishes of generated order bytes and accepted\nHTTP orders, both at the same concurrency. Prints rates, latencies and the ratio.\n--debug-listen and --token-cache-size set the in-process broker's settings of those names;\nwith --url they are refused (set them on that broker).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *concurrency < 1 || *rounds < 1 || *duration <= 0 {
		fmt.Fprintln(e.stderr, "epsctl load: concurrency, rounds and duration must be positive")
		return exitUsage
	}
	if *tokenCache < 0 || *tokenCache > 1000000 {
		fmt.Fprintf(e.stderr, "epsctl load: --token-cache-size %d: want a whole number from 0 to 1000000\n", *tokenCache)
		return exitUsage
	}
	if *url != "" {
		var inProcess []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "debug-listen", "token-cache-size":
				inProcess = append(inProcess, "--"+f.Name)
			}
		})
		if len(inProcess) > 0 {
			fmt.Fprintf(e.stderr, "epsctl load: %s set the in-process broker; with --url, set them on that broker\n", strings.Join(inProcess, ", "))
			return exitUsage
		}
	}
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		fmt.Fprintln(e.stderr, "epsctl load:", err)
		return exitFailure
	}

	base, tok := *url, *token
	var js jetstream.JetStream
	var nc *nats.Conn
	if base == "" {
		dir := *dataDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "epsload"); err != nil {
				fmt.Fprintln(e.stderr, "epsctl load:", err)
				return exitFailure
			}
			defer os.RemoveAll(dir)
		}
		cfg := config.Default()
		cfg.DataDir, cfg.HTTPAddr, cfg.JetStreamSync, cfg.LogLevel = dir, "127.0.0.1:0", *syncPolicy, "warn"
		cfg.DebugListen, cfg.TokenCacheSize = *debugListen, *tokenCache
		if err := cfg.Validate(); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return exitUsage
		}
		actx, cancel := context.WithCancel(ctx)
		a, err := app.New(actx, cfg, zap.NewNop(), nil)
		if err != nil {
			cancel()
			fmt.Fprintln(e.stderr, "epsctl load: start broker:", err)
			return exitFailure
		}
		if err := a.Listen(); err != nil {
			cancel()
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return exitFailure
		}
		served := make(chan error, 1)
		go func() { served <- a.Serve(actx) }()
		defer func() { cancel(); <-served }()
		base = "http://" + a.Addr()
		tok, err = auth.Mint(a.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: "load", ODS: *sender, Role: auth.RolePrescriber}, cfg.TokenMaxLifetime, time.Now())
		if err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return exitFailure
		}
		nc = a.NATS.Conn
		fmt.Fprintf(e.stdout, "in-process broker on %s, JetStream sync %s, token cache %d, data dir %s\n", base, *syncPolicy, cfg.TokenCacheSize, dir)
		if d := a.DebugAddr(); d != "" {
			fmt.Fprintf(e.stdout, "profiles of the in-process broker (and of epsctl itself) at http://%s/debug/pprof/\n", d)
		}
	} else if *natsURL != "" {
		if nc, err = nats.Connect(*natsURL); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return exitFailure
		}
		defer nc.Close()
	}
	if tok == "" {
		fmt.Fprintln(e.stderr, "epsctl load: --url needs --token")
		return exitUsage
	}
	if nc != nil {
		if js, err = jetstream.New(nc); err == nil {
			_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "LOAD_BASELINE", Subjects: []string{"load.baseline.>"},
				Storage: jetstream.FileStorage, MaxMsgSize: 4 << 20})
		}
		if err != nil {
			fmt.Fprintln(e.stderr, "epsctl load: baseline stream:", err)
			return exitFailure
		}
		defer js.DeleteStream(context.Background(), "LOAD_BASELINE")
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *concurrency * 2, MaxConnsPerHost: *concurrency * 2}}
	gen := func(seq int64) []byte {
		g, _ := tmpl.Order(fhirgen.Options{Sender: *sender, Performer: *performer})
		return g.Body
	}
	httpOnce := func(ctx context.Context, body []byte) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/FHIR/R4/$process-message", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	var subj atomic.Int64
	jsOnce := func(ctx context.Context, body []byte) error {
		_, err := js.Publish(ctx, fmt.Sprintf("load.baseline.%d", subj.Add(1)), body,
			jetstream.WithExpectLastSequencePerSubject(0))
		return err
	}

	var phases []*loadPhase
	total := *rounds
	if js != nil {
		total *= 2
	}
	var bar *progressbar.ProgressBar
	if !*noProgress {
		bar = progressbar.NewOptions64(int64(total)*int64(*duration/time.Second),
			progressbar.OptionSetWriter(e.stderr), progressbar.OptionSetDescription("load"),
			progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
	}
	for r := 0; r < *rounds && ctx.Err() == nil; r++ {
		if js != nil {
			phases = append(phases, runPhase(ctx, "jetstream", *concurrency, *duration, gen, jsOnce, bar))
		}
		phases = append(phases, runPhase(ctx, "http", *concurrency, *duration, gen, httpOnce, bar))
	}
	if bar != nil {
		_ = bar.Finish()
	}
	printLoad(e.stdout, phases, *concurrency, *duration)
	return exitOK
}

// runPhase runs op with concurrency workers for d and records each
// successful call's latency (which excludes generating its order; the rate
// includes it, alike in every phase).
func runPhase(ctx context.Context, name string, concurrency int, d time.Duration, gen func(int64) []byte,
	op func(context.Context, []byte) error, bar *progressbar.ProgressBar) *loadPhase {
	p := &loadPhase{name: name, hist: hdrhistogram.New(1, 60_000_000, 3)}
	var mu sync.Mutex
	var ok, fail atomic.Int64
	var errOnce sync.Once
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	stopBar := make(chan struct{})
	if bar != nil {
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					_ = bar.Add(1)
				case <-stopBar:
					return
				}
			}
		}()
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := hdrhistogram.New(1, 60_000_000, 3)
			for seq := int64(0); pctx.Err() == nil; seq++ {
				body := gen(seq)
				t0 := time.Now()
				if err := op(pctx, body); err != nil {
					if pctx.Err() == nil {
						fail.Add(1)
						errOnce.Do(func() { p.firstErr = err })
					}
					continue
				}
				_ = local.RecordValue(time.Since(t0).Microseconds())
				ok.Add(1)
			}
			mu.Lock()
			p.hist.Merge(local)
			mu.Unlock()
		}()
	}
	wg.Wait()
	p.elapsed = time.Since(start)
	close(stopBar)
	p.ok, p.fail = ok.Load(), fail.Load()
	return p
}

func printLoad(w io.Writer, phases []*loadPhase, concurrency int, d time.Duration) {
	fmt.Fprintf(w, "\nconcurrency %d, %s per phase\n", concurrency, d)
	fmt.Fprintf(w, "%-10s %10s %8s %10s %10s %10s\n", "phase", "ok/s", "failed", "p50 ms", "p99 ms", "max ms")
	rates := map[string][]float64{}
	for _, p := range phases {
		fmt.Fprintf(w, "%-10s %10.0f %8d %10.2f %10.2f %10.2f\n", p.name, p.rate(), p.fail,
			float64(p.hist.ValueAtQuantile(50))/1000, float64(p.hist.ValueAtQuantile(99))/1000, float64(p.hist.Max())/1000)
		rates[p.name] = append(rates[p.name], p.rate())
	}
	for _, p := range phases {
		if p.firstErr != nil {
			fmt.Fprintf(w, "first %s failure: %v\n", p.name, p.firstErr)
			break
		}
	}
	var ratios []float64
	for i := 0; i+1 < len(phases); i += 2 {
		if phases[i].name == "jetstream" && phases[i+1].name == "http" {
			ratios = append(ratios, phases[i+1].rate()/phases[i].rate())
		}
	}
	names := make([]string, 0, len(rates))
	for n := range rates {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s median %.0f/s", n, median(rates[n])))
	}
	fmt.Fprintln(w, strings.Join(parts, ", "))
	if len(ratios) > 0 {
		fmt.Fprintf(w, "http/jetstream ratio per round: %s; median %.2f\n", fmtFloats(ratios), median(ratios))
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, " ")
}
