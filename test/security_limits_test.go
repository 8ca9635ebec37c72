package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// searchPath is a tracker search for a prescription ID that is valid and
// not stored (200, total 0).
func searchPath(t *testing.T) string {
	t.Helper()
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tmpl.Order(fhirgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return "/FHIR/R4/RequestGroup?prescriptionId=" + g.ShortID
}

// metricValue reads one sample of a broker metric: the one whose labels
// include the given name=value pairs (the sum of all when none is given).
func metricValue(t *testing.T, b *testBroker, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := b.App.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// rawConn is one client connection to the broker, kept open between
// requests (HTTP/1.1 keep-alive), from the given local address.
type rawConn struct {
	t  *testing.T
	c  net.Conn
	rd *bufio.Reader
	// tcp is the TCP connection under c when c is TLS: the broker's TLS
	// close (close_notify) reaches the client before the broker has closed
	// the TCP connection and released its place under the cap; its FIN
	// comes after.
	tcp net.Conn
}

func dialFrom(t *testing.T, b *testBroker, local string) *rawConn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", strings.TrimPrefix(b.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, rd: bufio.NewReader(c)}
}

// do sends one request on the connection and reads its answer; headers are
// name, value pairs.
func (rc *rawConn) do(method, path string, body []byte, headers ...string) *response {
	rc.t.Helper()
	req, err := http.NewRequest(method, "http://broker"+path, bytes.NewReader(body))
	if err != nil {
		rc.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	_ = rc.c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(rc.c); err != nil {
		rc.t.Fatal(err)
	}
	res, err := http.ReadResponse(rc.rd, req)
	if err != nil {
		rc.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	if err != nil {
		rc.t.Fatal(err)
	}
	if res.Close { // the reader takes "Connection: close" out of the header
		res.Header.Set("Connection", "close")
	}
	return &response{Status: res.StatusCode, Header: res.Header, Body: rb}
}

// closedByBroker reports whether the broker closed the connection (a read
// ends at once with EOF or a reset rather than a timeout).
func (rc *rawConn) closedByBroker() bool {
	_ = rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := rc.rd.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	if err != nil && rc.tcp != nil {
		// Under TLS, wait for the TCP connection's own end too.
		_ = rc.tcp.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err = io.Copy(io.Discard, rc.tcp)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false
		}
		return true
	}
	return err != nil
}

// waitOpenConns waits until the broker serves n connections (it counts a
// connection closed by the client only once it has read the close).
func waitOpenConns(t *testing.T, b *testBroker, n float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for metricValue(t, b, "eps_http_connections_open") != n {
		if time.Now().After(deadline) {
			t.Fatalf("open connections %v, want %v", metricValue(t, b, "eps_http_connections_open"), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client cannot take every connection: past --http-max-connections a new
// connection is answered 503 with Retry-After and closed (probes still
// answer on it), past twice that it is closed unanswered, and once a
// connection ends the next one is served. Over HTTPS alike: the cap counts
// the TCP connections under TLS.
func TestSecurityConnectionCap(t *testing.T) {
	for _, https := range []bool{false, true} {
		name := "http"
		if https {
			name = "https"
		}
		t.Run(name, func(t *testing.T) {
			var pool *x509.CertPool
			b := startBroker(t, "", func(c *config.Config) {
				c.HTTPMaxConns = 2
				if https {
					c.TLSCert, c.TLSKey, pool = selfSigned(t, t.TempDir())
				}
			})
			dial := func() *rawConn {
				rc := dialFrom(t, b, "")
				if https {
					rc.tcp = rc.c
					rc.c = tls.Client(rc.c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
					rc.rd = bufio.NewReader(rc.c)
				}
				return rc
			}
			connectionCap(t, b, dial)
		})
	}
}

func connectionCap(t *testing.T, b *testBroker, dial func() *rawConn) {
	// Two connections, answered (so accepted and counted), kept open.
	held := []*rawConn{dial(), dial()}
	for i, rc := range held {
		if res := rc.do("GET", "/FHIR/R4/metadata", nil); res.Status != 200 {
			t.Fatalf("connection %d under the cap: %d", i, res.Status)
		}
	}

	over := dial()
	res := over.do("GET", "/FHIR/R4/metadata", nil)
	if res.Status != 503 || res.Header.Get("Retry-After") == "" || !strings.EqualFold(res.Header.Get("Connection"), "close") {
		t.Fatalf("over the cap: %d Retry-After %q Connection %q", res.Status, res.Header.Get("Retry-After"), res.Header.Get("Connection"))
	}
	if oo := res.outcome(t); !oo.hasCode("SERVICE_UNAVAILABLE") || oo.Issue[0].Code != "transient" {
		t.Errorf("over the cap: %s", res.Body)
	}
	if !over.closedByBroker() {
		t.Error("a connection over the cap was not closed after its answer")
	}
	// A liveness probe on a connection over the cap still answers, and the
	// connection is closed after it too.
	probe := dial()
	if res := probe.do("GET", "/healthz", nil); res.Status != 200 {
		t.Errorf("healthz over the cap: %d", res.Status)
	}
	if !probe.closedByBroker() {
		t.Error("a probe's connection over the cap was not closed after its answer")
	}
	if got := metricValue(t, b, "eps_http_refused_total", "reason", "connections"); got != 1 {
		t.Errorf("refused connections counted %v, want 1", got)
	}

	// Two more wait for their request over the cap; a fifth is closed
	// unanswered.
	dial()
	dial()
	dropped := dial()
	if !dropped.closedByBroker() {
		t.Error("a connection past twice the cap was kept")
	}
	if got := metricValue(t, b, "eps_http_refused_total", "reason", "connections_dropped"); got != 1 {
		t.Errorf("dropped connections counted %v, want 1", got)
	}

	// A served connection ends: the next new one is served.
	held[0].c.Close()
	waitOpenConns(t, b, 1)
	if res := dial().do("GET", "/FHIR/R4/metadata", nil); res.Status != 200 {
		t.Errorf("after a connection ended: %d", res.Status)
	}
	if res := held[1].do("GET", "/FHIR/R4/metadata", nil); res.Status != 200 {
		t.Errorf("a held connection: %d", res.Status)
	}
}

// retryAfter is the Retry-After of a 429 in whole seconds (0 when absent or
// not a number).
func retryAfter(res *response) int {
	n, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	return n
}

func isThrottled(t *testing.T, res *response) bool {
	t.Helper()
	if res.Status != 429 {
		return false
	}
	oo := res.outcome(t)
	if oo.Issue[0].Code != "throttled" || !oo.hasCode("TOO_MANY_REQUESTS") || retryAfter(res) < 1 {
		t.Errorf("429 answer: Retry-After %q %s", res.Header.Get("Retry-After"), res.Body)
	}
	return true
}

// One user over its rate gets 429 with Retry-After, whatever token it
// holds, while another user is still served; probes are never limited.
// (Tiny limits instead of a clock: 3 requests, then one per 1000 s.)
func TestSecurityRateLimitPerUser(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.RateLimit, c.RateBurst = 0.001, 3 })
	search := searchPath(t)
	hog := b.token(auth.RoleTracker, "X26")
	for i := 0; i < 3; i++ {
		if res := b.do("GET", search, hog, nil); res.Status != 200 {
			t.Fatalf("request %d within the burst: %d %s", i+1, res.Status, res.Body)
		}
	}
	res := b.do("GET", search, hog, nil)
	if !isThrottled(t, res) {
		t.Fatalf("4th request over the rate: %d, want 429", res.Status)
	}
	if ra := retryAfter(res); ra < 900 || ra > 1000 {
		t.Errorf("Retry-After %d s, want about the 1000 s that one request takes to come back", ra)
	}
	// The user, not the token: a new token of the same user is limited too.
	again, err := auth.Mint(b.App.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: "tracker-user-X26", ODS: "X26", Role: auth.RoleAdmin}, 2*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if res := b.do("GET", search, again, nil); !isThrottled(t, res) {
		t.Errorf("another token of the same user: %d, want 429", res.Status)
	}
	// Writes too, and a throttled X-Request-ID is not remembered as answered.
	if res := b.do("POST", "/FHIR/R4/Task/$release", hog, []byte(`{}`), "X-Request-ID", "7d9b8f0e-5a5e-4c4b-9d43-2f0f6b9a1c11"); !isThrottled(t, res) {
		t.Errorf("a write over the rate: %d, want 429", res.Status)
	}
	// A prescriber over its rate: its order is refused before it is read,
	// and nothing is stored.
	presc := b.token(auth.RolePrescriber, "A83008")
	for i := 0; i < 3; i++ {
		if res := b.do("GET", search, presc, nil); res.Status != 200 {
			t.Fatalf("prescriber request %d: %d", i+1, res.Status)
		}
	}
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	order, _ := tmpl.Order(fhirgen.Options{})
	if res := b.post(presc, order.Body); !isThrottled(t, res) {
		t.Errorf("an order over the rate: %d, want 429", res.Status)
	}
	if n := b.events(""); n != 0 {
		t.Errorf("a throttled order stored %d events", n)
	}
	// Another user, the same address: served.
	other := b.token(auth.RoleTracker, "Y12")
	for i := 0; i < 3; i++ {
		if res := b.do("GET", search, other, nil); res.Status != 200 {
			t.Errorf("another user, request %d: %d", i+1, res.Status)
		}
	}
	for _, p := range []string{"/_ping", "/healthz", "/readyz"} {
		for i := 0; i < 5; i++ {
			if res := b.do("GET", p, hog, nil); res.Status != 200 {
				t.Errorf("%s: %d", p, res.Status)
			}
		}
	}
	if got := metricValue(t, b, "eps_http_refused_total", "reason", "user_rate"); got != 4 {
		t.Errorf("user_rate refusals counted %v, want 4", got)
	}
}

// Requests without valid credentials are limited per client address: an
// address over its rate gets 429 (also for a bad token, instead of 401),
// while another address, and a signed-in user at the same address, are
// still served.
func TestSecurityRateLimitPerAddress(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.RateLimitIP, c.RateBurstIP = 0.001, 2 })
	search := searchPath(t)
	hostile := dialFrom(t, b, "127.0.0.1")
	for i := 0; i < 2; i++ {
		if res := hostile.do("GET", "/FHIR/R4/metadata", nil); res.Status != 200 {
			t.Fatalf("request %d within the burst: %d", i+1, res.Status)
		}
	}
	for _, tc := range []struct {
		name, method, path string
		headers            []string
	}{
		{"metadata", "GET", "/FHIR/R4/metadata", nil},
		{"no token", "GET", search, nil},
		{"bad token", "POST", "/FHIR/R4/$process-message", []string{"Authorization", "Bearer not.a.token", "Content-Type", "application/fhir+json"}},
		{"tracker page", "GET", "/tracker", nil},
		{"sign-in", "POST", "/tracker/session", []string{page, "1", "Content-Type", "application/json"}},
		{"unknown path", "GET", "/nothing", nil},
	} {
		var body []byte
		if tc.method == "POST" {
			body = []byte(`{"token":"x"}`)
		}
		if res := hostile.do(tc.method, tc.path, body, tc.headers...); !isThrottled(t, res) {
			t.Errorf("%s over the address's rate: %d, want 429", tc.name, res.Status)
		}
	}
	for _, p := range []string{"/_ping", "/healthz", "/readyz"} {
		if res := hostile.do("GET", p, nil); res.Status != 200 {
			t.Errorf("%s: %d", p, res.Status)
		}
	}
	// A valid token at the same address counts against its user, not the
	// address.
	if res := hostile.do("GET", search, nil,
		"Authorization", "Bearer "+b.token(auth.RoleTracker, "X26")); res.Status != 200 {
		t.Errorf("a signed-in user at the limited address: %d", res.Status)
	}
	// Another client address (another loopback address) is served.
	if res := dialFrom(t, b, "127.0.0.2").do("GET", "/FHIR/R4/metadata", nil); res.Status != 200 {
		t.Errorf("another address: %d", res.Status)
	}
	if got := metricValue(t, b, "eps_http_refused_total", "reason", "address_rate"); got != 6 {
		t.Errorf("address_rate refusals counted %v, want 6", got)
	}
}

// signIn exchanges a token for a tracker session cookie.
func signIn(t *testing.T, b *testBroker, token string) string {
	t.Helper()
	res := b.do("POST", "/tracker/session", "", []byte(`{"token":"`+token+`"}`), page, "1", "Content-Type", "application/json")
	c := (&http.Response{Header: res.Header}).Cookies()
	if res.Status != 204 || len(c) != 1 {
		t.Fatalf("sign in: %d %s", res.Status, res.Body)
	}
	return "eps_session=" + c[0].Value
}

// A user holds at most --tracker-sessions-per-user live sessions, however
// many tokens it signs in with: a new sign-in ends the least recently used
// one beyond that; other users' sessions are untouched.
func TestSecurityTrackerSessionsCapped(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.SessionsPerUser = 2 })
	alive := func(cookie string) int {
		return b.do("GET", "/tracker/session", "", nil, "Cookie", cookie, page, "1").Status
	}
	tok := b.token(auth.RoleTracker, "X26")
	otherUser := signIn(t, b, b.token(auth.RoleTracker, "Y12"))
	s1 := signIn(t, b, tok)
	s2 := signIn(t, b, tok)
	s3 := signIn(t, b, tok)
	for _, tc := range []struct {
		name, cookie string
		want         int
	}{{"oldest", s1, 401}, {"second", s2, 200}, {"newest", s3, 200}, {"another user's", otherUser, 200}} {
		if got := alive(tc.cookie); got != tc.want {
			t.Errorf("%s session after a third sign-in: %d, want %d", tc.name, got, tc.want)
		}
	}
	// s2 is used again, after s3: the next sign-in, with another token of
	// the same user, ends s3, the least recently used.
	_ = alive(s2)
	again, err := auth.Mint(b.App.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
		auth.Principal{Subject: "tracker-user-X26", ODS: "X26", Role: auth.RoleTracker}, 2*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s4 := signIn(t, b, again)
	for _, tc := range []struct {
		name, cookie string
		want         int
	}{{"least recently used", s3, 401}, {"recently used", s2, 200}, {"new", s4, 200}, {"another user's", otherUser, 200}} {
		if got := alive(tc.cookie); got != tc.want {
			t.Errorf("%s session after a sign-in with another token: %d, want %d", tc.name, got, tc.want)
		}
	}
	// The bucket holds no more than the cap for the user (and one for the
	// other user).
	kv, err := b.App.Store.JetStream().KeyValue(context.Background(), broker.BucketSessions)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	if n != 3 {
		t.Errorf("%d sessions stored, want 3 (2 of the capped user, 1 of the other)", n)
	}
	// A session made before sessions were capped (its key the cookie's hash
	// alone) still works until it ends.
	oldCookie := "c2Vzc2lvbi1tYWRlLWJlZm9yZS10aGUtY2FwLTAwMDAwMDAw"
	h := sha256.Sum256([]byte(oldCookie))
	oldSession := mustJSON(map[string]any{"sub": "tracker-user-Z9", "ods": "Z9", "role": "tracker",
		"exp": time.Now().Add(time.Hour), "used": time.Now()})
	if _, err := kv.Create(context.Background(), hex.EncodeToString(h[:]), oldSession); err != nil {
		t.Fatal(err)
	}
	if got := alive("eps_session=" + oldCookie); got != 200 {
		t.Errorf("a session from before the cap: %d, want 200", got)
	}
	// A cookie whose user tag was changed names no session (and cannot
	// reach another key).
	rnd, _, _ := strings.Cut(s2, ".")
	for _, forged := range []string{rnd, rnd + "." + strings.Repeat("0", 24), strings.Replace(s2, ".", ".0", 1), s2 + ".*", "eps_session=a.>"} {
		if got := alive(forged); got != 401 {
			t.Errorf("forged cookie %q: %d, want 401", forged, got)
		}
	}
}

// With --metrics-listen, /metrics is served there alone and the API
// listener answers 404 for it; without, the API listener serves it.
func TestSecurityMetricsListener(t *testing.T) {
	b := startBroker(t, "", func(c *config.Config) { c.MetricsListen = "127.0.0.1:0" })
	if res := b.do("GET", "/metrics", "", nil); res.Status != 404 || bytes.Contains(res.Body, []byte("eps_http_requests_total")) {
		t.Errorf("/metrics on the API listener: %d", res.Status)
	} else if !res.outcome(t).hasCode("RESOURCE_NOT_FOUND") {
		t.Errorf("/metrics on the API listener: %s", res.Body)
	}
	if b.App.MetricsAddr() == "" {
		t.Fatal("no metrics listener")
	}
	res, err := http.Get("http://" + b.App.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !bytes.Contains(body, []byte("eps_http_requests_total")) || !bytes.Contains(body, []byte("eps_http_refused_total")) {
		t.Errorf("metrics listener: %d %.200s", res.StatusCode, body)
	}
	// Only /metrics there: the API is not reachable through it.
	res, err = http.Get("http://" + b.App.MetricsAddr() + "/FHIR/R4/metadata")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Errorf("the API through the metrics listener: %d", res.StatusCode)
	}

	plain := startBroker(t, "")
	if plain.App.MetricsAddr() != "" {
		t.Error("a metrics listener without --metrics-listen")
	}
	if res := plain.do("GET", "/metrics", "", nil); res.Status != 200 || !bytes.Contains(res.Body, []byte("eps_http_refused_total")) {
		t.Errorf("/metrics on the API listener by default: %d", res.Status)
	}
}
