package broker

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// The runner's retry policy: applied messages are acknowledged, transient
// failures retried with a doubling, bounded delay, and permanent failures
// (an undecodable message) or a message failing MaxDeliveries times go to
// the dead letter.
func TestRunnerDecide(t *testing.T) {
	transient := errors.New("stream unavailable")
	cases := []struct {
		name      string
		err       error
		delivered uint64
		verdict   Verdict
		delay     time.Duration
	}{
		{"applied", nil, 1, VerdictAck, 0},
		{"applied on a redelivery", nil, 7, VerdictAck, 0},
		{"transient, first delivery", transient, 1, VerdictRetry, RetryBase},
		{"transient, second delivery", transient, 2, VerdictRetry, 2 * RetryBase},
		{"transient, fifth delivery", transient, 5, VerdictRetry, 16 * RetryBase},
		{"transient, delay capped", transient, MaxDeliveries - 1, VerdictRetry, RetryMax},
		{"transient, delay reaches the cap", transient, 10, VerdictRetry, min(512*RetryBase, RetryMax)},
		{"transient, last delivery", transient, MaxDeliveries, VerdictDead, 0},
		{"transient, past the last", transient, MaxDeliveries + 3, VerdictDead, 0},
		{"permanent, first delivery", Permanent(transient), 1, VerdictDead, 0},
		{"permanent, wrapped", fmt.Errorf("apply: %w", Permanent(transient)), 1, VerdictDead, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, d := DefaultRetry.Decide(c.err, c.delivered)
			if v != c.verdict || d != c.delay {
				t.Errorf("Decide(%v, %d) = %v, %s; want %v, %s", c.err, c.delivered, v, d, c.verdict, c.delay)
			}
		})
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
	if !errors.Is(Permanent(transient), transient) {
		t.Error("Permanent hides its error")
	}
}

// DecodeEvent refuses what the broker did not write: no record header, a
// record that is not JSON, a record of another prescription than the subject's.
func TestDecodeEventRefusesForeign(t *testing.T) {
	now := time.Now()
	hdr := func(rec string) map[string][]string {
		if rec == "" {
			return nil
		}
		return map[string][]string{HeaderRecord: {rec}}
	}
	cases := []struct {
		name, subject, record string
		ok                    bool
	}{
		{"the broker's", SubjectRx + "A1", `{"id":"A1"}`, true},
		{"no header", SubjectRx + "A1", "", false},
		{"not JSON", SubjectRx + "A1", `{"id":`, false},
		{"null record", SubjectRx + "A1", `null`, false},
		{"another prescription", SubjectRx + "B2", `{"id":"A1"}`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := DecodeEvent(3, now, c.subject, hdr(c.record), []byte("x"))
			if (err == nil) != c.ok || (err == nil && (ev.Record.ID != "A1" || ev.Seq != 3)) {
				t.Errorf("DecodeEvent: %+v, %v", ev, err)
			}
		})
	}
}

// A dead letter keeps the original message's headers, as copies, and drops
// its Nats-* ones (message ID, expectations), whatever their case, which the
// dead letter stream would otherwise read as its own.
func TestDeadHeaders(t *testing.T) {
	in := nats.Header{
		HeaderRecord:                          {`{"id":"A1"}`},
		"Nats-Msg-Id":                         {"m1"},
		"nats-expected-last-subject-sequence": {"4"},
		"Eps-Dead-Reason":                     {"earlier"},
		"Nats":                                {"kept: not a Nats- prefix"},
	}
	out := deadHeaders(in)
	want := nats.Header{
		HeaderRecord:      {`{"id":"A1"}`},
		"Eps-Dead-Reason": {"earlier"},
		"Nats":            {"kept: not a Nats- prefix"},
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("deadHeaders: %v, want %v", out, want)
	}
	out[HeaderRecord][0] = "changed"
	if in.Get(HeaderRecord) != `{"id":"A1"}` {
		t.Errorf("deadHeaders shares its values with the original: %v", in)
	}
}
