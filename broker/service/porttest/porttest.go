// Package porttest holds the contract tests of the service ports: the
// JetStream adapter (package broker, on embedded NATS) and the in-memory
// fakes (package memstore) run the same ones, so that the fakes the
// services are unit-tested against behave as the adapter does.
package porttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// AppendEntry is a decision that adds one history entry named msg to the
// prescription (creating it when there is none).
func AppendEntry(id, msg string) service.Decide {
	return func(cur *service.Event) (*service.Write, error) {
		next := &rx.Prescription{ID: id}
		if cur != nil {
			c := *cur.Record
			c.History = slices.Clone(c.History)
			next = &c
		}
		next.History = append(next.History, rx.Event{Type: "test", MessageID: msg})
		return &service.Write{Event: "test", MessageID: msg, Record: next, Body: []byte(msg)}, nil
	}
}

func historyIDs(rec *rx.Prescription) []string {
	var out []string
	for _, h := range rec.History {
		out = append(out, h.MessageID)
	}
	return out
}

// CompareAndSet tests the compare-and-set writes of an empty event log st:
// concurrent updates of one prescription are all applied, each once; a
// decided write completes after its client's context ends, and a client
// gone before the decision writes nothing; Create decides first from
// nothing and again from what is stored; a decision's error comes back as
// it is; an update that loses MaxAttempts times is ErrBusy.
func CompareAndSet(t *testing.T, st service.Prescriptions) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("concurrent updates of one prescription are all applied exactly once", func(t *testing.T) {
		const id, writers = "CAS-CONCURRENT", service.MaxAttempts
		first, err := st.Create(ctx, id, AppendEntry(id, "create"))
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Go(func() {
				_, errs[i] = st.Update(ctx, id, AppendEntry(id, fmt.Sprint("m", i)))
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		}
		cur, err := st.Current(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		got := historyIDs(cur.Record)
		want := []string{"create"}
		for i := range writers {
			want = append(want, fmt.Sprint("m", i))
		}
		slices.Sort(got[1:])
		slices.Sort(want[1:])
		if !slices.Equal(got, want) {
			t.Errorf("history %v, want each of %v once", got, want)
		}
		// One event per write, each the one before it and one entry more
		// (the stream holds only this prescription's events so far).
		if cur.Seq != first.Seq+writers {
			t.Errorf("last event %d, want %d: one per write", cur.Seq, first.Seq+writers)
		}
		var prev []string
		for seq := first.Seq; seq <= cur.Seq; seq++ {
			ev, err := st.Event(ctx, seq)
			if err != nil {
				t.Fatalf("event %d: %v", seq, err)
			}
			h := historyIDs(ev.Record)
			if len(h) != len(prev)+1 || !slices.Equal(h[:len(prev)], prev) {
				t.Fatalf("event %d history %v does not extend %v by one", seq, h, prev)
			}
			prev = h
		}
	})

	t.Run("a decided write completes after the client's context ends", func(t *testing.T) {
		const id = "CAS-CLIENT-GONE"
		cctx, ccancel := context.WithCancel(ctx)
		decide := AppendEntry(id, "order")
		ev, err := st.Create(cctx, id, func(cur *service.Event) (*service.Write, error) {
			w, err := decide(cur)
			ccancel() // the client goes once the write is decided
			return w, err
		})
		if err != nil {
			t.Fatalf("Create after the client left: %v", err)
		}
		cur, err := st.Current(ctx, id)
		if err != nil || cur.Seq != ev.Seq || !slices.Equal(historyIDs(cur.Record), []string{"order"}) {
			t.Fatalf("stored %+v, %v; want the decided write at %d", cur, err, ev.Seq)
		}

		// The same for an update of an existing prescription.
		cctx, ccancel = context.WithCancel(ctx)
		decide = AppendEntry(id, "release")
		ev, err = st.Update(cctx, id, func(cur *service.Event) (*service.Write, error) {
			w, err := decide(cur)
			ccancel()
			return w, err
		})
		if err != nil {
			t.Fatalf("Update after the client left: %v", err)
		}
		cur, err = st.Current(ctx, id)
		if err != nil || cur.Seq != ev.Seq || !slices.Equal(historyIDs(cur.Record), []string{"order", "release"}) {
			t.Fatalf("stored %+v, %v; want the decided write at %d", cur, err, ev.Seq)
		}
	})

	t.Run("a client gone before the decision writes nothing", func(t *testing.T) {
		const id = "CAS-GONE-BEFORE"
		if _, err := st.Create(ctx, id, AppendEntry(id, "order")); err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithCancel(ctx)
		ccancel()
		for name, f := range map[string]func(context.Context, string, service.Decide) (*service.Event, error){"Update": st.Update, "Create": st.Create} {
			called := false
			_, err := f(cctx, id, func(cur *service.Event) (*service.Write, error) {
				called = true
				return AppendEntry(id, "late")(cur)
			})
			if err == nil || called {
				t.Errorf("%s with an ended context: err %v, decided %v; want an error before any decision", name, err, called)
			}
		}
		cur, _ := st.Current(ctx, id)
		if !slices.Equal(historyIDs(cur.Record), []string{"order"}) {
			t.Errorf("history %v, want [order]", historyIDs(cur.Record))
		}
	})

	t.Run("decisions", func(t *testing.T) {
		const id = "CAS-DECISIONS"
		refused := errors.New("refused")
		cases := []struct {
			name      string
			create    bool
			decide    service.Decide
			wantErr   error
			wantWrite bool
			history   []string
		}{
			{name: "update of nothing decides from nil", decide: func(cur *service.Event) (*service.Write, error) {
				if cur != nil {
					return nil, fmt.Errorf("cur %+v, want nil", cur)
				}
				return nil, nil
			}},
			{name: "create", create: true, decide: AppendEntry(id, "a"), wantWrite: true, history: []string{"a"}},
			{name: "create of an existing prescription reads and decides again", create: true, wantWrite: true, history: []string{"a", "b"},
				decide: func(cur *service.Event) (*service.Write, error) {
					if cur == nil {
						return AppendEntry(id, "lost")(cur) // conflicts: "a" is stored
					}
					return AppendEntry(id, "b")(cur)
				}},
			{name: "a decision's error is returned as it is", decide: func(*service.Event) (*service.Write, error) { return nil, refused },
				wantErr: refused, history: []string{"a", "b"}},
			{name: "no write", decide: func(*service.Event) (*service.Write, error) { return nil, nil }, history: []string{"a", "b"}},
			{name: "a write about another prescription is refused", decide: func(*service.Event) (*service.Write, error) {
				return AppendEntry("OTHER", "c")(nil)
			}, wantErr: errAny, history: []string{"a", "b"}},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				f := st.Update
				if tc.create {
					f = st.Create
				}
				ev, err := f(ctx, id, tc.decide)
				switch {
				case tc.wantErr == errAny && err == nil, tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				case (ev != nil) != tc.wantWrite:
					t.Fatalf("written %+v, want a write: %v", ev, tc.wantWrite)
				}
				cur, err := st.Current(ctx, id)
				if tc.history == nil {
					if !errors.Is(err, service.ErrNotFound) {
						t.Fatalf("Current: %+v, %v; want not found", cur, err)
					}
					return
				}
				if err != nil || !slices.Equal(historyIDs(cur.Record), tc.history) {
					t.Fatalf("history %v (%v), want %v", historyIDs(cur.Record), err, tc.history)
				}
			})
		}
	})

	t.Run("an update that loses every attempt is ErrBusy", func(t *testing.T) {
		const id = "CAS-BUSY"
		if _, err := st.Create(ctx, id, AppendEntry(id, "order")); err != nil {
			t.Fatal(err)
		}
		decisions := 0
		_, err := st.Update(ctx, id, func(cur *service.Event) (*service.Write, error) {
			decisions++
			// Another writer gets there after every read.
			if _, err := st.Update(ctx, id, AppendEntry(id, fmt.Sprint("other", decisions))); err != nil {
				return nil, err
			}
			return AppendEntry(id, "loser")(cur)
		})
		if !errors.Is(err, service.ErrBusy) || decisions != service.MaxAttempts {
			t.Fatalf("err %v after %d decisions, want ErrBusy after %d", err, decisions, service.MaxAttempts)
		}
		cur, _ := st.Current(ctx, id)
		if slices.Contains(historyIDs(cur.Record), "loser") || len(cur.Record.History) != 1+service.MaxAttempts {
			t.Errorf("history %v, want the order and the %d other writes", historyIDs(cur.Record), service.MaxAttempts)
		}
	})
}

// errAny stands for "some error" in a table.
var errAny = errors.New("any error")

// EventsUnder tests the listing of the events under a message ID: only the
// types asked for, carrying that ID, stored in the window, in log order,
// without their bodies. st's clock must be the wall clock.
func EventsUnder(t *testing.T, st service.Prescriptions) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	since := time.Now().Add(-time.Minute)
	write := func(id, event, msg string) {
		t.Helper()
		if _, err := st.Update(ctx, id, func(cur *service.Event) (*service.Write, error) {
			w, err := AppendEntry(id, msg)(cur)
			w.Event = event
			return w, err
		}); err != nil {
			t.Fatal(err)
		}
	}
	write("UNDER-1", "release", "req-1")
	write("UNDER-2", "release", "req-2")
	write("UNDER-3", "nominated-release", "req-1")
	write("UNDER-1", "dispense", "req-1")
	cases := []struct {
		name   string
		msg    string
		since  time.Time
		window time.Duration
		types  []string
		want   []string // prescription IDs, in log order
	}{
		{"both release types under req-1", "req-1", since, time.Hour, []string{"release", "nominated-release"}, []string{"UNDER-1", "UNDER-3"}},
		{"one type", "req-1", since, time.Hour, []string{"nominated-release"}, []string{"UNDER-3"}},
		{"another message ID", "req-2", since, time.Hour, []string{"release"}, []string{"UNDER-2"}},
		{"a window that ends before them", "req-1", since.Add(-time.Hour), time.Minute, []string{"release"}, nil},
		{"a window that starts after them", "req-1", time.Now().Add(time.Hour), time.Hour, []string{"release"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := st.EventsUnder(ctx, tc.msg, tc.since, tc.window, tc.types...)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i, ev := range evs {
				got = append(got, ev.Record.ID)
				if len(ev.Body) != 0 || ev.MessageID != tc.msg || (i > 0 && ev.Seq <= evs[i-1].Seq) {
					t.Errorf("event %+v: want no body, message ID %s, in log order", ev, tc.msg)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
