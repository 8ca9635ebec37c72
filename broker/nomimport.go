package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"sync"
	"sync/atomic"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// MaxImportRejections is how many rejected rows an import lists; past it
// only their number is given.
const MaxImportRejections = 10_000

// DefaultImportWorkers is how many rows an import applies at once.
const DefaultImportWorkers = 64

// ImportAllowed reports whether the principal may import nominations: the
// same roles as may change them (a fhir.Error of KindForbidden otherwise).
// Bulk import is the deployment's load from the national demographics
// service: admins only (one request can re-point millions of patients).
func (r *Registry) ImportAllowed(p auth.Principal) error {
	if p.Role != auth.RoleAdmin {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only the admin role may import nominations in bulk")
	}
	return nil
}

// Import applies every row of src as Registry.Set would, recorded as made
// by p (on the patient's behalf for prescribers and dispensers): a row that
// changes nothing writes nothing, so that re-running an import, whole or
// after an interruption, gives the same final state. Rows are applied by a
// pool of workers, each doing read + compare-and-set; the rows of one
// patient all go to the same worker, in file order, so the last row of a
// patient and type wins as it would applied one by one.
//
// The error is that of src (the rows before it are applied), of the store
// (a fhir.Error of KindUnavailable), or ctx's; the result then counts what
// was done.
func (r *Registry) Import(ctx context.Context, p auth.Principal, src service.ImportSource, o service.ImportOptions) (*service.ImportResult, error) {
	by, err := changer(p)
	if err != nil {
		return nil, err
	}
	n := o.Workers
	if n <= 0 {
		n = DefaultImportWorkers
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	res := &service.ImportResult{Rejections: []nomination.Rejection{}}
	var stored, unchanged atomic.Int64
	var wg sync.WaitGroup
	queues := make([]chan nomination.ImportRow, n)
	for i := range queues {
		q := make(chan nomination.ImportRow, 128)
		queues[i] = q
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := importWorker{r: r, by: by}
			for row := range q {
				if ctx.Err() != nil {
					continue // drain
				}
				changed, err := w.apply(ctx, row)
				switch {
				case err != nil:
					cancel(err)
				case changed:
					stored.Add(1)
				default:
					unchanged.Add(1)
				}
			}
		}()
	}

	var readErr error
	h := fnv.New32a()
	for ctx.Err() == nil {
		row, rej, err := src.Next()
		if err != nil {
			if err != io.EOF {
				readErr = err
			}
			break
		}
		res.Rows++
		if rej != nil {
			res.Rejected++
			if len(res.Rejections) < MaxImportRejections {
				res.Rejections = append(res.Rejections, *rej)
			} else {
				res.MoreRejections++
			}
			continue
		}
		h.Reset()
		_, _ = io.WriteString(h, row.NHSNumber)
		select {
		case queues[h.Sum32()%uint32(n)] <- row:
		case <-ctx.Done():
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	res.Stored, res.Unchanged = stored.Load(), unchanged.Load()
	switch {
	case readErr != nil:
		return res, readErr
	case context.Cause(ctx) != nil:
		return res, context.Cause(ctx)
	}
	return res, nil
}

// importWorker applies rows. For a new patient creating first takes one
// round trip instead of two (read, then create): the common case of a first
// load. A worker creates first until most of a window of rows find the
// patient already on record (a re-run), then reads first until most of a
// window find none.
type importWorker struct {
	r         *Registry
	by        nomination.By
	readFirst bool
	n, flips  int // rows in this window; rows in it that argue for the other mode
}

const importWindow = 256

func (w *importWorker) note(other bool) {
	w.n++
	if other {
		w.flips++
	}
	if w.n == importWindow {
		if w.flips*2 > importWindow {
			w.readFirst = !w.readFirst
		}
		w.n, w.flips = 0, 0
	}
}

// apply sets one row's nomination; changed is false when it was already so.
// It is one compare-and-set (service.CompareAndSet) whose first decision,
// when the worker creates first, is made from "nothing on record" without
// a read.
func (w *importWorker) apply(ctx context.Context, row nomination.ImportRow) (changed bool, err error) {
	s := w.r.store
	readFirst := w.readFirst
	attempt := 0
	next, err := service.CompareAndSet(ctx, fmt.Sprintf("line %d", row.Line),
		func(ctx context.Context) (*nomination.Patient, uint64, error) {
			attempt++
			switch {
			case attempt == 1 && !readFirst:
				return nil, 0, nil
			case attempt == 2 && !readFirst:
				w.note(true) // creating first met the patient on record
			}
			cur, rev, err := s.Nominations(ctx, row.NHSNumber)
			if err != nil {
				return nil, 0, service.StoreUnavailable("read nominations", err)
			}
			if readFirst && attempt == 1 {
				w.note(cur == nil)
			}
			return cur, rev, nil
		},
		func(cur *nomination.Patient) (*nomination.Patient, bool, error) {
			next := nomination.Set(cur, row.NHSNumber, row.Type, row.ODS, w.by, w.r.now())
			return next, next != nil, nil
		},
		s.writeNominations)
	if !readFirst && attempt == 1 && err == nil {
		w.note(false) // created first
	}
	switch {
	case errors.Is(err, service.ErrBusy):
		return false, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("line %d: the patient's nominations are changing too often; retry the import", row.Line)}
	case err != nil:
		return false, err
	}
	return next != nil, nil
}
