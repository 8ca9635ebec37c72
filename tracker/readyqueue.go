package tracker

import (
	"container/list"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The dispensers' ready queues are part of the index: a projection of the
// event log kept in memory, with the index's snapshot and catch-up. Which
// prescriptions wait for whom is the domain's rule (rx.QueuedFor: ready,
// and nominated to that dispenser); the queues only keep the order in which
// they became so, oldest first.

// QueueEntry is one prescription waiting in a dispenser's ready queue.
type QueueEntry struct {
	ID  string // the prescription's short ID
	ODS string // the dispenser whose queue it is in
	// Issue is the repeat dispensing issue queued (rx.Prescription.Number:
	// 0 for a prescription that is not repeat dispensing).
	Issue int
	// Seq is the event log sequence of the event that put it in the queue:
	// its place (sequences grow from the front of a queue to its back).
	Seq uint64
}

// readyQueues holds one list per dispenser, oldest first, and a map from
// prescription ID to its element: queueing, leaving and moving cost O(1),
// taking the first n O(n) whatever the queue's length.
type readyQueues struct {
	byODS map[string]*list.List // of *QueueEntry
	byID  map[string]*list.Element
}

func newReadyQueues() *readyQueues {
	return &readyQueues{byODS: map[string]*list.List{}, byID: map[string]*list.Element{}}
}

// apply brings the queues in line with rec, the prescription after the event
// at seq, and reports whether that event put it into a queue. A prescription
// that may be released to its nominated dispenser (rx.QueuedFor) is in that
// dispenser's queue: where it was, if it was already queued there at the
// same issue; at the back otherwise (a repeat dispensing issue that has
// become ready, a prescription that became ready again). Any other
// prescription (released, returned, cancelled, expired, nominated
// elsewhere) is in no queue.
func (q *readyQueues) apply(seq uint64, rec *rx.Prescription) (entered bool) {
	el, queued := q.byID[rec.ID]
	ods := rec.Nominated
	if !rx.QueuedFor(rec, ods) {
		if queued {
			q.remove(el)
		}
		return false
	}
	if queued {
		e := el.Value.(*QueueEntry)
		if e.ODS == ods && e.Issue == rec.Number {
			return false // keeps its place
		}
		q.remove(el)
	}
	q.push(QueueEntry{ID: rec.ID, ODS: ods, Issue: rec.Number, Seq: seq})
	return true
}

func (q *readyQueues) push(e QueueEntry) {
	l := q.byODS[e.ODS]
	if l == nil {
		l = list.New()
		q.byODS[e.ODS] = l
	}
	q.byID[e.ID] = l.PushBack(&e)
}

func (q *readyQueues) remove(el *list.Element) {
	e := el.Value.(*QueueEntry)
	l := q.byODS[e.ODS]
	l.Remove(el)
	if l.Len() == 0 {
		delete(q.byODS, e.ODS)
	}
	delete(q.byID, e.ID)
}

// take lists up to n entries of ods's queue whose Seq is at least from,
// oldest first. It walks from the front: its cost is n plus the entries
// before from still queued (those a caller paging through the queue has
// already seen and that have not left it yet).
func (q *readyQueues) take(ods string, from uint64, n int) []QueueEntry {
	l := q.byODS[ods]
	if l == nil || n <= 0 {
		return nil
	}
	out := make([]QueueEntry, 0, min(n, l.Len()))
	for el := l.Front(); el != nil && len(out) < n; el = el.Next() {
		if e := el.Value.(*QueueEntry); e.Seq >= from {
			out = append(out, *e)
		}
	}
	return out
}

// all lists every entry, queue by queue, each oldest first (the snapshot).
func (q *readyQueues) all() []QueueEntry {
	out := make([]QueueEntry, 0, len(q.byID))
	for _, l := range q.byODS {
		for el := l.Front(); el != nil; el = el.Next() {
			out = append(out, *el.Value.(*QueueEntry))
		}
	}
	return out
}

// ReadyQueue lists up to n prescriptions waiting in the ready queue of
// dispenser ods, oldest first, from queue place from on (QueueEntry.Seq;
// 0 or 1: from the front). The cost is O(n) whatever the queue's length
// (plus the entries before from that are still queued).
func (ix *Index) ReadyQueue(ods string, from uint64, n int) []QueueEntry {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.queues.take(ods, from, n)
}

// QueueLen is how many prescriptions wait in dispenser ods's ready queue.
func (ix *Index) QueueLen(ods string) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if l := ix.queues.byODS[ods]; l != nil {
		return l.Len()
	}
	return 0
}

// Queued is the queue entry of a prescription, if it waits in a queue.
func (ix *Index) Queued(id string) (QueueEntry, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if el, ok := ix.queues.byID[id]; ok {
		return *el.Value.(*QueueEntry), true
	}
	return QueueEntry{}, false
}

// EnteredQueue reports whether the event named event, which left the
// prescription as rec, put it into its nominated dispenser's ready queue:
// rec may be released to that dispenser (rx.QueuedFor) and this event is
// the one since which it may, i.e. the latest entry of its history at
// which the current issue became To Be Dispensed is of this event's type.
// It decides from the event alone (its type and record), as the
// notifications must, which are made once per event: the queues (which
// see every event in order) put a prescription at the back of a queue on
// exactly those events. Only an order (a nominated prescription ready on
// arrival) and a scheduled transition whose last step is ready (a
// post-dated prescription, a repeat dispensing issue) can: every other
// event either leaves a ready prescription ready (a cancellation of one of
// its items) or takes it out of the queues.
func EnteredQueue(event string, rec *rx.Prescription) bool {
	if event == "" || event == rx.EventCancelKept || !rx.QueuedFor(rec, rec.Nominated) {
		return false
	}
	since := readySince(rec)
	return since >= 0 && rec.History[since].Type == event
}

// QueuedAt is the time of the event since which rec's current issue has
// been To Be Dispensed (for a released one: was, until its release), zero
// when it never was: for a nominated prescription, when it entered its
// dispenser's queue (by the clock of the broker that wrote the event).
func QueuedAt(rec *rx.Prescription) time.Time {
	if i := readySince(rec); i >= 0 {
		return rec.History[i].Time
	}
	return time.Time{}
}

// readySince is the index of the history entry at which rec's current issue
// last became To Be Dispensed (-1: never).
func readySince(rec *rx.Prescription) int {
	since := -1
	prev := rx.Status("")
	for i, h := range rec.History {
		if h.Issue != rec.Number && (h.Issue != 0 || rec.IssueNumber() != 1) {
			continue // another issue's (entries of issue 0 are the order's and the first issue's)
		}
		if h.Status == rx.StatusToBeDispensed && prev != rx.StatusToBeDispensed {
			since = i
		}
		prev = h.Status
	}
	return since
}
