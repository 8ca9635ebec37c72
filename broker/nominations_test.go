package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/nomination"
)

// A nomination change whose client goes away after the change is decided
// (its context cancelled while deciding, as a client hanging up at that
// moment) is still stored, and the answer is the stored change: the
// registry writes with the one compare-and-set loop
// (service.CompareAndSet), whose decided write is completed. A client gone
// before the decision stores nothing.
func TestNominationWriteCompletedAfterTheClientLeaves(t *testing.T) {
	st, _, _ := notifyStore(t, 0, StorageLimits{})
	admin := auth.Principal{Subject: "ops", ODS: "X26", Role: auth.RoleAdmin}
	for _, tc := range []struct {
		name, nhs     string
		cancelBefore  bool // the client has gone before the decision
		wantStoredODS string
	}{
		{"cancelled after the decision", "9449304130", false, "FA565"},
		{"cancelled before the decision", "9449305552", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelBefore {
				cancel()
			}
			// The registry's clock is read while deciding: the client
			// leaves there.
			r := NewRegistry(st, func() time.Time { cancel(); return time.Now() })
			p, err := r.Set(ctx, admin, tc.nhs, nomination.Pharmacy, "FA565")
			if tc.cancelBefore {
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Set: %v, want context.Canceled", err)
				}
			} else if err != nil || p.Of(nomination.Pharmacy) != "FA565" {
				t.Fatalf("Set: %+v, %v", p, err)
			}
			got, _, err := st.Nominations(context.Background(), tc.nhs)
			if err != nil {
				t.Fatal(err)
			}
			ods := ""
			if got != nil {
				ods = got.Of(nomination.Pharmacy)
			}
			if ods != tc.wantStoredODS {
				t.Errorf("stored P1 %q, want %q", ods, tc.wantStoredODS)
			}
		})
	}
}
