// Package memstore is an in-memory implementation of the service ports
// (broker/service/ports.go), for unit tests of the services without NATS.
// It keeps the adapter's semantics that the services rely on: one event
// log whose sequences grow, the latest event of a prescription as its
// current state, every write a compare-and-set on the prescription's
// sequence (a stale one conflicts; Update reads and decides again, at most
// service.MaxAttempts times, then service.ErrBusy), a decided write
// completed whatever the client's context does, records stored and read
// as copies (as JSON, as the event log's Eps-Record header is) with an
// order's own sequence filled in, and ready queues that follow the log.
// Tests can make the store fail, or write between a decision and its
// write, to reach the paths a real store reaches under load or outage.
package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Store is the in-memory event log, ready queues and nomination registry.
// Its zero value is not usable: use New.
type Store struct {
	mu     sync.Mutex
	now    func() time.Time
	events []stored          // the log: events[i] has sequence i+1
	last   map[string]uint64 // prescription ID -> sequence of its latest event
	noms   map[string]*patient
	index  *tracker.Index

	failReads, failWrites error
	failNext              int // reads of prescriptions and events still to fail with failNextErr
	failNextErr           error
	readAsOf              map[string]uint64 // prescription ID -> the sequence its reads show (ReadAsOf)
	beforeWrite           func(id string)
	afterWrite            func(id string) error
	conflicts             int
	maxMessage            int
}

type stored struct {
	ev     service.Event
	record []byte // the record as JSON
}

type patient struct {
	rev     uint64
	cur     []byte // nomination.Patient as JSON
	history []nomination.Change
}

// New returns an empty store whose events are stamped by clock now
// (time.Now when nil).
func New(now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{now: now, last: map[string]uint64{}, noms: map[string]*patient{}, index: tracker.NewIndex()}
}

var (
	_ service.Prescriptions = (*Store)(nil)
	_ service.ReadyQueues   = (*Store)(nil)
	_ service.Nominations   = (*Store)(nil)
	_ service.DueIndex      = (*Store)(nil)
)

// FailReads makes every read return err wrapped (nil: reads work again),
// as a store that cannot be reached.
func (s *Store) FailReads(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failReads = err
}

// FailNextReads makes the next n reads of a prescription or an event
// (Current, Event) return err wrapped, as a store lost for a moment.
func (s *Store) FailNextReads(err error, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext, s.failNextErr = n, err
}

// readErr is the error a read of a prescription or an event fails with
// now (nil: none). Called with s.mu held.
func (s *Store) readErr() error {
	switch {
	case s.failReads != nil:
		return fmt.Errorf("memstore: read: %w", s.failReads)
	case s.failNext > 0:
		s.failNext--
		return fmt.Errorf("memstore: read: %w", s.failNextErr)
	}
	return nil
}

// ReadAsOf makes reads of prescription id (Current) show it as it was at
// seq, whatever was stored since, as a store leader cut off from its
// majority answers until it steps down (0: reads show the latest again).
// Writes still compare with the latest.
func (s *Store) ReadAsOf(id string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readAsOf == nil {
		s.readAsOf = map[string]uint64{}
	}
	if seq == 0 {
		delete(s.readAsOf, id)
		return
	}
	s.readAsOf[id] = seq
}

// FailWrites makes every write return err wrapped (nil: writes work
// again), as a store that refuses writes (full, or lost its quorum).
func (s *Store) FailWrites(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWrites = err
}

// BeforeWrite sets a function called after each decision of Update or
// Create and before its write, without the store's lock: a test may write
// there (through the store) to make the decided write conflict.
func (s *Store) BeforeWrite(f func(id string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeWrite = f
}

// AfterWrite sets a function called after each write is stored, without
// the store's lock: when it returns an error, the write returns that error
// instead of the event, as a store whose answer to a stored write was lost
// (a timeout, a lost connection: the writer cannot tell whether it was
// stored). nil: none.
func (s *Store) AfterWrite(f func(id string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterWrite = f
}

// SetMaxMessage makes a write whose record and body together exceed n
// bytes fail with service.ErrTooLarge (0: no limit).
func (s *Store) SetMaxMessage(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxMessage = n
}

// Conflicts is how many compare-and-set writes have conflicted.
func (s *Store) Conflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts
}

// Update is the compare-and-set write (service.Prescriptions.Update), on
// the services' own loop (service.UpdateEvents).
func (s *Store) Update(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return service.UpdateEvents(ctx, id, false, decide, s.current, s.write)
}

// Create is Update deciding first from "nothing stored"
// (service.Prescriptions.Create).
func (s *Store) Create(ctx context.Context, id string, decide service.Decide) (*service.Event, error) {
	return service.UpdateEvents(ctx, id, true, decide, s.current, s.write)
}

// current is Current with the sequence a write expects (0: none).
func (s *Store) current(ctx context.Context, id string) (*service.Event, uint64, error) {
	c, err := s.Current(ctx, id)
	switch {
	case errors.Is(err, service.ErrNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, err
	}
	return c, c.Seq, nil
}

// write calls the BeforeWrite hook, then appends w if its prescription is
// still at expect, then calls the AfterWrite hook on a stored write.
func (s *Store) write(_ context.Context, w *service.Write, expect uint64) (*service.Event, error) {
	s.mu.Lock()
	hook, after := s.beforeWrite, s.afterWrite
	s.mu.Unlock()
	if hook != nil {
		hook(w.Record.ID)
	}
	ev, err := s.append(w, expect)
	if err == nil && after != nil {
		if err := after(w.Record.ID); err != nil {
			return nil, err
		}
	}
	return ev, err
}

// append stores w if id's latest event is still expect (0: none).
func (s *Store) append(w *service.Write, expect uint64) (*service.Event, error) {
	rec, err := json.Marshal(w.Record)
	if err != nil {
		return nil, fmt.Errorf("memstore: encode record: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWrites != nil {
		return nil, fmt.Errorf("memstore: write: %w", s.failWrites)
	}
	if s.last[w.Record.ID] != expect {
		s.conflicts++
		return nil, service.ErrConflict
	}
	if s.maxMessage > 0 && len(rec)+len(w.Body) > s.maxMessage {
		return nil, service.ErrTooLarge
	}
	seq := uint64(len(s.events)) + 1
	ev := service.Event{Seq: seq, Time: s.now().UTC(), Event: w.Event, MessageID: w.MessageID, Body: slices.Clone(w.Body)}
	s.events = append(s.events, stored{ev: ev, record: rec})
	s.last[w.Record.ID] = seq
	out := s.decode(int(seq) - 1)
	s.project(out)
	return out, nil
}

// decode is the event at index i with a fresh copy of its record, whose
// OrderSeq is filled in for an order's own record (as the adapter does).
// Called with s.mu held.
func (s *Store) decode(i int) *service.Event {
	st := s.events[i]
	ev := st.ev
	ev.Body = slices.Clone(st.ev.Body)
	var rec rx.Prescription
	if err := json.Unmarshal(st.record, &rec); err != nil {
		panic(fmt.Sprintf("memstore: record %d: %v", ev.Seq, err)) // encoded by append
	}
	if rec.OrderSeq == 0 {
		rec.OrderSeq = ev.Seq
	}
	ev.Record = &rec
	return &ev
}

// project keeps the index, and with it the ready queues, in line with a
// written event at once (the adapter's projection does it a little later,
// and a release waits for it: ReadyQueues.CatchUp). Called with s.mu held.
func (s *Store) project(ev *service.Event) {
	s.index.Apply(ev.Seq, ev.Record)
}

// Current is the latest event about a prescription.
func (s *Store) Current(ctx context.Context, id string) (*service.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.readErr(); err != nil {
		return nil, err
	}
	seq, ok := s.last[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	if at, ok := s.readAsOf[id]; ok {
		seq = at
	}
	return s.decode(int(seq) - 1), nil
}

// Event is the event at seq.
func (s *Store) Event(ctx context.Context, seq uint64) (*service.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.readErr(); err != nil {
		return nil, err
	}
	if seq == 0 || seq > uint64(len(s.events)) {
		return nil, service.ErrNotFound
	}
	return s.decode(int(seq) - 1), nil
}

// Events are every event about a prescription, oldest first.
func (s *Store) Events(id string) []*service.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*service.Event
	for i := range s.events {
		if ev := s.decode(i); ev.Record.ID == id {
			out = append(out, ev)
		}
	}
	return out
}

// Len is how many events the log holds.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.events)
}

// EventsUnder lists the events of the given types that carry messageID,
// stored from since to since + window, without their bodies.
func (s *Store) EventsUnder(ctx context.Context, messageID string, since time.Time, window time.Duration, types ...string) ([]*service.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReads != nil {
		return nil, fmt.Errorf("memstore: read: %w", s.failReads)
	}
	end := since.Add(window)
	var out []*service.Event
	for i, st := range s.events {
		t := st.ev.Time
		if t.Before(since) || t.After(end) || st.ev.MessageID != messageID || !slices.Contains(types, st.ev.Event) {
			continue
		}
		ev := s.decode(i)
		ev.Body = nil
		out = append(out, ev)
	}
	return out, nil
}

// CatchUp returns at once: the queues follow every write as it is made.
// It fails as a read does (FailReads).
func (s *Store) CatchUp(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReads != nil {
		return fmt.Errorf("memstore: read queue: %w", s.failReads)
	}
	return nil
}

// ReadyQueue lists a dispenser's queue from queue place from on (the
// tracker index's ready queues, as the adapter's).
func (s *Store) ReadyQueue(ods string, from uint64, limit int) []service.QueueEntry {
	var out []service.QueueEntry
	for _, e := range s.index.ReadyQueue(ods, from, limit) {
		out = append(out, service.QueueEntry{PrescriptionID: e.ID, Issue: e.Issue, QueueSeq: e.Seq})
	}
	return out
}

// Queue lists the prescription IDs in a dispenser's ready queue, oldest
// first.
func (s *Store) Queue(ods string) []string {
	var out []string
	for _, e := range s.index.ReadyQueue(ods, 0, s.index.QueueLen(ods)) {
		out = append(out, e.ID)
	}
	return out
}

// Due lists the prescriptions with a time-driven transition due at now
// (the index the scheduler reads, kept from the log at once).
func (s *Store) Due(now time.Time) []string { return s.index.Due(now) }

// Index is the tracker index kept from the log.
func (s *Store) Index() *tracker.Index { return s.index }

// SetNominations records p as a patient's nominations (a registry write:
// the revision grows, and p.Change, when set, joins the history).
func (s *Store) SetNominations(p *nomination.Patient) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.noms[p.NHSNumber]
	if cur == nil {
		cur = &patient{}
		s.noms[p.NHSNumber] = cur
	}
	var rev uint64
	for _, q := range s.noms {
		rev = max(rev, q.rev)
	}
	cur.rev, cur.cur = rev+1, b
	if p.Change != nil {
		cur.history = append(cur.history, *p.Change)
	}
	return nil
}

// Nominations are a patient's nominations and their revision.
func (s *Store) Nominations(ctx context.Context, nhs string) (*nomination.Patient, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReads != nil {
		return nil, 0, fmt.Errorf("memstore: read nominations: %w", s.failReads)
	}
	cur := s.noms[nhs]
	if cur == nil {
		return nil, 0, nil
	}
	var p nomination.Patient
	if err := json.Unmarshal(cur.cur, &p); err != nil {
		return nil, 0, err
	}
	return &p, cur.rev, nil
}

// NominationHistory is every change to a patient's nominations, oldest
// first.
func (s *Store) NominationHistory(ctx context.Context, nhs string) ([]nomination.Change, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failReads != nil {
		return nil, fmt.Errorf("memstore: read nominations: %w", s.failReads)
	}
	out := []nomination.Change{}
	if cur := s.noms[nhs]; cur != nil {
		out = append(out, cur.history...)
	}
	return out, nil
}
