package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// BenchmarkEventLogConsumer reads an event log of 4-item-order-sized events
// (15.6 KB of body, a record header) with an ordered consumer that decodes
// each (DecodeEvent), as the tracker index does, with and without
// HeadersOnly: what a projection that needs only the headers saves per
// event. Compare the two with benchstat:
//
//	go test -run '^$' -bench EventLogConsumer -count 6 ./broker/ | benchstat -col /body -
func BenchmarkEventLogConsumer(b *testing.B) {
	st, _, m := notifyStore(b, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const events = 2000
	body := make([]byte, 15600)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for i := range events {
		id := fmt.Sprintf("%06X-A83008-00000A", i)
		rec := &rx.Prescription{ID: id, NHSNumber: "9449305552", Prescriber: "A83008", PrescriberOrg: "A83008",
			Issue:   rx.Issue{Status: rx.StatusToBeDispensed, Nominated: "FA565", Items: make([]rx.Item, 4)},
			History: []rx.Event{{Type: rx.EventOrder, Org: "A83008", Status: rx.StatusToBeDispensed}}}
		if _, err := st.appendEvent(ctx, rx.EventOrder, "b-"+id, rec, body, 0); err != nil {
			b.Fatal(err)
		}
	}
	for _, headersOnly := range []bool{false, true} {
		name := "full"
		if headersOnly {
			name = "headers-only"
		}
		b.Run("body="+name, func(b *testing.B) {
			for b.Loop() {
				n := 0
				r, err := StartRunner(ctx, st.js, m, zap.NewNop(), RunnerConfig[*service.Event]{
					Name: "bench", Stream: StreamEvents, HeadersOnly: headersOnly,
					Decode: func(seq uint64, t time.Time, subject string, h nats.Header, data []byte) (*service.Event, error) {
						return DecodeEvent(seq, t, subject, h, data)
					},
					Apply: func(_ context.Context, d *Delivery[*service.Event]) error { n++; return nil },
				})
				if err != nil {
					b.Fatal(err)
				}
				if err := r.WaitApplied(ctx, events); err != nil {
					b.Fatal(err)
				}
				r.Stop()
				if n != events {
					b.Fatalf("applied %d", n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events)/1000, "µs/event")
		})
	}
}

// BenchmarkCatchUpStreamInfo is what a nominated release pays to learn the
// event log's last sequence before it waits for the ready queues
// (TrackerProjector.CatchUp): one stream info request of EPS_EVENTS, here
// on the embedded server with 2,000 events stored.
//
//	go test -run '^$' -bench CatchUpStreamInfo -count 6 ./broker/
func BenchmarkCatchUpStreamInfo(b *testing.B) {
	st, _, _ := notifyStore(b, 0, StorageLimits{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := range 2000 {
		id := fmt.Sprintf("%06X-A83008-00000B", i)
		rec := &rx.Prescription{ID: id, Issue: rx.Issue{Status: rx.StatusToBeDispensed, Nominated: "FA565"}}
		if _, err := st.appendEvent(ctx, rx.EventOrder, "b-"+id, rec, []byte("{}"), 0); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		info, err := st.events.Info(ctx)
		if err != nil || info.State.LastSeq != 2000 {
			b.Fatal(err)
		}
	}
}
