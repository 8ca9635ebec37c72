package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/config"
)

func init() {
	register(command{
		name:    "load",
		summary: "load-test the broker: intake next to raw JetStream and an HTTP floor; release and search at a stored size",
		run:     runLoad,
	})
}

// loadOptions are epsctl load's flags.
type loadOptions struct {
	concurrency     []int
	duration        time.Duration
	rounds          int
	syncPolicy      string
	dataDir         string
	url             string
	natsURL         string
	token           string
	sender          string
	performer       string
	quiet           bool
	jsonOut         bool
	debugListen     string
	tokenCache      int
	asyncWindow     int
	asyncPublishers int
	rate            string // "half", "off", or orders per second
	rateValue       float64
	cluster         bool

	soak     time.Duration
	sample   time.Duration
	warmup   time.Duration
	soakRate float64

	stored          int
	storedDir       string
	dispensers      int
	releases        int
	searches        int
	fillConcurrency int
	fillSync        string
}

// intList is a flag of comma-separated positive whole numbers.
type intList []int

func (l *intList) String() string {
	parts := make([]string, len(*l))
	for i, n := range *l {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

func (l *intList) Set(s string) error {
	var out []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > 100000 {
			return fmt.Errorf("%q: want whole numbers from 1 to 100000, comma-separated", s)
		}
		out = append(out, n)
	}
	*l = out
	return nil
}

func runLoad(ctx context.Context, e *env, args []string) int {
	o := loadOptions{concurrency: intList{16, 64}}
	fs := flag.NewFlagSet("epsctl load", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Var((*intList)(&o.concurrency), "concurrency", "clients (requests in flight at once) of each intake phase: one number or a comma-separated `list`, each measured every round")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each intake phase (and of the fixed-rate phase)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of intake phases (broker, raw JetStream, HTTP floor at each concurrency), alternated so that drift hits every side; 0 with --stored measures the stored size only")
	fs.StringVar(&o.syncPolicy, "jetstream-sync", config.SyncAlways, "sync policy of the in-process broker (and so of the raw JetStream side): always or an interval such as 1s")
	fs.StringVar(&o.dataDir, "data-dir", "", "data dir of the in-process broker of the intake phases (default: a new temp dir, removed after)")
	fs.StringVar(&o.url, "url", "", "load a running broker at this base URL instead of an in-process one (no raw JetStream side unless --nats-url is given; no --stored)")
	fs.StringVar(&o.natsURL, "nats-url", "", "with --url: the NATS server for the raw JetStream side (its own sync policy applies)")
	fs.StringVar(&o.token, "token", "", "with --url: bearer token of a prescriber for --sender")
	fs.StringVar(&o.sender, "sender", "A83008", "prescriber ODS code of the generated orders")
	fs.StringVar(&o.performer, "performer", "FA565", "nominated dispenser ODS code of the intake phases' orders")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress bars (they are shown only when stderr is a terminal)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as one JSON object on stdout (progress and notes go to stderr)")
	fs.StringVar(&o.debugListen, "debug-listen", "", "host:port (loopback only) to serve the in-process broker's Go profiles on, /debug/pprof/, as epsbroker --debug-listen (empty: none)")
	fs.IntVar(&o.tokenCache, "token-cache-size", config.Default().TokenCacheSize, "verified bearer tokens the in-process broker remembers, as epsbroker --token-cache-size; 0 to 1000000 (0: none)")
	fs.IntVar(&o.asyncWindow, "async-window", 256, "with an interval --jetstream-sync: acknowledgements outstanding at once on the raw async-batched side (PublishMsgAsync)")
	fs.IntVar(&o.asyncPublishers, "async-publishers", 4, "with an interval --jetstream-sync: goroutines publishing on the raw async-batched side, sharing --async-window")
	fs.StringVar(&o.rate, "rate", "half", "fixed arrival rate (orders/s) of the open-loop latency phase against the broker: a number, 'half' (half the broker's median saturated rate at the largest --concurrency) or 'off'")
	fs.BoolVar(&o.cluster, "cluster", false, "also start a three-node NATS cluster in this process (loopback, a store dir each, routes with credentials, the same sync policy) and a second in-process broker against it with R3 streams, and measure it (cluster-broker, cluster-raw) in the same rounds as the single node: the ratio cluster-broker/broker per concurrency, the group commit's batch sizes on each, the streams' placement")
	fs.DurationVar(&o.soak, "soak", 0, "instead of the intake rounds: a soak of this length (e.g. 10m) against an in-process broker (with --cluster on the three-node cluster) at a fixed moderate rate of orders, nominated releases and searches, sampling memory, goroutines, open FDs, JetStream's stored bytes and pending, and the last interval's rate and p99 (0: no soak)")
	fs.DurationVar(&o.sample, "sample", 10*time.Second, "with --soak: the time between samples")
	fs.DurationVar(&o.warmup, "warmup", time.Minute, "with --soak: growth is measured from the first sample at or after this time to the last")
	fs.Float64Var(&o.soakRate, "soak-rate", 100, "with --soak: orders per second offered (open loop), with a nominated release of up to 25 for every 20 orders and a search by prescription ID for every 4")
	fs.IntVar(&o.stored, "stored", 0, "fill a second in-process broker with this many prescriptions (1-item NHS orders through its own HTTP intake), restart it under --jetstream-sync, and measure restart-to-ready, RSS, nominated release and search by ID (0: skip)")
	fs.StringVar(&o.storedDir, "stored-dir", "", "data dir of the --stored broker; a dir an earlier run filled with the same --stored and --dispensers is reused without filling (default: <data-dir>/stored with --data-dir, else a temp dir removed after)")
	fs.IntVar(&o.dispensers, "dispensers", 20, "with --stored: dispensers the stored orders are nominated to, in turn (FX001, FX002, ...)")
	fs.IntVar(&o.releases, "releases", 400, "with --stored: nominated releases of 25 to time, the dispensers in turn (fewer if the queues hold fewer full releases)")
	fs.IntVar(&o.searches, "searches", 5000, "with --stored: tracker searches by prescription ID to time (random stored IDs)")
	fs.IntVar(&o.fillConcurrency, "fill-concurrency", 64, "with --stored: orders in flight at once while filling")
	fs.StringVar(&o.fillSync, "fill-sync", "1m", "with --stored: the JetStream sync policy while filling (the broker is then stopped and restarted under --jetstream-sync)")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, `Usage: epsctl load [flags]

Starts a broker in-process (embedded NATS, JetStream on a temp dir, the given sync policy) and
measures, in rounds and in turn at each --concurrency, three sides with the same client and the
same generated 4-item NHS orders: the broker (HTTP intake), raw JetStream publishes of the same
bytes with the broker's headers on the same embedded server, and an HTTP floor (a server in this
process that only reads the body and answers 200). With an interval sync policy also raw
async-batched publishes. Then an open-loop phase at a fixed rate (--rate), and with --stored N
the release and search latency, restart time and RSS of a broker holding N prescriptions.
Prints orders/s, p50/p99/p99.9 latency, CPU per order and the ratios broker/raw and
broker/floor. The load generator runs in the same process: CPU per order and RSS are the whole
process's. 503 and 429 answers are counted apart from failures.
With --cluster, a second in-process broker runs against a three-node NATS cluster started in
this process (streams R3) and is measured in the same rounds (cluster-broker, cluster-raw): the
ratio cluster-broker/broker is the cost of replication on this one machine, a floor, not a
prediction for three machines.
With --soak D, instead of the intake rounds: orders, nominated releases and searches at a fixed
moderate rate (--soak-rate) for D against an in-process broker (with --cluster on the cluster),
a sample every --sample (RSS, Go heap, goroutines, open FDs, JetStream stored bytes, consumers
pending, the interval's orders/s and p99), then the growth from the first sample after --warmup
to the last.
--debug-listen and --token-cache-size set the in-process broker's settings of those names;
with --url they are refused (set them on that broker).

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(e.stderr, "epsctl load: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if code := o.check(e, fs); code != exitOK {
		return code
	}
	info := e.stdout
	if o.jsonOut {
		info = e.stderr
	}
	rep := &loadReport{Settings: o.settings()}
	if o.soak > 0 {
		sr, code := runSoak(ctx, e, info, &o)
		if code != exitOK {
			return code
		}
		rep.Soak = sr
	} else if o.rounds > 0 {
		ir, code := runIntake(ctx, e, info, &o)
		if code != exitOK {
			return code
		}
		rep.Intake = ir
	}
	if o.stored > 0 && o.soak == 0 && ctx.Err() == nil {
		sr, code := runStored(ctx, e, info, &o)
		if code != exitOK {
			return code
		}
		rep.Stored = sr
	}
	if o.jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(e.stderr, "epsctl load:", err)
			return exitFailure
		}
		return exitOK
	}
	rep.print(e.stdout)
	return exitOK
}

// check refuses bad flag values and combinations.
func (o *loadOptions) check(e *env, fs *flag.FlagSet) int {
	bad := func(format string, args ...any) int {
		fmt.Fprintf(e.stderr, "epsctl load: "+format+"\n", args...)
		return exitUsage
	}
	if o.rounds < 0 || o.duration <= 0 {
		return bad("rounds must not be negative and duration must be positive")
	}
	if o.rounds == 0 && o.stored == 0 {
		return bad("--rounds 0 measures nothing without --stored")
	}
	if o.soak < 0 || o.sample <= 0 || o.warmup < 0 {
		return bad("--soak and --warmup must not be negative and --sample must be positive")
	}
	if o.soak > 0 {
		if o.stored > 0 || o.url != "" {
			return bad("--soak loads an in-process broker of its own: not with --stored or --url")
		}
		if o.soakRate <= 0 || o.soakRate > 100000 {
			return bad("--soak-rate %v: want orders per second, more than 0 and at most 100000", o.soakRate)
		}
		if o.sample > o.soak {
			return bad("--sample %s is longer than --soak %s", o.sample, o.soak)
		}
	}
	if o.cluster && o.rounds == 0 && o.soak == 0 {
		return bad("--cluster measures in the intake rounds or the soak: not with --rounds 0")
	}
	if o.tokenCache < 0 || o.tokenCache > 1000000 {
		return bad("--token-cache-size %d: want a whole number from 0 to 1000000", o.tokenCache)
	}
	if o.asyncWindow < 1 || o.asyncWindow > 100000 {
		return bad("--async-window %d: want a whole number from 1 to 100000", o.asyncWindow)
	}
	if o.asyncPublishers < 1 || o.asyncPublishers > o.asyncWindow {
		return bad("--async-publishers %d: want a whole number from 1 to --async-window (%d)", o.asyncPublishers, o.asyncWindow)
	}
	switch o.rate {
	case "half", "off":
	default:
		r, err := strconv.ParseFloat(o.rate, 64)
		if err != nil || r <= 0 || r > 1e6 || math.IsNaN(r) {
			return bad("--rate %q: want orders per second (more than 0, at most 1000000), 'half' or 'off'", o.rate)
		}
		o.rateValue = r
	}
	if o.stored < 0 || o.stored > 100_000_000 {
		return bad("--stored %d: want a whole number from 0 to 100000000", o.stored)
	}
	if o.dispensers < 1 || o.dispensers > 999 {
		return bad("--dispensers %d: want a whole number from 1 to 999", o.dispensers)
	}
	if o.releases < 0 || o.searches < 0 {
		return bad("--releases and --searches must not be negative")
	}
	if o.fillConcurrency < 1 || o.fillConcurrency > 10000 {
		return bad("--fill-concurrency %d: want a whole number from 1 to 10000", o.fillConcurrency)
	}
	for _, p := range []struct{ flag, v string }{{"jetstream-sync", o.syncPolicy}, {"fill-sync", o.fillSync}} {
		if p.v == config.SyncAlways {
			continue
		}
		if d, err := time.ParseDuration(p.v); err != nil || d <= 0 {
			return bad("--%s %q: want 'always' or a positive interval such as 1s", p.flag, p.v)
		}
	}
	if o.url != "" {
		var inProcess []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "debug-listen", "token-cache-size":
				inProcess = append(inProcess, "--"+f.Name)
			}
		})
		if len(inProcess) > 0 {
			return bad("%s set the in-process broker; with --url, set them on that broker", strings.Join(inProcess, ", "))
		}
		if o.stored > 0 {
			return bad("--stored fills and restarts an in-process broker: not with --url")
		}
		if o.cluster {
			return bad("--cluster starts its own cluster and broker in-process: not with --url")
		}
		if o.token == "" {
			return bad("--url needs --token")
		}
	}
	return exitOK
}

func (o *loadOptions) settings() loadSettings {
	var soak float64
	if o.soak > 0 {
		soak = o.soak.Seconds()
	}
	return loadSettings{SoakSeconds: soak, Concurrency: o.concurrency, PhaseSeconds: o.duration.Seconds(), Rounds: o.rounds,
		JetStreamSync: o.syncPolicy, URL: o.url, AsyncWindow: o.asyncWindow, AsyncPublishers: o.asyncPublishers, Rate: o.rate,
		Stored: o.stored, Dispensers: o.dispensers, FillSync: o.fillSync, Cluster: o.cluster,
		SharedProcess: "the load generator, the broker and the embedded NATS server share this process: CPU per order and RSS are the whole process's"}
}

// makeTempDir makes a temp dir and returns it with its removal.
func makeTempDir(pattern string) (string, func(), error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
