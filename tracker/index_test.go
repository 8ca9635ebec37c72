package tracker

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sort"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

func rec(id, nhs, presc, nom string, created time.Time, st rx.Status) *rx.Prescription {
	return &rx.Prescription{ID: id, NHSNumber: nhs, Prescriber: presc, PrescriberOrg: presc, Created: created,
		Issue: rx.Issue{Nominated: nom, Status: st}}
}

func TestIndexQueriesAndMoves(t *testing.T) {
	ix := NewIndex()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ix.Apply(1, rec("A", "9449305552", "A83008", "FA565", t0, rx.StatusToBeDispensed))
	ix.Apply(2, rec("B", "9449305552", "A83008", "", t0.Add(time.Hour), rx.StatusToBeDispensed))
	ix.Apply(3, rec("C", "5839945242", "B81001", "FA565", t0.Add(2*time.Hour), rx.StatusToBeDispensed))
	if got := ids(ix.ByNHSNumber("9449305552")); got != "B A" {
		t.Errorf("by NHS number %s, want newest first B A", got)
	}
	if got := ids(ix.ByNominated("FA565")); got != "C A" {
		t.Errorf("by nominated %s", got)
	}
	// A is released to FA565 then returned (nomination cleared): it moves
	// between the sets.
	r := rec("A", "9449305552", "A83008", "FA565", t0, rx.StatusWithDispenser)
	r.Dispenser = "FA565"
	ix.Apply(4, r)
	if got := ids(ix.ByDispenser("FA565")); got != "A" {
		t.Errorf("by dispenser %s", got)
	}
	r = rec("A", "9449305552", "A83008", "", t0, rx.StatusToBeDispensed)
	ix.Apply(5, r)
	if got := ids(ix.ByDispenser("FA565")) + "|" + ids(ix.ByNominated("FA565")); got != "|C" {
		t.Errorf("after return: dispenser|nominated = %s", got)
	}
	// A replayed old event changes nothing.
	ix.Apply(4, rec("A", "9449305552", "A83008", "ZZZ", t0, rx.StatusExpired))
	if e, _ := ix.Get("A"); e.Status != rx.StatusToBeDispensed || e.Seq != 5 {
		t.Errorf("old event applied: %+v", e)
	}
	if got := ids(ix.ByPrescriber("A83008")); got != "B A" || ix.Len() != 3 || ix.Applied() != 5 {
		t.Errorf("by prescriber %s, len %d, applied %d", got, ix.Len(), ix.Applied())
	}
}

func TestIndexSnapshotRoundTrip(t *testing.T) {
	ix := NewIndex()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < 100; i++ {
		r := rec(fmt.Sprintf("ID%03d", i), fmt.Sprintf("P%d", i%7), "A83008", []string{"", "FA565"}[i%2], t0.Add(time.Duration(i)*time.Minute), rx.StatusToBeDispensed)
		if i%3 == 0 {
			r.Dispenser, r.Status = "FA565", rx.StatusWithDispenser
		}
		ix.Apply(uint64(i+1), r)
	}
	path := filepath.Join(t.TempDir(), "index.gob")
	if err := ix.SaveSnapshot(path); err != nil {
		t.Fatal(err)
	}
	back := NewIndex()
	if err := back.LoadSnapshot(path); err != nil {
		t.Fatal(err)
	}
	if back.Applied() != ix.Applied() || back.Len() != ix.Len() {
		t.Fatalf("applied %d len %d", back.Applied(), back.Len())
	}
	for _, q := range []func(*Index) []Entry{
		func(x *Index) []Entry { return x.ByNHSNumber("P3") }, func(x *Index) []Entry { return x.ByNominated("FA565") },
		func(x *Index) []Entry { return x.ByDispenser("FA565") }, func(x *Index) []Entry { return x.ByPrescriber("A83008") },
	} {
		if a, b := fmt.Sprint(q(ix)), fmt.Sprint(q(back)); a != b {
			t.Errorf("answers differ after the snapshot:\n%s\n%s", a, b)
		}
	}
	if err := NewIndex().LoadSnapshot(filepath.Join(t.TempDir(), "none")); err != ErrNoSnapshot {
		t.Errorf("missing snapshot: %v", err)
	}
	if err := NewIndex().ReadSnapshot(bytes.NewReader([]byte("garbage"))); err == nil {
		t.Error("garbage snapshot accepted")
	}
}

func TestWaitApplied(t *testing.T) {
	ix := NewIndex()
	go func() {
		time.Sleep(10 * time.Millisecond)
		ix.Apply(7, rec("A", "1", "A83008", "", time.Now(), rx.StatusToBeDispensed))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ix.WaitApplied(ctx, 7); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if err := ix.WaitApplied(short, 8); err == nil {
		t.Error("waited for an event that never came")
	}
}

func ids(es []Entry) string {
	s := ""
	for i, e := range es {
		if i > 0 {
			s += " "
		}
		s += e.ID
	}
	return s
}

// BenchmarkIndexSearch1M fills an index with 1,000,000 prescriptions (about
// 2.2 per patient, 9,000 prescriber organisations, 11,400 dispensers) and
// reports the latency of searches by prescription ID and by NHS number (p50
// and p99, in microseconds) and the heap per indexed prescription.
//
//	go test -run '^$' -bench IndexSearch1M -benchtime 200000x ./tracker/
func BenchmarkIndexSearch1M(b *testing.B) {
	const n = 1_000_000
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ix := NewIndex()
	rng := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	idsList := make([]string, n)
	nhsList := make([]string, n/2)
	for i := range nhsList {
		nhsList[i] = fmt.Sprintf("9%09d", i)
	}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%06X-A%05d-%05X%c", rng.IntN(1<<24), rng.IntN(9000), rng.IntN(1<<20), 'A'+rune(i%26))
		idsList[i] = id
		r := &rx.Prescription{ID: id, NHSNumber: nhsList[rng.IntN(len(nhsList))], Prescriber: fmt.Sprintf("A%05d", rng.IntN(9000)),
			Created: t0.Add(time.Duration(i) * time.Second), Issue: rx.Issue{Status: rx.StatusToBeDispensed}}
		r.PrescriberOrg = r.Prescriber
		if i%10 != 0 {
			r.Nominated = fmt.Sprintf("F%04d", rng.IntN(11400))
		}
		ix.Apply(uint64(i+1), r)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// idsList and nhsList are the benchmark's own: subtract them.
	own := uint64(n*(16+20) + len(nhsList)*(16+10))
	perRx := float64(after.HeapAlloc-before.HeapAlloc-own) / n

	lat := map[string][]time.Duration{}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			t := time.Now()
			if _, ok := ix.Get(idsList[rng.IntN(n)]); !ok {
				b.Fatal("not found")
			}
			lat["id"] = append(lat["id"], time.Since(t))
		} else {
			t := time.Now()
			ix.ByNHSNumber(nhsList[rng.IntN(len(nhsList))])
			lat["nhs"] = append(lat["nhs"], time.Since(t))
		}
	}
	b.StopTimer()
	for _, k := range []string{"id", "nhs"} {
		d := lat[k]
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		if len(d) == 0 {
			continue
		}
		b.ReportMetric(float64(d[len(d)/2].Nanoseconds())/1000, k+"-p50-µs")
		b.ReportMetric(float64(d[len(d)*99/100].Nanoseconds())/1000, k+"-p99-µs")
	}
	b.ReportMetric(perRx, "heap-B/prescription")
	runtime.KeepAlive(idsList)
}

// A prescription first known from a kept cancellation is filed under the
// order's patient and prescriber when the order arrives.
func TestIndexRefilesWhenTheOrderArrives(t *testing.T) {
	ix := NewIndex()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ix.Apply(1, rec("A", "1111111111", "X1", "", t0, rx.StatusCancelledFuture))
	ix.Apply(2, rec("A", "9449305552", "A83008", "FA565", t0.Add(time.Hour), rx.StatusToBeDispensed))
	if len(ix.ByNHSNumber("1111111111")) != 0 || len(ix.ByPrescriber("X1")) != 0 {
		t.Error("still filed under the cancellation's patient or prescriber")
	}
	if ids(ix.ByNHSNumber("9449305552")) != "A" || ids(ix.ByPrescriber("A83008")) != "A" {
		t.Error("not filed under the order's patient and prescriber")
	}
}
