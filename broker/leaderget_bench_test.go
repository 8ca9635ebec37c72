package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// BenchmarkCurrentRead: the read behind every compare-and-set decision,
// the last message on a prescription's subject, as a direct get (any
// replica answers) and as a read from the stream leader (leaderGet, what
// Store.current does on a replicated event log), on a single server (R1)
// and on a three-node cluster in this process (R3; the client on a random
// node, as the broker's). 1,000 prescriptions of a 4 KB body, read in
// turn. Compare with benchstat -col /read. The nodes share the machine's
// cores: a floor, not a prediction for three machines.
func BenchmarkCurrentRead(b *testing.B) {
	body := make([]byte, 4096)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	const prescriptions = 1000
	for _, replicas := range []int{1, 3} {
		urls := ""
		if replicas > 1 {
			urls = benchCluster(b, replicas)
		} else {
			urls = singleServer(b)
		}
		st, _ := storeOn(b, urls, replicas)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for i := range prescriptions {
			id := fmt.Sprint("READ-", i)
			if _, err := st.appendEvent(ctx, rx.EventOrder, id, &rx.Prescription{ID: id}, body, 0); err != nil {
				b.Fatal(err)
			}
		}
		cancel()
		reads := []struct {
			name string
			read func(context.Context, string) error
		}{
			{"direct", func(ctx context.Context, subject string) error {
				_, err := st.events.GetLastMsgForSubject(ctx, subject)
				return err
			}},
			{"leader", func(ctx context.Context, subject string) error {
				_, err := st.leaderGet(ctx, StreamEvents, leaderGetRequest{LastFor: subject})
				return err
			}},
		}
		for _, r := range reads {
			b.Run(fmt.Sprintf("R%d/read=%s", replicas, r.name), func(b *testing.B) {
				ctx := context.Background()
				i := 0
				for b.Loop() {
					if err := r.read(ctx, SubjectRx+fmt.Sprint("READ-", i%prescriptions)); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
	}
}
