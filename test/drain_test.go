package test

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A graceful stop (SIGTERM) first keeps serving for --shutdown-delay with
// /readyz answering 503 ("stopping") and every answer closing its
// connection, so that load balancers stop sending before the listener
// closes: an order sent during the delay on a keep-alive connection opened
// before the signal is answered 200; then the process drains and exits 0.
func TestShutdownDelayServesThenExitsZero(t *testing.T) {
	dir := t.TempDir()
	// Long enough for a loaded machine to see /readyz turn and send an
	// order inside it; nothing here waits for it to pass but the exit.
	p := startProcess(t, dir, "--shutdown-delay", "10s")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, epsctl := binaries(t)
	out, err := exec.Command(epsctl, "token", "--data-dir", dir, "--role", "prescriber", "--ods", "A83008").Output()
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(out))

	readyz := func(c *http.Client) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.URL+"/readyz", nil)
		res, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return res.StatusCode, string(b), err
	}
	// A client keeping one connection alive, opened while the broker is
	// ready (as a load balancer's pool is).
	kept := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	for {
		status, _, err := readyz(kept)
		if err == nil && status == 200 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz never 200 (%d, %v):\n%s", status, err, p.logs)
		case <-time.After(100 * time.Millisecond):
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		status, body, err := readyz(fresh)
		if err != nil {
			t.Fatalf("/readyz after SIGTERM: %v (the listener closed before the shutdown delay)\n%s", err, p.logs)
		}
		if status == 503 {
			if !strings.Contains(body, "stopping") {
				t.Errorf("/readyz 503 while stopping says %q, want it to name stopping", body)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz still %d after SIGTERM", status)
		case <-time.After(20 * time.Millisecond):
		}
	}

	body := readFile(t, filepath.Join(fixtures, "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json"))
	req, _ := http.NewRequestWithContext(ctx, "POST", p.URL+"/FHIR/R4/$process-message", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := kept.Do(req)
	if err != nil {
		t.Fatalf("order on a kept-alive connection during the shutdown delay: %v\n%s", err, p.logs)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("order during the shutdown delay: %d, want 200", res.StatusCode)
	}
	if !res.Close { // net/http reads Connection: close into Close
		t.Error("answer during the shutdown delay without Connection: close")
	}

	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit %v after the shutdown delay:\n%s", err, p.logs)
		}
		if !strings.Contains(p.logs.String(), "epsbroker stopped") {
			t.Errorf("no drain in the logs:\n%s", p.logs)
		}
	case <-ctx.Done():
		t.Fatalf("still running after the shutdown delay:\n%s", p.logs)
	}
}
