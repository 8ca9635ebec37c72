package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// TestLoadFlags runs epsctl load for a moment with the in-process broker's
// settings and checks what a user sees: the broker's token cache and debug
// listener as asked, every side measured, and refusals that name the flag.
func TestLoadFlags(t *testing.T) {
	tiny := []string{"load", "--duration", "300ms", "--rounds", "1", "--quiet", "--concurrency", "2"}
	tests := []struct {
		name      string
		args      []string
		dataDir   bool // add a --data-dir of the test's own
		code      int
		stdout    []string // each must appear
		notStdout []string // none may appear
		stderr    []string
	}{
		{name: "defaults", dataDir: true, code: exitOK,
			stdout: []string{"token cache 10000,", "broker/raw        at 2 clients: median", "broker/floor      at 2 clients: median",
				"broker-fixed-rate", "CPU per order", "share this process"},
			notStdout: []string{"/debug/pprof/", "failure", "raw-async"}},
		{name: "cache off and a debug listener", dataDir: true, code: exitOK,
			args:      []string{"--token-cache-size", "0", "--debug-listen", "127.0.0.1:0", "--rate", "off"},
			stdout:    []string{"token cache 0,", "at http://127.0.0.1:", "/debug/pprof/", "broker/raw "},
			notStdout: []string{"failure", "fixed rate"}},
		{name: "cache of one", dataDir: true, code: exitOK,
			args:      []string{"--token-cache-size=1", "--rate", "off"},
			stdout:    []string{"token cache 1,"},
			notStdout: []string{"failure"}},
		{name: "debug listener not on loopback", dataDir: true, code: exitFailure,
			args:   []string{"--debug-listen", "0.0.0.0:0"},
			stderr: []string{"start broker", `debug-listen "0.0.0.0:0" is not a loopback address`, "--debug-listen-any"}},
		{name: "debug listener without a port", dataDir: true, code: exitFailure,
			args:   []string{"--debug-listen", "127.0.0.1"},
			stderr: []string{"start broker", `debug-listen "127.0.0.1": want host:port`}},
		{name: "negative cache", code: exitUsage,
			args:   []string{"--token-cache-size", "-1"},
			stderr: []string{"--token-cache-size -1: want a whole number from 0 to 1000000"}},
		{name: "cache too big", code: exitUsage,
			args:   []string{"--token-cache-size", "1000001"},
			stderr: []string{"--token-cache-size 1000001: want a whole number from 0 to 1000000"}},
		{name: "cache not a number", code: exitUsage,
			args:   []string{"--token-cache-size", "lots"},
			stderr: []string{"token-cache-size", "lots"}},
		{name: "with --url", code: exitUsage,
			args:   []string{"--url", "http://127.0.0.1:1", "--token", "x", "--debug-listen", "127.0.0.1:0", "--token-cache-size", "0"},
			stderr: []string{"--debug-listen, --token-cache-size set the in-process broker; with --url, set them on that broker"}},
		{name: "concurrency zero", code: exitUsage,
			args:   []string{"--concurrency", "16,0"},
			stderr: []string{`"16,0": want whole numbers from 1 to 100000, comma-separated`}},
		{name: "concurrency not a list of numbers", code: exitUsage,
			args:   []string{"--concurrency", "16,lots"},
			stderr: []string{`"16,lots"`}},
		{name: "rate not a number", code: exitUsage,
			args:   []string{"--rate", "fast"},
			stderr: []string{`--rate "fast": want orders per second`}},
		{name: "rate negative", code: exitUsage,
			args:   []string{"--rate", "-5"},
			stderr: []string{`--rate "-5"`}},
		{name: "no rounds, nothing stored", code: exitUsage,
			args:   []string{"--rounds", "0"},
			stderr: []string{"--rounds 0 measures nothing without --stored"}},
		{name: "stored with --url", code: exitUsage,
			args:   []string{"--url", "http://127.0.0.1:1", "--token", "x", "--stored", "10"},
			stderr: []string{"--stored fills and restarts an in-process broker: not with --url"}},
		{name: "--url without a token", code: exitUsage,
			args:   []string{"--url", "http://127.0.0.1:1"},
			stderr: []string{"--url needs --token"}},
		{name: "bad sync policy", code: exitUsage,
			args:   []string{"--jetstream-sync", "never"},
			stderr: []string{`--jetstream-sync "never": want 'always' or a positive interval`}},
		{name: "bad fill sync", code: exitUsage,
			args:   []string{"--fill-sync", "0s"},
			stderr: []string{`--fill-sync "0s"`}},
		{name: "async window zero", code: exitUsage,
			args:   []string{"--async-window", "0"},
			stderr: []string{"--async-window 0: want a whole number from 1 to 100000"}},
		{name: "more publishers than the window", code: exitUsage,
			args:   []string{"--async-window", "4", "--async-publishers", "5"},
			stderr: []string{"--async-publishers 5: want a whole number from 1 to --async-window (4)"}},
		{name: "no dispensers", code: exitUsage,
			args:   []string{"--stored", "10", "--dispensers", "0"},
			stderr: []string{"--dispensers 0: want a whole number from 1 to 999"}},
		{name: "cluster with --url", code: exitUsage,
			args:   []string{"--url", "http://127.0.0.1:1", "--token", "x", "--cluster"},
			stderr: []string{"--cluster starts its own cluster and broker in-process: not with --url"}},
		{name: "cluster with no rounds", code: exitUsage,
			args:   []string{"--rounds", "0", "--stored", "10", "--cluster"},
			stderr: []string{"--cluster measures in the intake rounds or the soak: not with --rounds 0"}},
		{name: "soak with --stored", code: exitUsage,
			args:   []string{"--soak", "1m", "--stored", "10"},
			stderr: []string{"--soak loads an in-process broker of its own: not with --stored or --url"}},
		{name: "soak sample longer than the soak", code: exitUsage,
			args:   []string{"--soak", "5s", "--sample", "10s"},
			stderr: []string{"--sample 10s is longer than --soak 5s"}},
		{name: "soak rate zero", code: exitUsage,
			args:   []string{"--soak", "5s", "--soak-rate", "0"},
			stderr: []string{"--soak-rate 0: want orders per second"}},
		{name: "a stray argument", code: exitUsage,
			args:   []string{"now"},
			stderr: []string{`unexpected argument "now"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string(nil), tiny...), tc.args...)
			if tc.dataDir {
				args = append(args, "--data-dir", t.TempDir())
			}
			r := runEpsctl(t, nil, args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
				}
			}
			for _, not := range tc.notStdout {
				if strings.Contains(r.stdout, not) {
					t.Errorf("stdout has %q:\n%s", not, r.stdout)
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}

func TestLoadUsage(t *testing.T) {
	r := runEpsctl(t, nil, "load", "--help")
	if r.code != exitOK {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"Usage: epsctl load", "-debug-listen string", "loopback only", "-token-cache-size int", "(default 10000)",
		"with --url they are refused", "-concurrency list", `(default 16,64)`, "-stored int", "-rate string", "-json", "HTTP floor",
		"-cluster", "three-node NATS cluster", "-soak duration", "-sample duration", "(default 10s)", "-warmup duration", "-soak-rate float"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("usage lacks %q:\n%s", want, r.stderr)
		}
	}
}

// runLoadJSON runs epsctl load with --json and decodes its report.
func runLoadJSON(t *testing.T, args ...string) (*loadReport, result) {
	t.Helper()
	r := runEpsctl(t, nil, append([]string{"load", "--quiet", "--json"}, args...)...)
	if r.code != exitOK {
		t.Fatalf("exit %d; stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var rep loadReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not the JSON report (%v): %s", err, r.stdout)
	}
	return &rep, r
}

// TestLoadSidesAndRatios runs two short rounds at two concurrencies under
// an interval sync policy and checks that every side measured accepted
// orders in every round, and that every ratio is computed from the same
// round's figures.
func TestLoadSidesAndRatios(t *testing.T) {
	rep, r := runLoadJSON(t, "--duration", "250ms", "--rounds", "2", "--concurrency", "2,3",
		"--jetstream-sync", "1s", "--async-window", "8", "--async-publishers", "2", "--rate", "40", "--data-dir", t.TempDir())
	in := rep.Intake
	if in == nil {
		t.Fatalf("no intake in the report: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "in-process broker on http://") {
		t.Errorf("with --json the notes go to stderr: %q", r.stderr)
	}
	type key struct {
		side        string
		round, conc int
	}
	byKey := map[key]*loadPhase{}
	for _, p := range in.Phases {
		byKey[key{p.Side, p.Round, p.Concurrency}] = p
		if p.OK == 0 || p.Rate <= 0 || p.P50 <= 0 || p.P99 < p.P50 || p.P999 < p.P99 {
			t.Errorf("%s round %d at %d: no figures: %+v", p.Side, p.Round, p.Concurrency, p)
		}
		if p.Failed != 0 {
			t.Errorf("%s round %d at %d: %d failed, first %q", p.Side, p.Round, p.Concurrency, p.Failed, p.FirstFailure)
		}
		if p.CPUPerOrder <= 0 {
			t.Errorf("%s round %d: CPU per order %v", p.Side, p.Round, p.CPUPerOrder)
		}
	}
	for round := 1; round <= 2; round++ {
		for _, c := range []int{2, 3} {
			for _, side := range []string{sideBroker, sideRaw, sideFloor} {
				if byKey[key{side, round, c}] == nil {
					t.Errorf("no %s phase in round %d at %d clients", side, round, c)
				}
			}
		}
		if byKey[key{sideRawAsync, round, 8}] == nil {
			t.Errorf("no raw-async phase (window 8) in round %d under interval sync", round)
		}
	}
	if len(in.Phases) != 2*(2*3+1) {
		t.Errorf("%d phases, want 14", len(in.Phases))
	}
	want := map[string]bool{}
	for _, c := range []int{2, 3} {
		for _, other := range []string{sideRaw, sideFloor, sideRawAsync} {
			want[other+"@"+string(rune('0'+c))] = true
		}
	}
	for _, lr := range in.Ratios {
		other := strings.TrimPrefix(lr.Name, "broker/")
		delete(want, other+"@"+string(rune('0'+lr.Concurrency)))
		if len(lr.PerRound) != 2 {
			t.Fatalf("%s at %d: %d rounds", lr.Name, lr.Concurrency, len(lr.PerRound))
		}
		for i, got := range lr.PerRound {
			oc := lr.Concurrency
			if other == sideRawAsync {
				oc = 8
			}
			b, o := byKey[key{sideBroker, i + 1, lr.Concurrency}], byKey[key{other, i + 1, oc}]
			if w := b.Rate / o.Rate; math.Abs(got-w) > 1e-9*w {
				t.Errorf("%s at %d round %d: %v, want broker %v / %s %v = %v", lr.Name, lr.Concurrency, i+1, got, b.Rate, other, o.Rate, w)
			}
		}
		if m := (lr.PerRound[0] + lr.PerRound[1]) / 2; math.Abs(lr.Median-m) > 1e-9*m {
			t.Errorf("%s at %d: median %v, want %v", lr.Name, lr.Concurrency, lr.Median, m)
		}
	}
	if len(want) != 0 {
		t.Errorf("ratios missing: %v", want)
	}
	if f := in.FixedRate; f == nil || f.TargetRate != 40 || f.OK == 0 || f.P99 <= 0 || f.Failed != 0 {
		t.Errorf("fixed-rate phase: %+v", f)
	}
	if len(in.Summary) != 7 {
		t.Errorf("%d summary rows, want 7 (3 sides at 2 concurrencies, raw-async)", len(in.Summary))
	}
}

// TestLoadStored fills a broker with 200 prescriptions, restarts it, and
// checks the counts: exactly 200 stored, releases of 25 as many as the
// queues hold, every search found; a second run reuses the fill.
func TestLoadStored(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "stored")
	args := []string{"--rounds", "0", "--stored", "200", "--dispensers", "4", "--releases", "100", "--searches", "30",
		"--stored-dir", dir}
	rep, _ := runLoadJSON(t, args...)
	s := rep.Stored
	if s == nil || rep.Intake != nil {
		t.Fatalf("report: %+v", rep)
	}
	if s.Fill.Stored != 200 || s.Indexed != 200 || s.EventsInLog < 200 || s.Reused {
		t.Errorf("stored %d, indexed %d, events %d, reused %v; want 200 fresh", s.Fill.Stored, s.Indexed, s.EventsInLog, s.Reused)
	}
	if got := s.Fill.PerDispenser; len(got) != 4 || got[0]+got[1]+got[2]+got[3] != 200 {
		t.Errorf("per dispenser %v", got)
	}
	// 50 each: 2 full releases of 25 each, 8 in all.
	if s.Release.OK != 8 || s.Release.Failed != 0 || s.Released <= 0 || s.Released > 200 || s.ReleasesCapped == "" {
		t.Errorf("release: %d answered, %d failed, %d released, capped %q", s.Release.OK, s.Release.Failed, s.Released, s.ReleasesCapped)
	}
	if s.Search.OK != 30 || s.Found != 30 || s.Search.Failed != 0 {
		t.Errorf("search: %d answered, %d found, %d failed (%s)", s.Search.OK, s.Found, s.Search.Failed, s.Search.FirstFailure)
	}
	if s.ReadySeconds <= 0 || s.TrackerSeconds < s.ReadySeconds || s.RSSReady <= 0 || s.PeakRSS <= 0 || s.Fill.FillSeconds <= 0 {
		t.Errorf("restart and memory figures: %+v", s)
	}
	if len(s.Fill.IDs) != 200 {
		t.Errorf("%d sample IDs, want all 200", len(s.Fill.IDs))
	}

	// Again on the same dir: the fill is reused; what was released is
	// not released again.
	rep, _ = runLoadJSON(t, args...)
	if s2 := rep.Stored; !s2.Reused || s2.Indexed != 200 || s2.Release.OK+s.Release.OK > 8 {
		t.Errorf("second run: reused %v, indexed %d, %d releases after %d", s2.Reused, s2.Indexed, s2.Release.OK, s.Release.OK)
	}

	// Another size on the same dir is refused.
	r := runEpsctl(t, nil, "load", "--quiet", "--rounds", "0", "--stored", "300", "--dispensers", "4", "--stored-dir", dir)
	if r.code != exitUsage || !strings.Contains(r.stderr, "holds a fill of 200 prescriptions to 4 dispensers, not 300 to 4") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	// A dir with something else in it is refused.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "x"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runEpsctl(t, nil, "load", "--quiet", "--rounds", "0", "--stored", "10", "--stored-dir", other)
	if r.code != exitUsage || !strings.Contains(r.stderr, "is not empty and holds no fill") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestOrderGen checks the fast generator's orders: each valid, with the
// identifiers it reports and fresh ones every time.
func TestOrderGen(t *testing.T) {
	one, err := oneItemOrder()
	if err != nil {
		t.Fatal(err)
	}
	four, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		tmpl  *fhirgen.Template
		items int
	}{{"1 item", one, 1}, {"4 items", four, 4}} {
		t.Run(tc.name, func(t *testing.T) {
			og, err := newOrderGen(tc.tmpl, "A83008", "FX007")
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for i := 0; i < 3; i++ {
				g := og.order()
				msg, err := fhir.DecodeMessage(g.Body)
				if err != nil {
					t.Fatal(err)
				}
				o, err := msg.Order(time.Now())
				if err != nil {
					t.Fatalf("not a valid order: %v", err)
				}
				if o.PrescriptionID != g.ShortID || o.BundleID != g.BundleID || o.LongID != g.LongID || o.NHSNumber != g.NHSNumber ||
					o.Performer != "FX007" || o.Sender != "A83008" || len(o.Items) != tc.items || len(g.ItemIDs) != tc.items {
					t.Errorf("order %+v, generated %+v", o, g)
				}
				for j, it := range o.Items {
					if it.ID != g.ItemIDs[j] {
						t.Errorf("item %d: %s, generated %s", j, it.ID, g.ItemIDs[j])
					}
				}
				for _, id := range append([]string{g.ShortID, g.BundleID, g.LongID}, g.ItemIDs...) {
					if seen[id] {
						t.Errorf("identifier %s again", id)
					}
					seen[id] = true
				}
			}
		})
	}
}

// TestLoadCluster runs one short round with --cluster and checks that
// both topologies were measured in it, that the ratio cluster/single is
// the same round's rates, that the group commit's batches were counted
// on each, and that the cluster's streams were R3 with two followers.
func TestLoadCluster(t *testing.T) {
	rep, r := runLoadJSON(t, "--cluster", "--duration", "1s", "--rounds", "1", "--concurrency", "4", "--rate", "30", "--data-dir", t.TempDir())
	in := rep.Intake
	if in == nil || in.Cluster == nil {
		t.Fatalf("no intake or cluster in the report: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, "against a 3-node NATS cluster in this process") || !strings.Contains(r.stderr, "streams R3") {
		t.Errorf("stderr does not say where the cluster broker runs: %q", r.stderr)
	}
	phases := map[string]*loadPhase{}
	for _, p := range in.Phases {
		phases[p.Side] = p
		if p.OK == 0 || p.Failed != 0 || p.Rate <= 0 {
			t.Errorf("%s: %d answered, %d failed (first %q)", p.Side, p.OK, p.Failed, p.FirstFailure)
		}
	}
	for _, side := range []string{sideRaw, sideBroker, sideClusterBroker, sideClusterRaw, sideFloor} {
		if phases[side] == nil {
			t.Errorf("no %s phase", side)
		}
	}
	for _, side := range []string{sideBroker, sideClusterBroker} {
		p := phases[side]
		if p == nil {
			continue
		}
		// Every accepted order is at least one event log write, each taken
		// by a commit.
		if c := p.Commits; c == nil || c.Commits == 0 || c.Writes < float64(p.OK) || c.meanBatch() < 1 {
			t.Errorf("%s: commits %+v for %d orders", side, p.Commits, p.OK)
		}
	}
	lr := in.ratio(sideClusterBroker+"/"+sideBroker, 4)
	if lr == nil || len(lr.PerRound) != 1 {
		t.Fatalf("no cluster-broker/broker ratio at 4 clients: %+v", in.Ratios)
	}
	if b, c := phases[sideBroker], phases[sideClusterBroker]; b != nil && c != nil {
		if w := c.Rate / b.Rate; math.Abs(lr.Median-w) > 1e-9*w {
			t.Errorf("cluster-broker/broker %v, want %v / %v = %v", lr.Median, c.Rate, b.Rate, w)
		}
	}
	if in.ratio(sideClusterBroker+"/"+sideClusterRaw, 4) == nil {
		t.Errorf("no cluster-broker/cluster-raw ratio")
	}
	for _, p := range []*loadPhase{in.FixedRate, in.ClusterFixedRate} {
		if p == nil || p.TargetRate != 30 || p.OK == 0 || p.Failed != 0 {
			t.Errorf("fixed-rate phase: %+v", p)
		}
	}
	streams := map[string]streamPlacement{}
	for _, p := range in.Cluster.Streams {
		streams[p.Stream] = p
		if p.Replicas != 3 || p.Leader == "" || len(p.Peers) != 2 {
			t.Errorf("stream %s: R%d, leader %q, followers %v; want R3 with a leader and two followers", p.Stream, p.Replicas, p.Leader, p.Peers)
		}
	}
	for _, name := range []string{"EPS_EVENTS", "EPS_AUDIT", "EPS_NOTIFY", "KV_EPS_REQUESTS", baselineStream} {
		if _, ok := streams[name]; !ok {
			t.Errorf("no stream %s on the cluster: %+v", name, in.Cluster.Streams)
		}
	}
	var text bytes.Buffer
	rep.print(&text)
	for _, want := range []string{"cluster (3 NATS nodes in this process, streams R3) against the single node (R1)",
		"cluster-broker/broker      at 4 clients: median", "group commit (eps_commit_batch_size", "EPS_EVENTS             R3 leader load-n",
		"a floor for the cost of replication", "cluster-fixed-rate    30/s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, text.String())
		}
	}
}

// TestLoadSoak runs a three-second soak sampled every second and checks
// the samples (printed as they are taken, and in the report) and the
// verdict.
func TestLoadSoak(t *testing.T) {
	rep, r := runLoadJSON(t, "--soak", "3s", "--sample", "1s", "--warmup", "1s", "--soak-rate", "20", "--dispensers", "2", "--data-dir", t.TempDir())
	s := rep.Soak
	if s == nil || rep.Intake != nil {
		t.Fatalf("report: %s", r.stdout)
	}
	if !strings.Contains(r.stderr, soakHeader) {
		t.Errorf("no sample table on stderr (with --json): %q", r.stderr)
	}
	// A sample a second for 3 s: 3, or 2 when a slow sample made the
	// ticker drop a tick on a loaded machine.
	if len(s.Samples) < 2 || len(s.Samples) > 3 {
		t.Fatalf("%d samples, want 3 (or 2)", len(s.Samples))
	}
	var orders int64
	for i, smp := range s.Samples {
		orders += smp.Orders
		if smp.Goroutines <= 0 || smp.HeapInuse == 0 || smp.RSS <= 0 || smp.StoredBytes == 0 || smp.Elapsed <= 0 {
			t.Errorf("sample %d: %+v", i, smp)
		}
	}
	// A search may run before the tracker index has applied an order
	// accepted a moment before: some searches found is enough here.
	if s.Orders == 0 || orders != s.Orders || s.Failed != 0 || s.Searches == 0 || s.Found == 0 || s.Found > s.Searches {
		t.Errorf("%d orders (%d in the samples), %d failed (first %q), %d searches, %d found", s.Orders, orders, s.Failed, s.FirstFailure, s.Searches, s.Found)
	}
	if s.Releases == 0 || s.Released == 0 {
		t.Errorf("%d releases released %d", s.Releases, s.Released)
	}
	if last := s.Samples[len(s.Samples)-1]; s.From == nil || s.To == nil || s.From.Elapsed < 1 || s.To.Elapsed != last.Elapsed {
		t.Errorf("growth from %+v to %+v", s.From, s.To)
	}
	var text bytes.Buffer
	rep.print(&text)
	for _, want := range []string{"soak (single node): 3s, ", "soak verdict: from ", "goroutines ", "heap live "} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, text.String())
		}
	}
}
