package httpapi

import (
	"testing"
	"time"
)

// The token bucket on a fake clock: a burst, then one request per 1/rate,
// the wait told in between; keys apart; full buckets forgotten.
func TestKeyedLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := newKeyedLimiter(2, 3, func() time.Time { return now }) // 2 per second, bursts of 3
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("over the burst: %v, wait %v; want refused, 500ms", ok, wait)
	}
	// A refusal takes nothing: the wait does not grow with retries.
	if _, again := l.allow("a"); again != wait {
		t.Errorf("wait after a refused retry %v, want %v", again, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Error("another key refused")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Error("refused after the wait it told")
	}
	if ok, _ := l.allow("a"); ok {
		t.Error("a second request allowed half a second after the burst")
	}
	// After two minutes every bucket is full again and is dropped.
	now = now.Add(2 * time.Minute)
	if ok, _ := l.allow("c"); !ok {
		t.Error("a new key refused")
	}
	if len(l.buckets) != 1 {
		t.Errorf("%d buckets kept, want only the new one", len(l.buckets))
	}
	if newKeyedLimiter(0, 10, nil) != nil {
		t.Error("rate 0 must mean no limiter")
	}
	var none *keyedLimiter
	if ok, _ := none.allow("a"); !ok {
		t.Error("no limiter refused")
	}
}

func TestAddressKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7:5000", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:5000", "192.0.2.7"},
		{"[2001:db8:1:2:aaaa::1]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:443", "2001:db8:1:3::/64"},
	} {
		if got := addressKey(tc.in); got != tc.want {
			t.Errorf("addressKey(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
