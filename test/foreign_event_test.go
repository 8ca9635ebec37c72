package test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
)

// publishForeign writes, with core NATS requests (what `nats req` does),
// three messages on prescription id's subject that are not the broker's
// events: a foreign one (no headers), a corrupt one (an Eps-Record header
// that is not JSON) and one whose record is about another prescription.
// It returns their event log sequences.
func publishForeign(t *testing.T, b *testBroker, id string) []uint64 {
	t.Helper()
	nc := b.App.NATS.Conn
	subject := broker.SubjectRx + id
	corrupt := &nats.Msg{Subject: subject, Data: []byte("{}"), Header: nats.Header{}}
	corrupt.Header.Set(broker.HeaderEvent, "prescription-order")
	corrupt.Header.Set(broker.HeaderRecord, `{"id":"`+id+`",`)
	other := &nats.Msg{Subject: subject, Data: []byte("{}"), Header: nats.Header{}}
	other.Header.Set(broker.HeaderEvent, "prescription-order")
	other.Header.Set(broker.HeaderRecord, `{"id":"OTHER-`+id+`","status":"0001"}`)
	msgs := []*nats.Msg{{Subject: subject, Data: []byte("hello")}, corrupt, other}
	var seqs []uint64
	for _, m := range msgs {
		// A core request on a stream's subject is answered with the
		// stream's acknowledgement (no JetStream client involved).
		reply, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var ack struct {
			Stream string `json:"stream"`
			Seq    uint64 `json:"seq"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Stream != broker.StreamEvents || ack.Seq == 0 {
			t.Fatalf("publish on %s: %s (%v)", subject, reply.Data, err)
		}
		seqs = append(seqs, ack.Seq)
	}
	return seqs
}

// stillThere checks that the messages at seqs are in the event log as they
// were written (the broker removes nothing).
func stillThere(t *testing.T, b *testBroker, seqs []uint64) {
	t.Helper()
	ctx := context.Background()
	st, err := b.App.Store.JetStream().Stream(ctx, broker.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range seqs {
		if _, err := st.GetMsg(ctx, seq); err != nil {
			t.Errorf("message %d: %v", seq, err)
		}
	}
}

// Messages that are not the broker's events, written with a plain NATS
// publish on a prescription's subject, do not break it: reads answer its
// last valid state, release, dispense and cancellation answer as before
// (each write supersedes them), and they stay where they are. An ID whose
// only messages are such is not found, and an order for it is accepted.
func TestForeignMessagesOnAPrescriptionSubject(t *testing.T) {
	b := startBroker(t, "")
	kinds := rxKinds(t)
	nonNominated := kinds[2]

	t.Run("release and dispense", func(t *testing.T) {
		r := postRx(t, b, nonNominated)
		bad := publishForeign(t, b, r.id())
		r.events += uint64(len(bad))
		r.check(t) // still To Be Dispensed, in the store and the tracker
		r.release(t)
		d := r.home
		res, _, _ := r.dispense(d, r.all("0001"), "0006", "")
		r.ok(t, "dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: d, title: hDispense})
		stillThere(t, b, bad)
	})

	t.Run("after the last event", func(t *testing.T) {
		r := postRx(t, b, nonNominated)
		r.release(t)
		bad := publishForeign(t, b, r.id())
		r.events += uint64(len(bad))
		r.check(t)
		res, _, _ := r.dispense(newODS("DX"), r.all("0001"), "0006", "")
		r.refused(t, "dispense by another dispenser", res, 400, "")
		res, _, _ = r.dispense(r.home, r.all("0001"), "0006", "")
		r.ok(t, "dispensed", res, state{status: "0006", items: r.all("0001"), dispenser: r.home, title: hDispense})
		stillThere(t, b, bad)
	})

	t.Run("nominated release and cancellation", func(t *testing.T) {
		r := postRx(t, b, kinds[0])
		bad := publishForeign(t, b, r.id())
		r.events += uint64(len(bad))
		res := r.cancel(0)
		if !cancelAnswer(t, "cancel item 0", res, "R-0001") {
			t.FailNow()
		}
		want := r.all("0007")
		want[0] = "0005"
		r.ok(t, "cancel", res, state{status: "0001", items: want, title: hCancelled})
		stillThere(t, b, bad)
		more := publishForeign(t, b, r.id())
		r.events += uint64(len(more))
		if ids := r.releaseNominated(t, r.home); len(ids) != 1 || ids[0] != r.id() {
			t.Fatalf("nominated release handed over %v, want [%s]", ids, r.id())
		}
		want[1], want[2], want[3] = "0008", "0008", "0008"
		r.changed(t, state{status: "0002", items: want, dispenser: r.home, title: hNominated}, 1)
		stillThere(t, b, append(bad, more...))
	})

	t.Run("an ID with only foreign messages", func(t *testing.T) {
		r := newRx(t, b, nonNominated)
		bad := publishForeign(t, b, r.id())
		if _, err := b.App.Store.Current(context.Background(), r.id()); !errors.Is(err, service.ErrNotFound) {
			t.Fatalf("current state of an ID with only foreign messages: %v, want not found", err)
		}
		unknown := newRx(t, b, nonNominated)
		want, got := b.release("FCG71", unknown.id()), b.release("FCG71", r.id())
		if got.Status != want.Status || !got.outcome(t).hasCode("RESOURCE_NOT_FOUND") {
			t.Errorf("release: %d %s, want %d RESOURCE_NOT_FOUND as for an unknown ID", got.Status, got.Body, want.Status)
		}
		res := b.post(b.token(auth.RolePrescriber, prescriber), r.g.Body)
		if res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
		r.events, r.history = 1+uint64(len(bad)), 1
		r.want = state{status: "0001", items: r.all("0007"), title: hUpload}
		r.check(t)
		if res := b.post(b.token(auth.RolePrescriber, prescriber), r.g.Body); res.Status != 200 {
			t.Errorf("the same order again: %d %s", res.Status, res.Body)
		}
		r.check(t) // resent: nothing written
		r.release(t)
		stillThere(t, b, bad)
	})
}
