package service

import (
	"context"
	"errors"
	"fmt"
)

// CompareAndSet is the one compare-and-set loop of every write of the
// broker (prescriptions in the event log, in both adapters, and patients'
// nominations in the registry). It reads the current state and the
// version it is at (read), asks a pure decision what to write (decide:
// ok false writes nothing), and writes it only if the state is still at
// that version (write, which returns ErrConflict otherwise). On a conflict
// it reads and decides again, at most MaxAttempts times; then it returns
// ErrBusy (wrapped with what).
//
// Once a write is decided it is completed, even when ctx ends meanwhile
// (the HTTP client went away, the request timed out): write runs under
// context.WithoutCancel(ctx), bounded by its own WriteTimeout. A write
// abandoned half-way may still be stored, and then what the broker answers
// (or logs) would not be what happened; completing it makes the outcome the
// decided one. Reads run under ctx: a client that has gone before anything
// is decided stops the loop with ctx's error and nothing written.
//
// read's, decide's and write's errors (other than ErrConflict) are
// returned as they are.
func CompareAndSet[S, W, R any](ctx context.Context, what string,
	read func(ctx context.Context) (cur S, version uint64, err error),
	decide func(cur S) (w W, ok bool, err error),
	write func(ctx context.Context, w W, version uint64) (R, error)) (R, error) {
	var none R
	for attempt := 0; attempt < MaxAttempts; attempt++ {
		if err := ctx.Err(); err != nil {
			return none, err // the client went before a decision: nothing written
		}
		cur, version, err := read(ctx)
		if err != nil {
			return none, err
		}
		w, ok, err := decide(cur)
		if err != nil || !ok {
			return none, err
		}
		// Decided: completed even if the client goes (see above).
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), WriteTimeout)
		r, err := write(wctx, w, version)
		cancel()
		if errors.Is(err, ErrConflict) {
			continue
		}
		return r, err
	}
	return none, fmt.Errorf("%w: %s: %d compare-and-set attempts lost", ErrBusy, what, MaxAttempts)
}

// UpdateEvents is Prescriptions.Update (assumeNew false) and
// Prescriptions.Create (assumeNew true) for an adapter, on CompareAndSet:
// current reads a prescription's current state (nil when there is none)
// and the sequence of the last message on its place in the log, which a
// write expects (0: nothing there); it may differ from the state's own
// sequence when the log holds messages after it that are not events (a
// foreign message): the next write supersedes them. appendEvent writes a
// decided event if the prescription's last message is still expect
// (ErrConflict otherwise) and returns it as stored.
func UpdateEvents(ctx context.Context, id string, assumeNew bool, decide Decide,
	current func(ctx context.Context, id string) (cur *Event, last uint64, err error),
	appendEvent func(ctx context.Context, w *Write, expect uint64) (*Event, error)) (*Event, error) {
	first := true
	return CompareAndSet(ctx, "prescription "+id,
		func(ctx context.Context) (*Event, uint64, error) {
			if first && assumeNew {
				first = false
				return nil, 0, nil
			}
			first = false
			return current(ctx, id)
		},
		func(cur *Event) (*Write, bool, error) {
			w, err := decide(cur)
			if err != nil || w == nil {
				return nil, false, err
			}
			if w.Record == nil || w.Record.ID != id {
				return nil, false, fmt.Errorf("decided write about %q is not about prescription %s", writeID(w), id)
			}
			return w, true, nil
		},
		appendEvent)
}

func writeID(w *Write) string {
	if w.Record == nil {
		return ""
	}
	return w.Record.ID
}
