package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/broker/service/porttest"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// An event read as a prescription's current state and then by its sequence
// (as a release reads the current state, then the order) is the same event
// both times, and each caller gets its own record: changing one changes
// neither what the store holds nor what the next read returns. Reads by
// sequence after the prescription has moved on, of messages that share a
// slot of the recent messages, and of a sequence not in the log, answer what
// the log holds.
func TestEventAfterCurrent(t *testing.T) {
	st, _, _ := notifyStore(t, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const id = "READ-RECENT"
	if _, err := st.Create(ctx, id, porttest.AppendEntry(id, "order")); err != nil {
		t.Fatal(err)
	}
	cur, err := st.Current(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := st.Event(ctx, cur.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Seq != cur.Seq || string(ev.Body) != "order" || ev.Event != "test" || ev.MessageID != "order" ||
		ev.Record.ID != id || ev.Record.OrderSeq != cur.Seq || !ev.Time.Equal(cur.Time) {
		t.Fatalf("event %d read by sequence %+v, as the current state %+v", cur.Seq, ev, cur)
	}
	if ev.Record == cur.Record {
		t.Fatal("the current state and the event read by sequence share a record")
	}
	ev.Record.History = append(ev.Record.History, rx.Event{MessageID: "changed by a caller"})
	again, err := st.Event(ctx, cur.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Record.History) != 1 {
		t.Fatalf("a caller's change shows in the next read: %+v", again.Record.History)
	}

	// The prescription moves on; other prescriptions fill every slot.
	if _, err := st.Update(ctx, id, porttest.AppendEntry(id, "release")); err != nil {
		t.Fatal(err)
	}
	for i := range recentSlots + 1 {
		other := fmt.Sprintf("READ-OTHER-%d", i)
		if _, err := st.Create(ctx, other, porttest.AppendEntry(other, "order")); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Current(ctx, other); err != nil {
			t.Fatal(err)
		}
	}
	order, err := st.Event(ctx, cur.Seq)
	if err != nil || string(order.Body) != "order" || len(order.Record.History) != 1 {
		t.Fatalf("the order after its slot was taken: %+v, %v", order, err)
	}
	now, err := st.Current(ctx, id)
	if err != nil || string(now.Body) != "release" || now.Record.OrderSeq != cur.Seq {
		t.Fatalf("the current state after a release: %+v, %v", now, err)
	}
	if _, err := st.Event(ctx, now.Seq+uint64(2*recentSlots)); err != service.ErrNotFound {
		t.Fatalf("a sequence beyond the log: %v, want ErrNotFound", err)
	}
}
