package service

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Lifecycle moves prescriptions through the state machine of
// tracker/rx/transitions.go. Every change is one compare-and-set write to the
// prescription in the event log (Prescriptions.Update): two requests that
// decide from the same state can never both succeed; the loser re-reads and
// decides again.
type Lifecycle struct {
	rx     Prescriptions
	queues ReadyQueues
	log    *zap.Logger
	now    func() time.Time

	// ReadBackFor is how long a nominated release goes on trying to read
	// back writes that got no answer (see ReleaseNominated) before it
	// answers 503 (0: DefaultReadBackFor).
	ReadBackFor time.Duration

	// unresolved are nominated releases answered 503 because writes of
	// theirs got no answer and could not be read back (see
	// ReleaseNominated): a retry of one resolves them first.
	unresolved unresolvedReleases
}

// NewLifecycle returns the lifecycle service over the event log and the
// ready queues; now is its clock (time.Now in production).
func NewLifecycle(rx Prescriptions, queues ReadyQueues, log *zap.Logger, now func() time.Time) *Lifecycle {
	return &Lifecycle{rx: rx, queues: queues, log: log, now: now}
}

// errSkip tells update to leave a prescription as it is, without error.
var errSkip = errors.New("skip")

// StoreUnavailable is the answer when the store cannot be reached (or
// refuses a write: a full stream is told apart by the error it wraps):
// 503, nothing was changed.
func StoreUnavailable(op string, err error) *fhir.Error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: op, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the prescription store could not be reached; nothing was changed; retry", Err: err}
}

// decided carries an error of a decision through Prescriptions.Update, so
// that it is told apart from the store's.
type decided struct{ err error }

func (d decided) Error() string { return d.err.Error() }

// writeError is the answer to an error of Prescriptions.Update: a
// decision's own error as it is, else the store's as the FHIR error that
// says so (what is the prescription the message was about, in what).
func writeError(err error, id, op, what string) error {
	var d decided
	switch {
	case err == nil:
		return nil
	case errors.As(err, &d):
		return d.err
	case errors.Is(err, ErrTooLarge):
		return fhir.Errorf(fhir.KindTooLarge, fhir.CodeTooLarge, "the message is too large to store")
	case errors.Is(err, ErrBusy):
		return &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("prescription %s is changing too often to %s now; retry", id, what), Err: err}
	case errors.Is(err, ErrUnresolved):
		return &fhir.Error{Kind: fhir.KindUnavailable, Op: op, Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("the store did not confirm the change to prescription %s and could not be asked again: it may have been made; read the prescription before sending it again", id),
			Err:         err}
	}
	return StoreUnavailable(op, err)
}

// update applies decide to the current state of prescription id and writes
// the result, with the message body, as one event (named event, or after the
// transition's history entry when event is ""): compare-and-set on the
// state it decided from, deciding again when another writer got there
// first (Prescriptions.Update, which completes a decided write after the
// client has gone).
func (l *Lifecycle) update(ctx context.Context, id, event, messageID string, body []byte,
	decide func(cur *rx.Prescription) (*rx.Prescription, error)) (*rx.Prescription, error) {
	return l.updateFrom(ctx, id, event, messageID, body, decide, nil)
}

// updateFrom is update that sets *from (when not nil) to the sequence of
// the state its last write was decided from.
func (l *Lifecycle) updateFrom(ctx context.Context, id, event, messageID string, body []byte,
	decide func(cur *rx.Prescription) (*rx.Prescription, error), from *uint64) (*rx.Prescription, error) {
	var next *rx.Prescription
	_, err := l.rx.Update(ctx, id, func(cur *Event) (*Write, error) {
		if cur == nil {
			return nil, decided{rx.NotFound(id)}
		}
		n, err := decide(cur.Record)
		if err != nil {
			return nil, decided{err}
		}
		if from != nil {
			*from = cur.Seq
		}
		ev := event
		if ev == "" && len(n.History) > 0 {
			ev = n.History[len(n.History)-1].Type // the transition names itself
		}
		next = n
		return &Write{Event: ev, MessageID: messageID, Record: n, Body: body}, nil
	})
	if err != nil {
		return nil, writeError(err, id, "store "+event, "update")
	}
	return next, nil
}

// Released is a prescription handed to a dispenser, with its original order
// message, byte for byte.
type Released struct {
	Record *rx.Prescription
	Order  []byte
}

// dispenserOnly refuses any role but dispenser, and a dispenser acting for
// another organisation than its own.
func dispenserOnly(p auth.Principal, owner string) error {
	if p.Role != auth.RoleDispenser {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "role %q may not do this; only a dispenser", p.Role)
	}
	if owner != "" && owner != p.ODS {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "a dispenser may act only for its own organisation (%s), not for %s", p.ODS, owner)
	}
	return nil
}

// ReleaseByID releases one prescription, found by its ID, to p's
// organisation: any dispenser may (the patient brought the token).
func (l *Lifecycle) ReleaseByID(ctx context.Context, p auth.Principal, owner, id, messageID string, body []byte) (*Released, error) {
	if err := dispenserOnly(p, owner); err != nil {
		return nil, err
	}
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	// The order's bytes are read before anything is written, so nothing can
	// fail between the release and handing the prescription over.
	order, err := l.orderOf(ctx, id)
	if err != nil {
		return nil, err
	}
	var held *rx.Prescription
	rec, err := l.update(ctx, id, rx.EventRelease, messageID, body, func(cur *rx.Prescription) (*rx.Prescription, error) {
		if cur.ReleasedTo(p.ODS) {
			held = cur // released to this dispenser before (a retry): hand it over again
			return nil, errAlready
		}
		return rx.Release(cur, p.ODS, actor, messageID, false, l.now())
	})
	if errors.Is(err, errAlready) {
		rec, err = held, nil
	}
	if err != nil {
		return nil, err
	}
	return &Released{Record: rec, Order: order}, nil
}

// takeoverWindow is how long after its reservation a request's releases
// are looked for: a reservation is taken over only once abandoned that long.
const takeoverWindow = AbandonAfter

// ReleasedUnder finds the prescriptions released to p (this user, this
// organisation) by a request with messageID (its X-Request-ID) reserved at
// since, whose answer was never recorded (its broker died, or the answer
// could not be kept): a retry hands these over again rather than releasing
// others. Each comes with its record as that release left it (the issue it
// released) and its order's bytes. None: an empty list.
func (l *Lifecycle) ReleasedUnder(ctx context.Context, p auth.Principal, owner, messageID string, since time.Time) ([]Released, error) {
	if err := dispenserOnly(p, owner); err != nil {
		return nil, err
	}
	// The reservation's time and the events' are the NATS server's clock;
	// a second before it leaves room for a cluster's skew.
	evs, err := l.rx.EventsUnder(ctx, messageID, since.Add(-time.Second), takeoverWindow+time.Second,
		rx.EventRelease, rx.EventNominatedRelease)
	if err != nil {
		return nil, StoreUnavailable("read event log", err)
	}
	var out []Released
	seen := map[string]bool{}
	for _, ev := range evs {
		rec := ev.Record
		if len(rec.History) == 0 || seen[rec.ID] {
			continue
		}
		if !byRequest(rec.History[len(rec.History)-1], p, messageID) {
			continue // another user's request with the same X-Request-ID
		}
		order, err := l.orderOf(ctx, rec.ID)
		if err != nil {
			return nil, err
		}
		seen[rec.ID] = true
		out = append(out, Released{Record: rec, Order: order})
	}
	// Oldest first by when each became ready (tracker.QueuedAt: the clock
	// of the broker that wrote the event that queued it), then by order:
	// the request's writes were made together, so the log need not hold
	// them in queue order. This is the first answer's order (queue order,
	// the sequence of the queueing event) except where two became ready
	// within a clock skew between brokers, or were decided in another
	// order than written: the records carry no queue sequence to sort by.
	slices.SortStableFunc(out, func(a, b Released) int {
		if c := tracker.QueuedAt(a.Record).Compare(tracker.QueuedAt(b.Record)); c != 0 {
			return c
		}
		return cmp.Compare(a.Record.OrderSeq, b.Record.OrderSeq)
	})
	return out, nil
}

// OrderOf reads the original order message of a prescription, byte for
// byte, as a release hands it over: what a replayed release's answer is
// rebuilt from (it changes nothing).
func (l *Lifecycle) OrderOf(ctx context.Context, id string) ([]byte, error) {
	return l.orderOf(ctx, id)
}

// orderOf reads the original order message of a prescription.
func (l *Lifecycle) orderOf(ctx context.Context, id string) ([]byte, error) {
	cur, err := l.rx.Current(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, rx.NotFound(id)
	}
	if err != nil {
		return nil, StoreUnavailable("read prescription", err)
	}
	if cur.Record.IsEarlyCancellation() {
		return nil, rx.NotFound(id)
	}
	ev, err := l.rx.Event(ctx, cur.Record.OrderSeq)
	if err != nil {
		return nil, StoreUnavailable("read order", err)
	}
	return ev.Body, nil
}

// ReleaseConcurrency bounds the compare-and-set writes one nominated
// release has in flight at once: the prescriptions of a page of the queue
// are released together (a group committer can store them as one batch),
// and the answer keeps their queue order.
const ReleaseConcurrency = 32

// CatchUpTimeout bounds how long a nominated release waits for the ready
// queues to reach the event log (ReadyQueues.CatchUp) before it answers
// 503 with nothing released.
const CatchUpTimeout = 5 * time.Second

// ReleaseNominated releases up to max of the oldest prescriptions waiting in
// p's organisation's ready queue. It first waits for the queues to hold
// every event stored before it began, so a prescription whose order was
// acknowledged before the release is found. Entries another release took
// first, or that are no longer ready, are passed over. None left: an empty
// list.
//
// When a write fails, the release stops and hands over every prescription
// it released, in queue order. A write without an answer (a timeout, a
// lost connection) is resolved by the store's adapter, which answers it
// stored or not (broker/readback.go); only one it could not resolve
// (ErrUnresolved) may still have been stored, so each such write is read
// back: released under messageID to p, it is handed over too. Only
// when nothing was released is the write's error returned. When the read
// back fails too, nothing is handed over and the answer is 503
// (ErrReleaseUnresolved): a retry with the same messageID (X-Request-ID) by
// the same user reads them back again and hands over those released,
// rather than releasing others: on this broker from what it remembers, and
// on any broker because the HTTP API keeps the request's X-Request-ID
// reservation marked unresolved (service.SavedResponse.Unresolved), which
// the retry takes over at once and reads back with ReleasedUnder.
func (l *Lifecycle) ReleaseNominated(ctx context.Context, p auth.Principal, owner, messageID string, body []byte, max int) ([]Released, error) {
	if err := dispenserOnly(p, owner); err != nil {
		return nil, err
	}
	key := unresolvedKey(p, messageID)
	if ids, ok := l.unresolved.get(key, l.now()); ok {
		// A retry of a release whose outcome was not known: what it
		// released, if anything, is its answer.
		out, err := l.readBack(ctx, p, messageID, ids, nil)
		if err != nil {
			return nil, unresolvedError(err)
		}
		l.unresolved.drop(key)
		if len(out) > 0 {
			return out, nil
		}
	}
	wctx, cancel := context.WithTimeout(ctx, CatchUpTimeout)
	err := l.queues.CatchUp(wctx)
	cancel()
	if err != nil {
		return nil, &fhir.Error{Kind: fhir.KindUnavailable, Op: "read ready queue", Code: fhir.CodeServiceUnavailable,
			Diagnostics: "the ready queues are catching up with the event log; nothing was released; retry shortly", Err: err}
	}
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	var out []Released
	for from := uint64(0); len(out) < max; {
		entries := l.queues.ReadyQueue(p.ODS, from, max-len(out))
		if len(entries) == 0 {
			break
		}
		from = entries[len(entries)-1].QueueSeq + 1
		results := l.releaseEach(ctx, p, actor, messageID, body, entries)
		var failed error
		var doubt []string // unresolved: perhaps stored all the same
		from := map[string]uint64{}
		for i, r := range results {
			if r.err != nil {
				if errors.Is(r.err, ErrUnresolved) {
					doubt = append(doubt, entries[i].PrescriptionID)
					from[entries[i].PrescriptionID] = r.from
				}
				if failed == nil {
					failed = r.err
				}
			}
		}
		if failed == nil {
			for _, r := range results {
				if !r.skip {
					out = append(out, r.Released)
				}
			}
			continue
		}
		back, err := l.readBack(ctx, p, messageID, doubt, from)
		if err != nil {
			// Which were stored is not known: remember every one this
			// release may have handed to p, in queue order, for its retry.
			ids := make([]string, 0, len(out)+len(entries))
			for _, r := range out {
				ids = append(ids, r.Record.ID)
			}
			for i, r := range results {
				if r.err != nil || !r.skip {
					ids = append(ids, entries[i].PrescriptionID)
				}
			}
			l.unresolved.put(key, ids, l.now())
			l.log.Warn("nominated release: writes got no answer and could not be read back; answered 503, a retry with the same X-Request-ID resolves them",
				zap.Int("unresolved", len(doubt)), zap.Error(failed), zap.NamedError("readBack", err))
			return nil, unresolvedError(err)
		}
		found := make(map[string]Released, len(back))
		for _, r := range back {
			found[r.Record.ID] = r
		}
		for i, r := range results {
			switch {
			case r.err != nil:
				if b, ok := found[entries[i].PrescriptionID]; ok {
					out = append(out, b)
				}
			case !r.skip:
				out = append(out, r.Released)
			}
		}
		if len(out) > 0 {
			// Hand over what is released: those prescriptions are this
			// dispenser's now, and a retry would not return them.
			l.log.Warn("nominated release stopped early", zap.Int("released", len(out)),
				zap.Int("storedWithoutAnswer", len(back)), zap.Error(failed))
			return out, nil
		}
		return nil, failed
	}
	return out, nil
}

// DefaultReadBackFor is Lifecycle.ReadBackFor by default: long enough for
// a NATS connection lost for a moment to come back (nats.go reconnects
// after 2 s).
const DefaultReadBackFor = 5 * time.Second

// readBack reads the current state of each of ids and returns, in ids'
// order, those released to p under messageID (a nominated release whose
// history entry carries messageID, p's organisation and user), each with
// its current record and its order's bytes. A read that fails is tried
// again, with growing pauses, for ReadBackFor; the reads go on when the
// client has gone, as its answer is recorded for its retry.
//
// from, when not nil, is the sequence each write was decided from: a read
// at or before it shows a state that cannot tell whether the write is
// stored (a replica behind the leader), and is read again.
func (l *Lifecycle) readBack(ctx context.Context, p auth.Principal, messageID string, ids []string, from map[string]uint64) ([]Released, error) {
	d := l.ReadBackFor
	if d <= 0 {
		d = DefaultReadBackFor
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	defer cancel()
	pause := 100 * time.Millisecond
	for {
		out, err := l.readBackOnce(rctx, p, messageID, ids, from)
		if err == nil {
			return out, nil
		}
		t := time.NewTimer(pause)
		select {
		case <-rctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// readBackOnce is one attempt of readBack.
func (l *Lifecycle) readBackOnce(rctx context.Context, p auth.Principal, messageID string, ids []string, from map[string]uint64) ([]Released, error) {
	var out []Released
	for _, id := range ids {
		cur, err := l.rx.Current(rctx, id)
		if errors.Is(err, ErrNotFound) {
			// It was queued, so it is in the log: a read answered by a
			// replica behind the leader. Read again.
			return nil, fmt.Errorf("read back prescription %s: %w", id, err)
		}
		if err != nil {
			return nil, err
		}
		if !releasedUnder(cur.Record, p, messageID) {
			if f, ok := from[id]; ok && cur.Seq <= f {
				return nil, fmt.Errorf("read back prescription %s: read at sequence %d, not after %d, which its release was decided from", id, cur.Seq, f)
			}
			continue
		}
		order, err := l.orderOf(rctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, Released{Record: cur.Record, Order: order})
	}
	return out, nil
}

// releasedUnder reports whether rec's history holds a nominated release to
// p (its organisation and user) under messageID.
func releasedUnder(rec *rx.Prescription, p auth.Principal, messageID string) bool {
	for i := len(rec.History) - 1; i >= 0; i-- {
		if h := rec.History[i]; h.Type == rx.EventNominatedRelease && byRequest(h, p, messageID) {
			return true
		}
	}
	return false
}

// ownRelease reports whether rec is held by p's organisation through a
// nominated release made by p under messageID as its last event: the
// request's own write, stored though its answer said otherwise (a
// compare-and-set answered as lost after a leader change, a resend meeting
// its own message), so it is handed over rather than passed over.
func ownRelease(rec *rx.Prescription, p auth.Principal, messageID string) bool {
	if len(rec.History) == 0 || !rec.ReleasedTo(p.ODS) {
		return false
	}
	h := rec.History[len(rec.History)-1]
	return h.Type == rx.EventNominatedRelease && byRequest(h, p, messageID)
}

// byRequest reports whether history entry h was made by p (its
// organisation and user) under messageID.
func byRequest(h rx.Event, p auth.Principal, messageID string) bool {
	return h.MessageID == messageID && h.Org == p.ODS && h.User == p.Subject
}

// ErrReleaseUnresolved is a nominated release some of whose writes got no
// answer and could not be read back: they may have been stored.
var ErrReleaseUnresolved = errors.New("nominated release: writes got no answer and could not be read back")

// unresolvedError is the 503 of an unresolved nominated release.
func unresolvedError(err error) error {
	return &fhir.Error{Kind: fhir.KindUnavailable, Op: "read back release", Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the store did not confirm the release and could not be read back; prescriptions may have been released: retry with the same X-Request-ID to receive them",
		Err:         fmt.Errorf("%w: %w", ErrReleaseUnresolved, err)}
}

// maxUnresolved bounds the unresolved releases remembered; the oldest is
// forgotten first.
const maxUnresolved = 1024

// unresolvedReleases are the prescriptions of nominated releases answered
// 503 with their outcome unknown, by unresolvedKey, for AbandonAfter.
type unresolvedReleases struct {
	mu sync.Mutex
	m  map[string]unresolvedRelease
}

type unresolvedRelease struct {
	ids []string // in queue order
	at  time.Time
}

// unresolvedKey scopes a message ID to its user and organisation, as an
// X-Request-ID is.
func unresolvedKey(p auth.Principal, messageID string) string {
	return p.Subject + "\x00" + p.ODS + "\x00" + messageID
}

func (u *unresolvedReleases) get(key string, now time.Time) ([]string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, ok := u.m[key]
	if ok && now.Sub(r.at) > AbandonAfter {
		delete(u.m, key)
		return nil, false
	}
	return r.ids, ok
}

func (u *unresolvedReleases) put(key string, ids []string, now time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]unresolvedRelease{}
	}
	if _, ok := u.m[key]; !ok && len(u.m) >= maxUnresolved {
		oldest := ""
		for k, r := range u.m {
			if oldest == "" || r.at.Before(u.m[oldest].at) {
				oldest = k
			}
		}
		delete(u.m, oldest)
	}
	u.m[key] = unresolvedRelease{ids: ids, at: now}
}

func (u *unresolvedReleases) drop(key string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, key)
}

// queueRelease is the outcome of releasing one queue entry.
type queueRelease struct {
	Released
	skip bool // no longer queued for the dispenser: passed over
	err  error
	// from is the sequence of the state the last write was decided from:
	// a read back at or before it cannot tell whether the write is stored.
	from uint64
}

// releaseEach releases the prescriptions of entries to p's organisation,
// at most ReleaseConcurrency at once, and returns the outcomes in the
// entries' order.
func (l *Lifecycle) releaseEach(ctx context.Context, p auth.Principal, actor rx.Actor, messageID string, body []byte, entries []QueueEntry) []queueRelease {
	out := make([]queueRelease, len(entries))
	sem := make(chan struct{}, ReleaseConcurrency)
	var wg sync.WaitGroup
	for i, e := range entries {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = l.releaseQueued(ctx, p, actor, messageID, body, e.PrescriptionID)
		}()
	}
	wg.Wait()
	return out
}

// releaseQueued releases one prescription of p's queue, unless it is no
// longer queued for p's organisation (taken by another release, returned,
// cancelled or changed since it was queued: the compare-and-set decides
// from its current state).
func (l *Lifecycle) releaseQueued(ctx context.Context, p auth.Principal, actor rx.Actor, messageID string, body []byte, id string) queueRelease {
	order, err := l.orderOf(ctx, id)
	if rx.IsNotFound(err) {
		return queueRelease{skip: true}
	}
	if err != nil {
		return queueRelease{err: err}
	}
	var held *rx.Prescription
	wrote := false // a write was decided: it may be stored, whatever its answer
	var from uint64
	rec, err := l.updateFrom(ctx, id, rx.EventNominatedRelease, messageID, body, func(cur *rx.Prescription) (*rx.Prescription, error) {
		if ownRelease(cur, p, messageID) {
			// Decided again after this request's own write was stored
			// but answered as lost (a conflict): it is this release's.
			held = cur
			return nil, errAlready
		}
		if !rx.QueuedFor(cur, p.ODS) {
			return nil, errSkip
		}
		wrote = true
		return rx.Release(cur, p.ODS, actor, messageID, true, l.now())
	}, &from)
	if errors.Is(err, errAlready) {
		rec, err = held, nil
	}
	if wrote && rx.IsNotFound(err) {
		// Decided again after a write of its own, from a read that knows
		// no such prescription (a replica behind the leader): that write
		// may be stored. Read back, not passed over.
		return queueRelease{err: writeError(fmt.Errorf("%w: prescription %s not found after its release was written", ErrUnresolved, id),
			id, "store "+rx.EventNominatedRelease, "update")}
	}
	switch {
	case errors.Is(err, errSkip), rx.IsNotFound(err):
		return queueRelease{skip: true}
	case wrote && errors.Is(err, ErrBusy):
		// Every compare-and-set was answered as lost, yet one of them may
		// be this request's own write, stored (answered as a conflict
		// after a leader change) and decided again from reads that did
		// not show it yet (a leader cut off from its majority answers
		// until it steps down): read back, not passed over (seen in a
		// fault test: released, and handed to nobody).
		// (err only as text: writeError answers ErrBusy before ErrUnresolved.)
		return queueRelease{err: writeError(fmt.Errorf("%w: prescription %s: every compare-and-set answered as lost (%v)", ErrUnresolved, id, err),
			id, "store "+rx.EventNominatedRelease, "update"), from: from}
	case err != nil:
		return queueRelease{err: err, from: from}
	}
	return queueRelease{Released: Released{Record: rec, Order: order}}
}

// errAlready tells update that the message was applied before: nothing is
// written and the request succeeds (a resent message).
var errAlready = errors.New("already applied")

// Task applies a return or a withdraw from the dispenser that holds the
// prescription. The acting dispenser is the caller's organisation; the
// organisations the Task names (owner, contained Organization) are stored
// with its bytes and never used to refuse it.
func (l *Lifecycle) Task(ctx context.Context, p auth.Principal, t *fhir.TaskRequest, body []byte) error {
	if err := dispenserOnly(p, ""); err != nil {
		return err
	}
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	msgID := t.ID
	event := rx.EventReturn
	if t.Kind == fhir.TaskKindWithdraw {
		event = rx.EventWithdraw
	}
	_, err := l.update(ctx, t.PrescriptionID, event, msgID, body, func(rec *rx.Prescription) (*rx.Prescription, error) {
		issue := rx.ReturnIssue(rec, t.Issue, p.ODS)
		if event == rx.EventWithdraw {
			issue = rx.WithdrawIssue(rec, t.Issue, t.FocusID)
		}
		return rx.OnIssue(rec, issue, func(cur *rx.Prescription) (*rx.Prescription, error) {
			if err := rx.HeldBy(cur, p.ODS); err != nil {
				return nil, err
			}
			// A withdraw names the patient (withdraw.ts createRecordTarget)
			// and Spine compares it; a return does not (return.ts sends no
			// recordTarget), so its Task.for is not compared.
			if event == rx.EventWithdraw {
				if err := rx.SameNHSNumber(cur, t.NHSNumber); err != nil {
					return nil, err
				}
			}
			if event == rx.EventWithdraw {
				return rx.Withdraw(cur, p.ODS, actor, t.FocusID, msgID, l.now())
			}
			return rx.Return(cur, p.ODS, actor, msgID, l.now())
		})
	})
	return err
}

// Dispense applies a dispense notification (or an amendment of the latest
// one) from the dispenser that holds the prescription. The same notification
// sent again changes nothing. The acting dispenser is the caller's
// organisation: MessageHeader.sender (optional) and the organisations the
// message names are stored with its bytes and never used to refuse it.
func (l *Lifecycle) Dispense(ctx context.Context, p auth.Principal, n *fhir.DispenseNotification, body []byte) error {
	if err := dispenserOnly(p, ""); err != nil {
		return err
	}
	in := n.RxDispense()
	_, err := l.update(ctx, n.PrescriptionID, rx.EventDispense, n.BundleID, body, func(rec *rx.Prescription) (*rx.Prescription, error) {
		issue := rx.DispenseIssue(rec, n.Issue, p.ODS, n.BundleID, n.ReplacementOf)
		return rx.OnIssue(rec, issue, func(cur *rx.Prescription) (*rx.Prescription, error) {
			return l.dispense(cur, p, n, in)
		})
	})
	if errors.Is(err, errAlready) {
		return nil
	}
	return err
}

// dispense decides a dispense notification on the issue it names.
func (l *Lifecycle) dispense(cur *rx.Prescription, p auth.Principal, n *fhir.DispenseNotification, in rx.DispenseInput) (*rx.Prescription, error) {
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	if err := rx.HeldBy(cur, p.ODS); err != nil {
		return nil, err
	}
	if err := rx.SameNHSNumber(cur, n.NHSNumber); err != nil {
		return nil, err
	}
	if cur.HasDispense(n.BundleID) {
		return nil, errAlready
	}
	if err := rx.EveryItemNamed(cur, n.LineItemIDs()); err != nil {
		return nil, err
	}
	items, err := rx.DispenseOutcomes(cur, in.Items)
	if err != nil {
		return nil, err
	}
	in.Items = items
	return rx.Dispense(cur, p.ODS, actor, in, l.now())
}

// Claim applies a claim (or a claim amendment) from the dispenser that holds
// the prescription. The same claim sent again changes nothing. The acting
// dispenser is the caller's organisation, whatever the claim names.
func (l *Lifecycle) Claim(ctx context.Context, p auth.Principal, c *fhir.ClaimRequest, body []byte) error {
	if err := dispenserOnly(p, ""); err != nil {
		return err
	}
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	_, err := l.update(ctx, c.PrescriptionID, rx.EventClaim, c.ID, body, func(rec *rx.Prescription) (*rx.Prescription, error) {
		issue := rx.ClaimIssue(rec, c.Issue, p.ODS, c.ID, c.ReplacementOf)
		return rx.OnIssue(rec, issue, func(cur *rx.Prescription) (*rx.Prescription, error) {
			if err := rx.HeldBy(cur, p.ODS); err != nil {
				return nil, err
			}
			// Claim.patient is not compared (R-5000 is not a claim's rule:
			// dispense-claim.ts sends no recordTarget).
			if cur.HasClaim(c.ID) {
				return nil, errAlready
			}
			return rx.Claim(cur, p.ODS, actor, c.ID, c.ReplacementOf, l.now())
		})
	})
	if errors.Is(err, errAlready) {
		return nil
	}
	return err
}

// Cancel applies a cancellation of one line item from the prescribing
// organisation and returns the R-code of the answer. R-0002/R-0003 mark the
// item for cancellation (applied when the dispenser returns the
// prescription or marks the item not dispensed).
//
// A cancellation naming an ID that is not a prescription of the caller's
// organisation (none yet, only kept cancellations, or another
// organisation's prescription) is kept for the caller's organisation alone
// (rx.KeepCancellation) and answered R-0008, the same answer after the
// same work (one read, and one write when there is something new to keep)
// whatever the ID's subject holds: the answer tells nothing of another
// organisation's prescriptions.
func (l *Lifecycle) Cancel(ctx context.Context, p auth.Principal, c *fhir.Cancellation, body []byte) (rx.CancelCode, error) {
	// The acting prescriber is the caller's organisation; a
	// MessageHeader.sender (optional; an identifier, or a reference resolved
	// by DecodeMessage) must name it. Decided before anything is read.
	if p.Role != auth.RolePrescriber || (c.Sender != "" && c.Sender != p.ODS) {
		return "", fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only the prescribing organisation may cancel, with a prescriber token for MessageHeader.sender")
	}
	actor := rx.Actor{User: p.Subject, Org: p.ODS}
	in := c.RxCancel()
	code := rx.RNotFound
	_, err := l.rx.Update(ctx, c.PrescriptionID, func(cur *Event) (*Write, error) {
		var rec *rx.Prescription
		if cur != nil {
			rec = cur.Record
		}
		// A prescription of another organisation, or none, keeps the
		// cancellation for p's (R-0008, no notification): rx.CancelOrKeep.
		next, event, rcode := rx.CancelOrKeep(rec, c.PrescriptionID, actor, in, l.now())
		code = rcode
		if next == nil {
			return nil, nil
		}
		return &Write{Event: event, MessageID: c.BundleID, Record: next, Body: body}, nil
	})
	if err != nil {
		return "", writeError(err, c.PrescriptionID, "store cancellation", "cancel")
	}
	return code, nil
}
