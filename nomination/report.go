package nomination

import (
	"math"
	"sort"
	"time"
)

// This file is the nomination change reports investigators use: for a
// dispenser and a period, the nominations it gained and lost with who made
// each change; and a summary across all dispensers ranking how unusual each
// one's largest daily gain in the period is against its own history. It is
// pure: the broker feeds it the changes it keeps.
//
// Days are UTC calendar days.

// Record is one change to a patient's nominations with the patient's NHS
// number.
type Record struct {
	NHSNumber string `json:"nhsNumber"`
	Change
}

// Period is a half-open time range [Start, End).
type Period struct {
	Start, End time.Time
}

// Days returns the period of the UTC days first to last, both included.
func Days(first, last time.Time) Period {
	return Period{Start: Day(first), End: Day(last).AddDate(0, 0, 1)}
}

// Day returns the start of t's UTC day.
func Day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// Contains reports whether t is in the period.
func (p Period) Contains(t time.Time) bool { return !t.Before(p.Start) && t.Before(p.End) }

// Gain reports whether the change gave ods a nomination.
func (r Record) Gain(ods string) bool { return ods != "" && r.To == ods && r.From != ods }

// Loss reports whether the change took a nomination from ods.
func (r Record) Loss(ods string) bool { return ods != "" && r.From == ods && r.To != ods }

// DispenserReport is what a dispenser gained and lost in a period.
type DispenserReport struct {
	ODS    string
	Period Period
	Gained int
	Lost   int
	// SelfNominated is how many of the gains were self-nominations: the
	// dispenser nominating itself (Change.IsSelfNomination).
	SelfNominated int
	// Detail is every change in the period that gained or lost the
	// dispenser a nomination, oldest first.
	Detail []Record
}

// ForDispenser reports the nominations ods gained (changes to it) and lost
// (changes from it) in the period. A change from A to B is a loss for A and
// a gain for B.
func ForDispenser(recs []Record, ods string, p Period) DispenserReport {
	out := DispenserReport{ODS: ods, Period: p, Detail: []Record{}}
	for _, r := range recs {
		if !p.Contains(r.Time) {
			continue
		}
		switch {
		case r.Gain(ods):
			out.Gained++
			if r.IsSelfNomination() {
				out.SelfNominated++
			}
		case r.Loss(ods):
			out.Lost++
		default:
			continue
		}
		out.Detail = append(out.Detail, r)
	}
	sort.SliceStable(out.Detail, func(i, j int) bool { return out.Detail[i].Time.Before(out.Detail[j].Time) })
	return out
}

// DefaultHistoryDays is how many days before the period a dispenser's
// daily gains are compared with.
const DefaultHistoryDays = 28

// Where a dispenser's baseline comes from.
const (
	BasisHistory = "history" // the days before the period
	BasisPeriod  = "period"  // no history: the other days of the period
	BasisNone    = "none"    // neither: a baseline of 0
)

// Ranked is one dispenser's line of the summary.
type Ranked struct {
	ODS          string
	Gained, Lost int // in the period
	// SelfNominated is how many of the gains were self-nominations.
	SelfNominated int
	// MaxDailyGain is the most nominations gained on one day of the period,
	// and Day that day (the earliest such; zero when it gained none).
	MaxDailyGain int
	Day          time.Time
	// Baseline is the median daily gain it is compared with, Spread the
	// scale of the deviation, Basis where they come from, HistoryDays how
	// many days they are of.
	Baseline    float64
	Spread      float64
	Basis       string
	HistoryDays int
	// Score is (MaxDailyGain - Baseline) / Spread: higher is more unusual.
	Score float64
}

// Summary ranks every dispenser that gained or lost a nomination in the
// period by how unusual its largest daily gain in the period is against its
// own daily gains before it, most unusual first.
//
// For a dispenser D, let g(day) be the nominations D gained on a UTC day
// (0 on days without any). Its history is the historyDays days (default
// DefaultHistoryDays when <= 0) just before the period, counting only days
// from the first day D appears in any change (before that D was not seen,
// not idle). Then
//
//	M        = max g(day) over the period's days (earliest such day)
//	Baseline = median of g over the history
//	MAD      = median of |g - Baseline| over the history
//	Spread   = max(1, 1.4826 × MAD)   (1.4826 × MAD estimates the standard
//	                                   deviation; the floor of 1 keeps a
//	                                   perfectly steady dispenser from
//	                                   dividing by 0)
//	Score    = (M - Baseline) / Spread
//
// This robust z-score is high for a dispenser whose best day is far above
// its usual, whatever its size: one that steadily gains many a day scores
// about 0, one that usually gains 1 and gains 20 in a day scores 19.
//
// Fallback when D has no history (first seen in the period): its baseline
// and spread are taken from the period's other days (every day of the
// period from its first appearance except the day of M; Basis "period"); if
// there are none either (seen on one day only), Baseline is 0 and Spread 1,
// so Score = M (Basis "none").
//
// Ties are broken by the larger M, then by more gains, then by ODS code.
func Summary(recs []Record, p Period, historyDays int) []Ranked {
	if historyDays <= 0 {
		historyDays = DefaultHistoryDays
	}
	histStart := Day(p.Start).AddDate(0, 0, -historyDays)
	type acc struct {
		first        time.Time
		gained, lost int
		self         int
		daily        map[time.Time]int // gains per day, history and period
	}
	by := map[string]*acc{}
	get := func(ods string) *acc {
		a := by[ods]
		if a == nil {
			a = &acc{daily: map[time.Time]int{}}
			by[ods] = a
		}
		return a
	}
	seen := func(ods string, t time.Time) {
		if ods == "" {
			return
		}
		a := get(ods)
		if d := Day(t); a.first.IsZero() || d.Before(a.first) {
			a.first = d
		}
	}
	for _, r := range recs {
		seen(r.From, r.Time)
		seen(r.To, r.Time)
		if r.From == r.To {
			continue
		}
		in := p.Contains(r.Time)
		if r.To != "" {
			a := get(r.To)
			if in {
				a.gained++
				if r.IsSelfNomination() {
					a.self++
				}
			}
			if in || !r.Time.Before(histStart) && r.Time.Before(p.Start) {
				a.daily[Day(r.Time)]++
			}
		}
		if r.From != "" && in {
			get(r.From).lost++
		}
	}
	var out []Ranked
	for ods, a := range by {
		if a.gained == 0 && a.lost == 0 {
			continue
		}
		rk := Ranked{ODS: ods, Gained: a.gained, Lost: a.lost, SelfNominated: a.self}
		// The period's days from the dispenser's first appearance.
		var periodDays []time.Time
		for d := maxTime(Day(p.Start), a.first); d.Before(p.End); d = d.AddDate(0, 0, 1) {
			periodDays = append(periodDays, d)
			if n := a.daily[d]; n > rk.MaxDailyGain {
				rk.MaxDailyGain, rk.Day = n, d
			}
		}
		var hist []float64
		for d := maxTime(histStart, a.first); d.Before(p.Start); d = d.AddDate(0, 0, 1) {
			hist = append(hist, float64(a.daily[d]))
		}
		rk.Basis = BasisHistory
		if len(hist) == 0 {
			rk.Basis = BasisPeriod
			for _, d := range periodDays {
				if !rk.Day.IsZero() && d.Equal(rk.Day) {
					continue // the day of M is not its own baseline
				}
				hist = append(hist, float64(a.daily[d]))
			}
		}
		rk.HistoryDays = len(hist)
		if len(hist) == 0 {
			rk.Basis, rk.Baseline, rk.Spread = BasisNone, 0, 1
		} else {
			rk.Baseline = median(hist)
			dev := make([]float64, len(hist))
			for i, v := range hist {
				dev[i] = math.Abs(v - rk.Baseline)
			}
			rk.Spread = math.Max(1, 1.4826*median(dev))
		}
		rk.Score = (float64(rk.MaxDailyGain) - rk.Baseline) / rk.Spread
		out = append(out, rk)
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		switch {
		case x.Score != y.Score:
			return x.Score > y.Score
		case x.MaxDailyGain != y.MaxDailyGain:
			return x.MaxDailyGain > y.MaxDailyGain
		case x.Gained != y.Gained:
			return x.Gained > y.Gained
		}
		return x.ODS < y.ODS
	})
	if out == nil {
		out = []Ranked{}
	}
	return out
}

// SelfNominators keeps the summary's dispensers that nominated themselves
// in the period, the most self-nominations first (then by the summary's
// order). The summary is left as it was.
func SelfNominators(ranked []Ranked) []Ranked {
	out := []Ranked{}
	for _, rk := range ranked {
		if rk.SelfNominated > 0 {
			out = append(out, rk)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].SelfNominated > out[j].SelfNominated })
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
