package main

import (
	"fmt"

	"github.com/nhs-eps/epsbroker/broker"
	"io"
	"sort"
	"strings"
)

// loadReport is everything one epsctl load run measured (--json prints it).
type loadReport struct {
	Settings loadSettings  `json:"settings"`
	Intake   *intakeReport `json:"intake,omitempty"`
	Stored   *storedReport `json:"stored,omitempty"`
	Soak     *soakReport   `json:"soak,omitempty"`
}

type loadSettings struct {
	Concurrency     []int   `json:"concurrency"`
	PhaseSeconds    float64 `json:"phase_seconds"`
	Rounds          int     `json:"rounds"`
	JetStreamSync   string  `json:"jetstream_sync"`
	URL             string  `json:"url,omitempty"`
	AsyncWindow     int     `json:"async_window"`
	AsyncPublishers int     `json:"async_publishers"`
	Rate            string  `json:"rate"`
	Stored          int     `json:"stored"`
	Dispensers      int     `json:"dispensers"`
	FillSync        string  `json:"fill_sync"`
	Cluster         bool    `json:"cluster"`
	SoakSeconds     float64 `json:"soak_seconds,omitempty"`
	SharedProcess   string  `json:"shared_process"`
}

// intakeReport holds the intake phases and what is computed from them.
type intakeReport struct {
	Order      string         `json:"order"`
	RawHeaders string         `json:"raw_headers,omitempty"`
	Phases     []*loadPhase   `json:"phases"`
	Summary    []*sideSummary `json:"summary"`
	Ratios     []*loadRatio   `json:"ratios"`
	FixedRate  *loadPhase     `json:"fixed_rate,omitempty"`
	Cluster    *clusterReport `json:"cluster,omitempty"`
	// ClusterFixedRate is the fixed-rate phase against the broker on the
	// cluster (--cluster), at half its own saturated rate with --rate half.
	ClusterFixedRate *loadPhase `json:"cluster_fixed_rate,omitempty"`
}

// clusterReport describes the three-node cluster of a --cluster run.
type clusterReport struct {
	Nodes int `json:"nodes"`
	// Streams are the cluster's streams (the broker's and its buckets')
	// with their replicas' placement after the load.
	Streams []streamPlacement `json:"streams"`
	Note    string            `json:"note"`
}

// clusterNote says what the cluster/single ratio of one machine means.
const clusterNote = "the three nodes share this machine's cores and disk with the single node's side and the load generator: " +
	"every write is fsynced three times on one disk and every replication hop is loopback, so cluster-broker/broker is a floor " +
	"for the cost of replication here, not a prediction for three machines"

// sideSummary is a side at one concurrency over the rounds: the median
// rate and CPU, the latencies of every round's requests together.
type sideSummary struct {
	Side        string  `json:"side"`
	Concurrency int     `json:"concurrency"`
	Rounds      int     `json:"rounds"`
	Rate        float64 `json:"median_orders_per_second"`
	P50         float64 `json:"p50_ms"`
	P99         float64 `json:"p99_ms"`
	P999        float64 `json:"p99_9_ms"`
	CPUPerOrder float64 `json:"median_cpu_us_per_order"`
	Failed      int64   `json:"failed"`
	Refused     int64   `json:"refused_503_429"`
	// Commits is the group commit's work over the rounds (broker sides).
	Commits *commitStats `json:"commits,omitempty"`
}

// loadRatio is the broker's rate over another side's, per round (the same
// round's phases) and their median.
type loadRatio struct {
	Name        string    `json:"name"` // broker/raw, broker/floor, broker/raw-async, cluster-broker/broker, cluster-broker/cluster-raw, cluster-raw/raw
	Concurrency int       `json:"concurrency"`
	PerRound    []float64 `json:"per_round"`
	Median      float64   `json:"median"`
}

func (r *intakeReport) find(side string, round, conc int) *loadPhase {
	for _, p := range r.Phases {
		if p.Side == side && p.Round == round && (p.Concurrency == conc || side == sideRawAsync) {
			return p
		}
	}
	return nil
}

// summarise computes the summary and the ratios from the phases.
func (r *intakeReport) summarise(concurrency []int) {
	r.Summary, r.Ratios = nil, nil
	type key struct {
		side string
		conc int
	}
	var keys []key
	groups := map[key][]*loadPhase{}
	for _, p := range r.Phases {
		k := key{p.Side, p.Concurrency}
		if groups[k] == nil {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], p)
	}
	for _, k := range keys {
		ps := groups[k]
		s := &sideSummary{Side: k.side, Concurrency: k.conc, Rounds: len(ps)}
		h := newHist()
		var rates, cpus []float64
		for _, p := range ps {
			h.Merge(p.hist)
			rates, cpus = append(rates, p.Rate), append(cpus, p.CPUPerOrder)
			s.Failed += p.Failed
			s.Refused += p.Refused
			if p.Commits != nil {
				if s.Commits == nil {
					s.Commits = &commitStats{}
				}
				s.Commits.add(p.Commits)
			}
		}
		s.Rate, s.CPUPerOrder = median(rates), median(cpus)
		s.P50, s.P99, s.P999, _ = quantilesMS(h)
		r.Summary = append(r.Summary, s)
	}
	rounds := 0
	for _, p := range r.Phases {
		rounds = max(rounds, p.Round)
	}
	pairs := [][2]string{{sideBroker, sideRaw}, {sideBroker, sideFloor}, {sideBroker, sideRawAsync},
		{sideClusterBroker, sideBroker}, {sideClusterBroker, sideClusterRaw}, {sideClusterRaw, sideRaw}}
	for _, c := range concurrency {
		for _, pair := range pairs {
			lr := &loadRatio{Name: pair[0] + "/" + pair[1], Concurrency: c}
			for round := 1; round <= rounds; round++ {
				b, o := r.find(pair[0], round, c), r.find(pair[1], round, c)
				if b != nil && o != nil && o.Rate > 0 {
					lr.PerRound = append(lr.PerRound, b.Rate/o.Rate)
				}
			}
			if len(lr.PerRound) > 0 {
				lr.Median = median(lr.PerRound)
				r.Ratios = append(r.Ratios, lr)
			}
		}
	}
}

// saturated is the broker's median rate at concurrency conc.
func (r *intakeReport) saturated(conc int) float64 {
	if s := r.summary(sideBroker, conc); s != nil {
		return s.Rate
	}
	return 0
}

// summary is side's summary at concurrency conc (nil: none).
func (r *intakeReport) summary(side string, conc int) *sideSummary {
	for _, s := range r.Summary {
		if s.Side == side && s.Concurrency == conc {
			return s
		}
	}
	return nil
}

// ratio is the named ratio at concurrency conc (nil: none).
func (r *intakeReport) ratio(name string, conc int) *loadRatio {
	for _, lr := range r.Ratios {
		if lr.Name == name && lr.Concurrency == conc {
			return lr
		}
	}
	return nil
}

// printCluster prints the cluster against the single node, per
// concurrency, the group commit's batches on each, and where the
// cluster's replicas are.
func (r *intakeReport) printCluster(w io.Writer, concurrency []int) {
	c := r.Cluster
	fmt.Fprintf(w, "\ncluster (%d NATS nodes in this process, streams R%d) against the single node (R1), the same round's phases:\n", c.Nodes, c.Nodes)
	fmt.Fprintf(w, "%-7s %12s %12s %7s %17s %17s %15s %12s\n", "clients", "single o/s", "cluster o/s", "ratio", "single p50/p99", "cluster p50/p99", "CPU µs/o s/c", "c broker/raw")
	for _, conc := range concurrency {
		s, cl, lr := r.summary(sideBroker, conc), r.summary(sideClusterBroker, conc), r.ratio(sideClusterBroker+"/"+sideBroker, conc)
		if s == nil || cl == nil || lr == nil {
			continue
		}
		raw := "-"
		if cr := r.ratio(sideClusterBroker+"/"+sideClusterRaw, conc); cr != nil {
			raw = fmt.Sprintf("%.2f", cr.Median)
		}
		fmt.Fprintf(w, "%-7d %12.0f %12.0f %7.2f %17s %17s %15s %12s\n", conc, s.Rate, cl.Rate, lr.Median,
			fmt.Sprintf("%.1f/%.1f", s.P50, s.P99), fmt.Sprintf("%.1f/%.1f", cl.P50, cl.P99),
			fmt.Sprintf("%.0f/%.0f", s.CPUPerOrder, cl.CPUPerOrder), raw)
	}
	fmt.Fprintf(w, "note: %s\n", c.Note)
	fmt.Fprintf(w, "\ngroup commit (eps_commit_batch_size: writes a commit took; fewer than %d are published each on its own, %d or more as one atomic batch; batches: atomic batches stored, alone: writes published on their own)\n",
		broker.MinCommitBatch, broker.MinCommitBatch)
	fmt.Fprintf(w, "%-18s %7s %8s %9s %8s %7s  %s\n", "side", "clients", "commits", "mean size", "batches", "alone", "commits by size")
	for _, side := range []string{sideBroker, sideClusterBroker} {
		for _, conc := range concurrency {
			if s := r.summary(side, conc); s != nil && s.Commits != nil {
				printCommits(w, side, conc, s.Commits)
			}
		}
	}
	fmt.Fprintf(w, "\ncluster streams after the load (replicas, leader, followers current):\n")
	for _, p := range c.Streams {
		fmt.Fprintf(w, "  %-22s R%d leader %-8s followers %s (%d current)\n", p.Stream, p.Replicas, p.Leader, strings.Join(p.Peers, ","), p.Current)
	}
}

func (rep *loadReport) print(w io.Writer) {
	if r := rep.Intake; r != nil {
		s := rep.Settings
		fmt.Fprintf(w, "\nintake: %s; JetStream sync %s; %d round(s) of %s per phase\n", r.Order, s.JetStreamSync, s.Rounds, fmtSeconds(s.PhaseSeconds))
		if r.RawHeaders != "" {
			fmt.Fprintf(w, "raw side: the same bytes with the headers %s\n", r.RawHeaders)
		}
		fmt.Fprintf(w, "floor: an HTTP server in this process that reads the body and answers 200, the same client\n")
		fmt.Fprintf(w, "CPU per order: this process's CPU time (getrusage) over the phase / requests; %s\n", s.SharedProcess)
		fmt.Fprintf(w, "behind s: after a broker phase, the seconds until every consumer of the event log (the projections) had applied it; the next phase starts then\n\n")
		fmt.Fprintf(w, "%-18s %7s %5s %10s %7s %8s %8s %8s %9s %8s %9s %9s\n", "side", "clients", "round", "orders/s", "failed", "503/429", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU µs/o", "behind s")
		for _, p := range r.Phases {
			printPhase(w, p, fmt.Sprint(p.Round))
		}
		fmt.Fprintf(w, "\nsummary (median rate and CPU of the rounds; latencies of all rounds' requests together)\n")
		fmt.Fprintf(w, "%-18s %7s %6s %10s %7s %8s %8s %8s %9s %9s\n", "side", "clients", "rounds", "orders/s", "failed", "503/429", "p50 ms", "p99 ms", "p99.9 ms", "CPU µs/o")
		for _, m := range r.Summary {
			fmt.Fprintf(w, "%-18s %7s %6d %10.0f %7d %8d %8.2f %8.2f %9.2f %9.0f\n", m.Side, clients(m.Side, m.Concurrency), m.Rounds, m.Rate,
				m.Failed, m.Refused, m.P50, m.P99, m.P999, m.CPUPerOrder)
		}
		if len(r.Ratios) > 0 {
			fmt.Fprintln(w)
		}
		width := 17
		for _, lr := range r.Ratios {
			width = max(width, len(lr.Name))
		}
		for _, lr := range r.Ratios {
			fmt.Fprintf(w, "%-*s at %d clients: median %.2f (per round %s)\n", width, lr.Name, lr.Concurrency, lr.Median, fmtFloats(lr.PerRound))
		}
		if r.Cluster != nil {
			r.printCluster(w, s.Concurrency)
		}
		for _, p := range append(append([]*loadPhase(nil), r.Phases...), r.FixedRate, r.ClusterFixedRate) {
			if p != nil && p.FirstFailure != "" {
				fmt.Fprintf(w, "first %s failure: %s\n", p.Side, p.FirstFailure)
				break
			}
		}
		if p := r.FixedRate; p != nil {
			fmt.Fprintf(w, "\nfixed rate (open loop: latency from when each order was due): %.0f orders/s offered for %s\n", p.TargetRate, fmtSeconds(p.Seconds))
			fmt.Fprintf(w, "%-18s %7s %5s %10s %7s %8s %8s %8s %9s %8s %9s %9s\n", "side", "sent at", "", "orders/s", "failed", "503/429", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "CPU µs/o", "behind s")
			for _, q := range []*loadPhase{p, r.ClusterFixedRate} {
				if q == nil {
					continue
				}
				printPhase(w, q, "")
				if q.Late > 0 {
					fmt.Fprintf(w, "%s: %d orders not sent: %d already in flight\n", q.Side, q.Late, 8192)
				}
			}
		}
	}
	if rep.Stored != nil {
		rep.Stored.print(w)
	}
	if rep.Soak != nil {
		rep.Soak.print(w)
	}
}

func printPhase(w io.Writer, p *loadPhase, round string) {
	c := clients(p.Side, p.Concurrency)
	if p.Side == sideOpenLoop || p.Side == sideClusterOpenLoop {
		c = fmt.Sprintf("%.0f/s", p.TargetRate)
	}
	behind := "-"
	if p.CatchUp >= 0 {
		behind = fmt.Sprintf("%.2f", p.CatchUp)
	}
	fmt.Fprintf(w, "%-18s %7s %5s %10.0f %7d %8d %8.2f %8.2f %9.2f %8.2f %9.0f %9s\n", p.Side, c, round, p.Rate,
		p.Failed, p.Refused, p.P50, p.P99, p.P999, p.Max, p.CPUPerOrder, behind)
}

// clients is the concurrency column: for raw-async, the window of acks.
func clients(side string, conc int) string {
	if side == sideRawAsync {
		return fmt.Sprintf("w%d", conc)
	}
	return fmt.Sprint(conc)
}

func fmtSeconds(s float64) string {
	out := fmt.Sprintf("%.1fs", s)
	if strings.HasSuffix(out, ".0s") {
		out = strings.TrimSuffix(out, ".0s") + "s"
	}
	return out
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
