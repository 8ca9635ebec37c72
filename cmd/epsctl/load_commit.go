package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// commitStats is what the broker's group commit did, from its metrics
// (broker/metrics.go): eps_commit_batch_size (the writes a commit took
// together: fewer than the committer's MinCommitBatch are published each
// on its own, more as one atomic batch) and eps_commits_total by outcome.
type commitStats struct {
	Commits  uint64            `json:"commits"`     // commits taken (the histogram's count)
	Writes   float64           `json:"writes"`      // writes they took (the histogram's sum)
	Buckets  []commitBucket    `json:"batch_sizes"` // commits by writes taken
	Outcomes map[string]uint64 `json:"outcomes"`    // eps_commits_total: batch, single, fallback, split, error
	Above    uint64            `json:"commits_above_last_bucket,omitempty"`
}

// commitBucket counts the commits that took more than the previous
// bucket's UpTo writes and at most UpTo.
type commitBucket struct {
	UpTo    float64 `json:"up_to"`
	Commits uint64  `json:"commits"`
}

// readCommitStats reads the group commit's metrics from reg (cumulative
// since the broker started).
func readCommitStats(reg *prometheus.Registry) commitStats {
	s := commitStats{Outcomes: map[string]uint64{}}
	mfs, err := reg.Gather()
	if err != nil {
		return s
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "eps_commit_batch_size":
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				s.Commits, s.Writes = h.GetSampleCount(), h.GetSampleSum()
				prev := uint64(0)
				for _, b := range h.GetBucket() {
					s.Buckets = append(s.Buckets, commitBucket{UpTo: b.GetUpperBound(), Commits: b.GetCumulativeCount() - prev})
					prev = b.GetCumulativeCount()
				}
				s.Above = s.Commits - prev
			}
		case "eps_commits_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "outcome" {
						s.Outcomes[l.GetValue()] += uint64(m.GetCounter().GetValue())
					}
				}
			}
		}
	}
	return s
}

// sub is what was committed between before and s.
func (s commitStats) sub(before commitStats) *commitStats {
	d := &commitStats{Commits: s.Commits - before.Commits, Writes: s.Writes - before.Writes, Above: s.Above - before.Above, Outcomes: map[string]uint64{}}
	for i, b := range s.Buckets {
		if i < len(before.Buckets) {
			b.Commits -= before.Buckets[i].Commits
		}
		d.Buckets = append(d.Buckets, b)
	}
	for k, v := range s.Outcomes {
		if v-before.Outcomes[k] > 0 {
			d.Outcomes[k] = v - before.Outcomes[k]
		}
	}
	return d
}

// add adds o's counts to s.
func (s *commitStats) add(o *commitStats) {
	if o == nil {
		return
	}
	s.Commits += o.Commits
	s.Writes += o.Writes
	s.Above += o.Above
	if s.Outcomes == nil {
		s.Outcomes = map[string]uint64{}
	}
	for k, v := range o.Outcomes {
		s.Outcomes[k] += v
	}
	for i, b := range o.Buckets {
		if i < len(s.Buckets) {
			s.Buckets[i].Commits += b.Commits
		} else {
			s.Buckets = append(s.Buckets, b)
		}
	}
}

// meanBatch is the mean writes a commit took.
func (s *commitStats) meanBatch() float64 {
	if s.Commits == 0 {
		return 0
	}
	return s.Writes / float64(s.Commits)
}

// distribution is the share of commits per batch size bucket, e.g.
// "1: 40% 2: 10% 3-4: 20% ...", empty buckets left out.
func (s *commitStats) distribution() string {
	var parts []string
	lo := 0.0
	for _, b := range s.Buckets {
		label := fmt.Sprintf("%g-%g", lo+1, b.UpTo)
		if b.UpTo == lo+1 {
			label = fmt.Sprintf("%g", b.UpTo)
		}
		lo = b.UpTo
		if b.Commits == 0 || s.Commits == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %.0f%%", label, 100*float64(b.Commits)/float64(s.Commits)))
	}
	if s.Above > 0 && s.Commits > 0 {
		parts = append(parts, fmt.Sprintf(">%g: %.0f%%", lo, 100*float64(s.Above)/float64(s.Commits)))
	}
	return strings.Join(parts, " ")
}

// printCommits prints one line of a side's group commit figures.
func printCommits(w io.Writer, side string, conc int, s *commitStats) {
	fmt.Fprintf(w, "%-18s %7d %8d %9.1f %8d %7d  %s\n", side, conc, s.Commits, s.meanBatch(), s.Outcomes["batch"], s.Outcomes["single"], s.distribution())
}
