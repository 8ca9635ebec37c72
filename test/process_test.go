package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds epsbroker and epsctl once per test run.
func binaries(t *testing.T) (epsbroker, epsctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "epsbin")
		if buildErr != nil {
			return
		}
		for _, name := range []string{"epsbroker", "epsctl"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name), "../cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "epsbroker"), filepath.Join(binDir, "epsctl")
}

func TestMain(m *testing.M) {
	// Broker processes stop at once on SIGTERM (drain_test.go tests the
	// shutdown delay, setting it on its own command line).
	os.Setenv("EPS_SHUTDOWN_DELAY", "0")
	// The cluster scenarios (t.Parallel) mostly wait on elections, timeouts
	// and restarts, not on the CPU: four at a time by default (not two, as
	// GOMAXPROCS on a 2-core runner would give), so that the package stays
	// within go test's 10 minutes. An explicit -parallel is kept.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", strconv.Itoa(max(4, runtime.GOMAXPROCS(0))))
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// brokerProcess is epsbroker running as its own process.
type brokerProcess struct {
	cmd  *exec.Cmd
	URL  string
	logs *bytes.Buffer
	done chan error    // receives the exit once
	gone chan struct{} // closed when the process has exited
}

// startProcess runs the epsbroker binary on dir and waits until it serves.
func startProcess(t *testing.T, dir string, extra ...string) *brokerProcess {
	t.Helper()
	bin, _ := binaries(t)
	args := append([]string{"--data-dir", dir, "--http-addr", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &brokerProcess{cmd: cmd, logs: &bytes.Buffer{}, done: make(chan error, 1), gone: make(chan struct{})}
	addr := make(chan string, 1)
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			mu.Lock()
			p.logs.Write(line)
			p.logs.WriteByte('\n')
			mu.Unlock()
			var l struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(line, &l) == nil && l.Msg == "epsbroker serving" {
				addr <- l.Addr
			}
		}
		io.Copy(io.Discard, stderr)
		err := cmd.Wait()
		close(p.gone)
		p.done <- err
	}()
	select {
	case a := <-addr:
		p.URL = a
	case err := <-p.done:
		t.Fatalf("epsbroker exited before serving (%v):\n%s", err, p.logs)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("epsbroker did not start in 60s:\n%s", p.logs)
	}
	t.Cleanup(func() {
		select {
		case <-p.gone:
		default:
			cmd.Process.Kill()
			<-p.gone
		}
	})
	return p
}

func post(t *testing.T, url, token string, body []byte) (int, []byte, error) {
	req, _ := http.NewRequest("POST", url+"/FHIR/R4/$process-message", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, err
}

// prescriberProcess starts the broker binary on a fresh data dir and
// returns it with a prescriber's token from its issuer key and the 4-item
// order template, for the tests that kill it.
func prescriberProcess(t *testing.T) (string, *brokerProcess, string, *fhirgen.Template) {
	t.Helper()
	dir := t.TempDir()
	p := startProcess(t, dir)
	key, err := auth.LoadOrCreateIssuerKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := auth.Mint(key, auth.DefaultIssuer, auth.DefaultAudience, auth.Principal{Subject: "gp", ODS: "A83008", Role: auth.RolePrescriber}, time.Hour, time.Now())
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	return dir, p, tok, tmpl
}

// Orders acknowledged before the broker process is killed (SIGKILL, no
// clean shutdown) are all there after a restart on the same data dir.
func TestAcknowledgedOrdersSurviveSIGKILL(t *testing.T) {
	dir, p, tok, tmpl := prescriberProcess(t)

	const workers, killAfter = 16, 150
	var (
		mu    sync.Mutex
		acked []*fhirgen.Generated
		n     atomic.Int64
		wg    sync.WaitGroup
	)
	killed := make(chan struct{})
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-killed:
					return
				default:
				}
				g, _ := tmpl.Order(fhirgen.Options{})
				status, _, err := post(t, p.URL, tok, g.Body)
				if err != nil {
					return // the broker is gone
				}
				if status == 200 {
					mu.Lock()
					acked = append(acked, g)
					mu.Unlock()
					if n.Add(1) == killAfter {
						// Kill while the other workers' requests are in flight.
						p.cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-killed:
	default: // the workers stopped early: kill anyway, and fail below
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
	if len(acked) < killAfter {
		t.Fatalf("only %d orders acknowledged before the kill:\n%s", len(acked), p.logs)
	}

	p2 := startProcess(t, dir)
	lost := 0
	for _, g := range acked {
		other, _ := tmpl.Order(fhirgen.Options{ShortID: g.ShortID})
		status, body, err := post(t, p2.URL, tok, other.Body)
		if err != nil {
			t.Fatal(err)
		}
		if status != 400 || !bytes.Contains(body, []byte("DUPLICATE_PRESCRIPTION_ID")) {
			lost++
			t.Errorf("acknowledged %s is not in the store after the kill: %d %s", g.ShortID, status, body)
		}
	}
	t.Logf("%d orders acknowledged before SIGKILL; %d lost after restart", len(acked), lost)
	p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.done
}

// SIGTERM drains and exits 0; so does SIGINT.
func TestSignalsDrainAndExitZero(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		p := startProcess(t, t.TempDir())
		if err := p.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-p.done:
			if err != nil {
				t.Errorf("%v: exit %v:\n%s", sig, err, p.logs)
			}
			if !strings.Contains(p.logs.String(), "epsbroker stopped") {
				t.Errorf("%v: no drain in the logs:\n%s", sig, p.logs)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%v: still running after 30s", sig)
		}
	}
}

// The README's quick start: epsctl token prints one token that the broker
// started on the same data dir accepts.
func TestEpsctlTokenWorksWithTheBroker(t *testing.T) {
	dir := t.TempDir()
	p := startProcess(t, dir)
	_, epsctl := binaries(t)
	out, err := exec.Command(epsctl, "token", "--data-dir", dir, "--role", "prescriber", "--ods", "A83008").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) != 1 {
		t.Fatalf("epsctl token printed %d lines", len(lines))
	}
	body := readFile(t, filepath.Join(fixtures, "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json"))
	status, res, err := post(t, p.URL, lines[0], body)
	if err != nil || status != 200 {
		t.Fatalf("post with the epsctl token: %d %s %v", status, res, err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
}
