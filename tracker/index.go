package tracker

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Entry is what the index keeps of one prescription: enough to find it and
// to sort and filter search results. The full record is in the event log.
type Entry struct {
	ID         string
	NHSNumber  string
	Status     rx.Status
	Prescriber string // sending organisation
	PrescOrg   string // requester's organisation, when different
	Nominated  string
	Dispenser  string
	Created    time.Time
	DueAt      time.Time // when a scheduled transition may be due (zero: none)
	Seq        uint64    // the event log sequence of the latest event applied
}

// Index is the tracker's status index: a projection of the event log, by
// prescription ID, by NHS number, by prescriber organisation, and by
// nominated and holding dispenser. It is safe for concurrent use.
type Index struct {
	mu           sync.RWMutex
	byID         map[string]*Entry
	byNHS        map[string][]*Entry // a prescription's NHS number never changes
	byPrescriber map[string][]*Entry // nor does its prescriber
	byNominated  map[string]map[string]*Entry
	byDispenser  map[string]map[string]*Entry
	queues       *readyQueues // the dispensers' ready queues (readyqueue.go)
	applied      uint64
	origin       string        // which event log the index is of
	changed      chan struct{} // closed and replaced on every Apply
}

// NewIndex returns an empty index.
func NewIndex() *Index {
	return &Index{
		byID:         map[string]*Entry{},
		byNHS:        map[string][]*Entry{},
		byPrescriber: map[string][]*Entry{},
		byNominated:  map[string]map[string]*Entry{},
		byDispenser:  map[string]map[string]*Entry{},
		queues:       newReadyQueues(),
		changed:      make(chan struct{}),
	}
}

// Apply records the state of a prescription after the event at seq, in the
// index and in the ready queues. Events at or below the last applied
// sequence are ignored, so replaying the log over an index is harmless.
func (ix *Index) Apply(seq uint64, rec *rx.Prescription) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seq <= ix.applied {
		return
	}
	ix.applied = seq
	ix.apply(seq, rec)
	ix.queues.apply(seq, rec)
	close(ix.changed)
	ix.changed = make(chan struct{})
}

func (ix *Index) apply(seq uint64, rec *rx.Prescription) {
	e, ok := ix.byID[rec.ID]
	if !ok {
		e = &Entry{ID: rec.ID, NHSNumber: rec.NHSNumber, Prescriber: rec.Prescriber, Created: rec.Created}
		if rec.PrescriberOrg != rec.Prescriber {
			e.PrescOrg = rec.PrescriberOrg
		}
		ix.byID[rec.ID] = e
		ix.byNHS[e.NHSNumber] = append(ix.byNHS[e.NHSNumber], e)
		ix.byPrescriber[e.Prescriber] = append(ix.byPrescriber[e.Prescriber], e)
	}
	if e.NHSNumber != rec.NHSNumber || e.Prescriber != rec.Prescriber {
		// A kept cancellation's guess replaced by the order itself.
		ix.byNHS[e.NHSNumber] = slices.DeleteFunc(ix.byNHS[e.NHSNumber], func(x *Entry) bool { return x == e })
		ix.byPrescriber[e.Prescriber] = slices.DeleteFunc(ix.byPrescriber[e.Prescriber], func(x *Entry) bool { return x == e })
		e.NHSNumber, e.Prescriber = rec.NHSNumber, rec.Prescriber
		ix.byNHS[e.NHSNumber] = append(ix.byNHS[e.NHSNumber], e)
		ix.byPrescriber[e.Prescriber] = append(ix.byPrescriber[e.Prescriber], e)
	}
	e.PrescOrg = ""
	if rec.PrescriberOrg != rec.Prescriber {
		e.PrescOrg = rec.PrescriberOrg
	}
	e.Created = rec.Created
	moveSet(ix.byNominated, e.Nominated, rec.Nominated, e)
	moveSet(ix.byDispenser, e.Dispenser, rec.Dispenser, e)
	e.Status, e.Nominated, e.Dispenser, e.Seq = rec.Status, rec.Nominated, rec.Dispenser, seq
	e.DueAt = rx.NextDue(rec)
}

// Due lists the prescriptions whose scheduled transition may be due at now.
func (ix *Index) Due(now time.Time) []string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var out []string
	for id, e := range ix.byID {
		if !e.DueAt.IsZero() && !now.Before(e.DueAt) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// moveSet moves e from set[from] to set[to] ("" is no set).
func moveSet(set map[string]map[string]*Entry, from, to string, e *Entry) {
	if from == to {
		if to != "" {
			if set[to] == nil {
				set[to] = map[string]*Entry{}
			}
			set[to][e.ID] = e
		}
		return
	}
	if from != "" {
		delete(set[from], e.ID)
		if len(set[from]) == 0 {
			delete(set, from)
		}
	}
	if to != "" {
		if set[to] == nil {
			set[to] = map[string]*Entry{}
		}
		set[to][e.ID] = e
	}
}

// Skip records that the event at seq holds nothing to index.
func (ix *Index) Skip(seq uint64) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if seq > ix.applied {
		ix.applied = seq
		close(ix.changed)
		ix.changed = make(chan struct{})
	}
}

// SetOrigin names the event log the index is of; snapshots carry it.
func (ix *Index) SetOrigin(o string) {
	ix.mu.Lock()
	ix.origin = o
	ix.mu.Unlock()
}

// Origin is the event log the index is of ("" when unknown).
func (ix *Index) Origin() string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.origin
}

// Applied is the sequence of the last event applied.
func (ix *Index) Applied() uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.applied
}

// Len is the number of prescriptions indexed.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.byID)
}

// WaitApplied waits until the event at seq has been applied, or ctx ends.
func (ix *Index) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		ix.mu.RLock()
		applied, ch := ix.applied, ix.changed
		ix.mu.RUnlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Get returns the entry of a prescription.
func (ix *Index) Get(id string) (Entry, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.byID[id]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// ByNHSNumber returns a patient's prescriptions, newest first.
func (ix *Index) ByNHSNumber(nhs string) []Entry { return ix.list(ix.byNHS, nhs) }

// ByPrescriber returns the prescriptions an organisation sent, newest first.
func (ix *Index) ByPrescriber(ods string) []Entry { return ix.list(ix.byPrescriber, ods) }

// ByNominated returns the prescriptions nominated to a dispenser, newest first.
func (ix *Index) ByNominated(ods string) []Entry { return ix.listSet(ix.byNominated, ods) }

// ByDispenser returns the prescriptions a dispenser holds, newest first.
func (ix *Index) ByDispenser(ods string) []Entry { return ix.listSet(ix.byDispenser, ods) }

// list copies the entries of m[key] under the read lock and sorts them
// newest first.
func (ix *Index) list(m map[string][]*Entry, key string) []Entry {
	ix.mu.RLock()
	out := make([]Entry, len(m[key]))
	for i, e := range m[key] {
		out[i] = *e
	}
	ix.mu.RUnlock()
	SortNewestFirst(out)
	return out
}

func (ix *Index) listSet(set map[string]map[string]*Entry, ods string) []Entry {
	ix.mu.RLock()
	out := make([]Entry, 0, len(set[ods]))
	for _, e := range set[ods] {
		out = append(out, *e)
	}
	ix.mu.RUnlock()
	SortNewestFirst(out)
	return out
}

// SortNewestFirst sorts entries by creation time, newest first, then by ID.
func SortNewestFirst(es []Entry) {
	slices.SortFunc(es, func(a, b Entry) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// snapshot is the on-disk form of an index.
type snapshot struct {
	Version int
	Origin  string
	Applied uint64
	Entries []Entry
	// Queues are the ready queues' entries, each queue oldest first
	// (since version 3).
	Queues []QueueEntry
}

// snapshotVersion 3 added the ready queues: a snapshot of an earlier
// version is refused (ErrSnapshotFormat), and the index rebuilt from the log.
const snapshotVersion = 3

// ErrSnapshotFormat is a snapshot of another format version than this
// broker's (an older one lacks the ready queues): the index is rebuilt from
// the event log.
var ErrSnapshotFormat = errors.New("tracker index snapshot of another format")

// WriteSnapshot writes the index to w.
func (ix *Index) WriteSnapshot(w io.Writer) error {
	ix.mu.RLock()
	s := snapshot{Version: snapshotVersion, Origin: ix.origin, Applied: ix.applied, Entries: make([]Entry, 0, len(ix.byID))}
	for _, e := range ix.byID {
		s.Entries = append(s.Entries, *e)
	}
	s.Queues = ix.queues.all()
	ix.mu.RUnlock()
	return gob.NewEncoder(w).Encode(&s)
}

// ReadSnapshot replaces the index's contents with a snapshot read from r.
func (ix *Index) ReadSnapshot(r io.Reader) error {
	var s snapshot
	if err := gob.NewDecoder(r).Decode(&s); err != nil {
		return fmt.Errorf("tracker index snapshot: %w", err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("%w: version %d, this broker's is %d", ErrSnapshotFormat, s.Version, snapshotVersion)
	}
	fresh := NewIndex()
	for i := range s.Entries {
		e := s.Entries[i]
		rec := &rx.Prescription{ID: e.ID, NHSNumber: e.NHSNumber, Prescriber: e.Prescriber,
			PrescriberOrg: e.PrescOrg, Created: e.Created,
			Issue: rx.Issue{Status: e.Status, Nominated: e.Nominated, Dispenser: e.Dispenser}}
		if rec.PrescriberOrg == "" {
			rec.PrescriberOrg = rec.Prescriber
		}
		fresh.apply(e.Seq, rec)
		fresh.byID[e.ID].DueAt = e.DueAt
	}
	for _, q := range s.Queues {
		if _, dup := fresh.queues.byID[q.ID]; dup || q.ID == "" || q.ODS == "" {
			return fmt.Errorf("tracker index snapshot: ready queue entry %q of %q repeated or incomplete", q.ID, q.ODS)
		}
		fresh.queues.push(q)
	}
	ix.mu.Lock()
	ix.queues = fresh.queues
	ix.byID, ix.byNHS, ix.byPrescriber = fresh.byID, fresh.byNHS, fresh.byPrescriber
	ix.byNominated, ix.byDispenser, ix.applied, ix.origin = fresh.byNominated, fresh.byDispenser, s.Applied, s.Origin
	close(ix.changed)
	ix.changed = make(chan struct{})
	ix.mu.Unlock()
	return nil
}

// SaveSnapshot writes the index to path atomically (a temp file, synced,
// then renamed over the old one).
func (ix *Index) SaveSnapshot(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".index-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := ix.WriteSnapshot(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// LoadSnapshot reads the snapshot at path; ErrNoSnapshot when there is none.
func (ix *Index) LoadSnapshot(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return ErrNoSnapshot
	}
	if err != nil {
		return err
	}
	defer f.Close()
	return ix.ReadSnapshot(f)
}

// ErrNoSnapshot says that no snapshot exists yet.
var ErrNoSnapshot = errors.New("no tracker index snapshot")
