// Package service holds the broker's services: Intake (the messages posted
// to $process-message), Lifecycle (releases, returns, withdrawals, dispense
// notifications, claims and cancellations) and Scheduler (the time-driven
// transitions). They decide with the domain core (tracker/rx) and the
// FHIR decoders (fhir), and read and write only through the small
// interfaces (ports) of this file: the JetStream adapter (package broker) implements them in
// production, package memstore in memory for unit tests. This package never
// imports NATS.
package service

import (
	"context"
	"errors"
	"time"

	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Event is one message of the event log of prescriptions: what happened to
// one prescription, and the prescription's record after it.
type Event struct {
	Seq       uint64 // its place in the event log (sequences grow)
	Time      time.Time
	Event     string // the event type, e.g. prescription-order
	MessageID string // the message's identifier (Bundle.identifier, Task id, ...)
	Record    *rx.Prescription
	Body      []byte // the original message, byte for byte
}

// Write is a decided write: one event about Record.ID.
type Write struct {
	Event     string
	MessageID string
	Record    *rx.Prescription // the prescription after the event
	Body      []byte
}

// Decide decides a write from the current state of one prescription (cur
// is nil when the event log holds nothing about it). It returns the write,
// a nil write to write nothing, or an error to write nothing and have the
// update return that error as it is. It must decide from cur alone (and
// values that do not change between calls): it is called again, with the
// newer state, when another writer got there first.
type Decide func(cur *Event) (*Write, error)

// Prescriptions is the event log of prescriptions. Every write is a
// compare-and-set on the prescription's own sequence (Update, Create): two
// writers that decide from the same state can never both succeed; the loser
// reads again and decides again.
type Prescriptions interface {
	// Update reads the prescription's current state, decides, and writes
	// the decided event only if the prescription is still at the state it
	// decided from; otherwise it reads and decides again, at most
	// MaxAttempts times (then ErrBusy). A decided write is completed even
	// when ctx ends meanwhile (the client went away): an abandoned write
	// may still be stored, and its answer would lie. A client gone before
	// a decision stops it with nothing written. It returns the event
	// written (its Time is not known to the writer: zero), or nil when
	// decide wrote nothing. Errors: decide's own, as
	// they are; ErrTooLarge; ErrBusy; any other is the store's (unavailable,
	// full).
	Update(ctx context.Context, id string, decide Decide) (*Event, error)
	// Create is Update for a message that normally makes a new
	// prescription: the first decision is made from "nothing stored"
	// without reading (one write on an order's path); when something is
	// stored, that write conflicts and it goes on as Update.
	Create(ctx context.Context, id string, decide Decide) (*Event, error)
	// Current is the latest event about a prescription: its current state
	// (ErrNotFound when there is none).
	Current(ctx context.Context, id string) (*Event, error)
	// Event is the event at seq (ErrNotFound when there is none).
	Event(ctx context.Context, seq uint64) (*Event, error)
	// EventsUnder lists the events of the given types that carry messageID
	// and were stored from since to since + window, in log order, without
	// their bodies.
	EventsUnder(ctx context.Context, messageID string, since time.Time, window time.Duration, types ...string) ([]*Event, error)
}

// QueueEntry is one prescription in a dispenser's ready queue.
type QueueEntry struct {
	PrescriptionID string
	// Issue is the repeat dispensing issue queued (0 for a prescription
	// that is not repeat dispensing).
	Issue int
	// QueueSeq is the event log sequence of the event that put it in the
	// queue: its place (sequences grow from the front of a queue to its
	// back).
	QueueSeq uint64
}

// ReadyQueues are the dispensers' ready queues: a projection of the event
// log, kept in memory by the adapter (the tracker index), which puts a
// prescription in its dispenser's queue when it becomes ready for nominated
// release and takes it out when it no longer is.
type ReadyQueues interface {
	// CatchUp returns once the queues hold every event the log held when
	// it was called (read your writes: a prescription whose write was
	// acknowledged before the call is where it belongs, whichever broker
	// wrote it), or with an error when ctx ends first or the log cannot
	// be read.
	CatchUp(ctx context.Context) error
	// ReadyQueue lists up to limit entries of a dispenser's queue as it is
	// now, oldest first, from queue place from on (QueueEntry.QueueSeq; 0:
	// from the front). Its cost does not grow with the queue's length.
	ReadyQueue(ods string, from uint64, limit int) []QueueEntry
}

// Nominations reads the nomination registry.
type Nominations interface {
	// Nominations are a patient's nominations and the registry revision
	// they are at (nil and 0 when the patient has none on record).
	Nominations(ctx context.Context, nhs string) (*nomination.Patient, uint64, error)
	// NominationHistory is every change to a patient's nominations, oldest
	// first.
	NominationHistory(ctx context.Context, nhs string) ([]nomination.Change, error)
}

// DueIndex says which prescriptions may have a time-driven transition due
// (the tracker index does).
type DueIndex interface {
	Due(now time.Time) []string
}

// Lease is a lease on one piece of work (the scheduler's passes) that at
// most one broker instance holds while its holder renews it: it lapses by
// itself when its holder stops renewing it for its TTL (the holder died,
// paused or lost the store), measured by the store, not by the instances'
// clocks. Acquire and Renew are compare-and-set writes on the lease's
// revision, so two instances never both take it from the same state. A
// lease only saves work: what the holder does must stay correct if two
// instances hold it for a moment (a paused holder that has not yet noticed
// its lease lapsed), as the scheduler's compare-and-set transitions are.
type Lease interface {
	// Acquire takes the lease when no one holds it (or renews it when
	// this instance does). It reports whether this instance holds it; an
	// error when the store did not answer (held or not is then unknown).
	Acquire(ctx context.Context) (bool, error)
	// Renew extends the lease this instance holds for another TTL from
	// now. False when it no longer holds it (it lapsed, and may have been
	// taken by another); an error when the store did not answer.
	Renew(ctx context.Context) (bool, error)
	// Release gives up the lease at once if this instance holds it, so
	// that another takes it without waiting for it to lapse.
	Release(ctx context.Context) error
	// TTL is how long the lease lasts without renewal.
	TTL() time.Duration
}

// SchedulerMetrics are what the scheduler counts.
type SchedulerMetrics interface {
	// SchedulerLeading is set when this instance starts (true) or stops
	// (false) running the scheduler's passes.
	SchedulerLeading(bool)
	// CountLease counts a change of this instance's hold on the
	// scheduler's lease: acquired, lost or released.
	CountLease(event string)
	// CountPass counts a pass of the scheduler and the transitions it
	// applied.
	CountPass(applied int)
}

// Metrics are the counts the services keep.
type Metrics interface {
	// CountOrder counts a prescription order by outcome (accepted, resent,
	// duplicate_id, invalid, forbidden, error).
	CountOrder(outcome string)
	// ObserveStage records the time one stage of intake took.
	ObserveStage(stage string, d time.Duration)
}

// NoMetrics keeps no metrics.
type NoMetrics struct{}

func (NoMetrics) CountOrder(string)                  {}
func (NoMetrics) ObserveStage(string, time.Duration) {}

// MaxAttempts bounds the decisions of one compare-and-set update: n writers
// racing on one prescription all succeed when n <= MaxAttempts (a writer's
// write fails only when another's succeeded after its read).
const MaxAttempts = 8

// WriteTimeout bounds a decided write that goes on after its client left.
const WriteTimeout = 10 * time.Second

// AbandonAfter is how long an X-Request-ID reservation may stand without an
// answer before a retry may take it over (its request died with its
// broker); a takeover looks this far after the reservation for the work
// the request did (Lifecycle.ReleasedUnder).
const AbandonAfter = 2 * time.Minute

// Errors of the ports.
var (
	// ErrNotFound is a prescription or event the store does not have.
	ErrNotFound = errors.New("not found")
	// ErrConflict is a failed compare-and-set: the prescription changed (or
	// already exists) since the state the writer decided from.
	ErrConflict = errors.New("prescription changed concurrently")
	// ErrTooLarge is a message that, with its record, exceeds what the
	// event log takes in one message.
	ErrTooLarge = errors.New("message too large to store")
	// ErrBusy is an update that lost MaxAttempts compare-and-sets in a row.
	ErrBusy = errors.New("prescription changing too often")
)
