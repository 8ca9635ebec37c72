package test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// linkAnswer is one order's answer in TestBlackholedNATSLink.
type linkAnswer struct {
	status     int
	retryAfter string
	body       []byte
	sent, at   time.Time
}

// The broker's link to its NATS node is blackholed for good under load:
// packets dropped both ways, the TCP connection left open (the proxy of the
// test reads and writes nothing, so bytes wait in the kernel's buffers and
// then the broker's writes block). The broker must notice the dead link by
// itself (broker.LinkPingInterval, broker.LinkFlusherTimeout: nats.go's
// defaults take minutes, and meanwhile every request waited on the
// connection's lock), reconnect to another node of the cluster (learned
// from the first node's INFO) and serve again. Meanwhile every order is
// answered within the HTTP write timeout, 200 or 503 with Retry-After,
// never 500; afterwards every order answered 200 is stored exactly once and
// every other at most once, and new orders are accepted.
//
// Two cases: "quiet", where the requests' writes fit in the socket
// buffers and the link's pings notice it (broker.LinkPingInterval), and
// "busy", where the test also floods the broker's connection with 32 KiB
// messages (as heavy intake would) until the socket buffers are full and
// nats.go's flusher blocks on the socket holding the connection's lock
// (broker.LinkFlusherTimeout).
//
// The broker is given only the proxy's URL, so that it starts on node 0
// through the proxy whatever nats.go's shuffling of its server list; the
// other nodes' client URLs it learns from the cluster are reachable
// directly, as another node would be in production.
func TestBlackholedNATSLink(t *testing.T) {
	// The slow cluster scenarios run two at a time (go test -parallel,
	// GOMAXPROCS), so that the package stays within go test's 10 minutes.
	t.Parallel()
	t.Run("quiet", func(t *testing.T) { blackholedLink(t, false) })
	t.Run("busy", func(t *testing.T) { blackholedLink(t, true) })
}

func blackholedLink(t *testing.T, flood bool) {
	c := startNATSCluster(t, 3)
	urls := c.ClientURLs()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	link := newRouteProxy(t)
	link.setTarget(strings.TrimPrefix(c.clientURL(0), "nats://"))
	proxyURL := "nats://" + link.addr()
	b := startBroker(t, "", func(cfg *config.Config) { cfg.NATSURL, cfg.Replicas = proxyURL, 3 })
	waitStreamReplicas(t, ctx, urls, 3, broker.StreamEvents, "KV_"+broker.BucketRequests)
	nc := b.App.NATS.Conn
	if got := nc.ConnectedUrl(); got != proxyURL {
		t.Fatalf("broker connected to %s, want the proxy %s", got, proxyURL)
	}
	writeTimeout := b.App.Config().HTTPWriteTimeout
	tok := b.token(auth.RolePrescriber, "A83008")
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: writeTimeout}
	post := func(body []byte) (linkAnswer, error) {
		req, _ := http.NewRequest(http.MethodPost, b.URL+"/FHIR/R4/$process-message", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Request-ID", uuid.NewString())
		sent := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return linkAnswer{}, err
		}
		defer res.Body.Close()
		rb, err := io.ReadAll(res.Body)
		return linkAnswer{status: res.StatusCode, retryAfter: res.Header.Get("Retry-After"), body: rb, sent: sent, at: time.Now()}, err
	}

	const workers, beforeCut, afterReconnect = 6, 30, 30
	var (
		mu      sync.Mutex
		answers = map[string]linkAnswer{} // prescription ID -> answer
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	answered := make(chan struct{}, 1)
	orderWorkers(t, &wg, workers, stop, tmpl, func(g *fhirgen.Generated) bool {
		a, err := post(g.Body)
		if err != nil {
			t.Errorf("order %s not answered within the HTTP write timeout (%v): %v", g.ShortID, writeTimeout, err)
			return false
		}
		switch {
		case a.status == http.StatusOK:
		case a.status == http.StatusServiceUnavailable && a.retryAfter != "":
		default:
			t.Errorf("order %s: %d (Retry-After %q) %.300s, want 200 or 503 with Retry-After", g.ShortID, a.status, a.retryAfter, a.body)
		}
		mu.Lock()
		answers[g.ShortID] = a
		mu.Unlock()
		wake(answered)
		return true
	})
	stopped := false
	stopWorkers := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWorkers()
	// okSince counts the orders answered 200 at or after since.
	okSince := func(since time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range answers {
			if a.status == http.StatusOK && !a.at.Before(since) {
				n++
			}
		}
		return n
	}
	waitOK := func(what string, since time.Time, want int) {
		t.Helper()
		for okSince(since) < want {
			select {
			case <-answered:
			case <-ctx.Done():
				t.Fatalf("%s: %d orders answered 200, want %d", what, okSince(since), want)
			}
		}
	}
	start := time.Now()
	waitOK("before the cut", start, beforeCut)

	cut := time.Now()
	link.setMode(cutDrop)
	var flooded int
	floodDone := make(chan struct{})
	if flood {
		go func() {
			defer close(floodDone)
			msg := make([]byte, 32<<10)
			for nc.ConnectedUrl() == proxyURL && ctx.Err() == nil {
				if err := nc.Publish("test.flood", msg); err != nil {
					return
				}
				flooded += len(msg)
			}
		}()
	} else {
		close(floodDone)
	}
	// The broker notices and reconnects to another node: its connection's
	// server is no longer the proxy (the proxy holds new connections
	// unanswered, so it cannot be the proxy again).
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() || nc.ConnectedUrl() == proxyURL {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the broker did not leave the blackholed link in %v (status %v, server %s)", time.Since(cut), nc.Status(), nc.ConnectedUrl())
		}
	}
	reconnected := time.Now()
	server := nc.ConnectedUrl()
	<-floodDone
	waitReady(t, b, http.StatusOK, 90*time.Second)
	ready := time.Now()
	waitOK("after the reconnect", ready, afterReconnect)
	stopWorkers()

	mu.Lock()
	defer mu.Unlock()
	stored := ordersStored(t, ctx, urls)
	var ok, unavailable, unavailableStored, duringCut, okDuringCut int
	for id, a := range answers {
		n := stored[id]
		if a.status == http.StatusOK {
			ok++
			if n != 1 {
				t.Errorf("order %s answered 200, stored %d times", id, n)
			}
		} else {
			unavailable++
			unavailableStored += n
			if n > 1 {
				t.Errorf("order %s answered %d, stored %d times", id, a.status, n)
			}
		}
		// Hit by the cut: sent before the broker was ready again,
		// answered after the cut.
		if a.at.After(cut) && a.sent.Before(ready) {
			duringCut++
			if a.status == http.StatusOK {
				okDuringCut++
			}
		}
	}
	t.Logf("link blackholed (flood %v: %d KiB published into it): reconnected to %s after %v (ready after %v); orders in flight at the cut or sent before ready: %d (%d 200, %d 503); in all %d orders answered 200 (each stored once), %d answered 503 (%d of them stored: outcome unknown to the client, a resend with the same X-Request-ID gets 200)",
		flood, flooded>>10, server, reconnected.Sub(cut).Round(time.Millisecond), ready.Sub(cut).Round(time.Millisecond),
		duringCut, okDuringCut, duringCut-okDuringCut, ok, unavailable, unavailableStored)
}
