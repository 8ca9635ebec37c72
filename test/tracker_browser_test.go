package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// chromiumPath finds a Chromium or Chrome binary: Debian's chromium first,
// then the usual names on PATH. It answers "" when there is none.
func chromiumPath() string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browserLog collects what the page and the network did, from the browser's
// event loop, for the test to read afterwards.
type browserLog struct {
	mu         sync.Mutex
	searches   int      // requests to /FHIR/R4/RequestGroup (search and detail)
	exceptions []string // uncaught JavaScript exceptions
	console    []string // console errors and warnings
	responses  []string // "STATUS METHOD URL" of the page's API calls
}

func (l *browserLog) listen(ev any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		if e.Request != nil && strings.Contains(e.Request.URL, "/FHIR/R4/RequestGroup") {
			l.searches++
		}
	case *network.EventResponseReceived:
		if e.Response != nil && (strings.Contains(e.Response.URL, "/FHIR/") || strings.Contains(e.Response.URL, "/tracker")) {
			l.responses = append(l.responses, fmt.Sprintf("%d %s", e.Response.Status, e.Response.URL))
		}
	case *runtime.EventExceptionThrown:
		if d := e.ExceptionDetails; d != nil {
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			l.exceptions = append(l.exceptions, msg)
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
			var parts []string
			for _, a := range e.Args {
				if a == nil {
					continue
				}
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			l.console = append(l.console, fmt.Sprintf("console.%s: %s", e.Type, strings.Join(parts, " ")))
		}
	}
}

func (l *browserLog) searchCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.searches
}

func (l *browserLog) report(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t.Failed() {
		for _, r := range l.responses {
			t.Logf("browser response: %s", r)
		}
	}
	for _, c := range l.console {
		t.Logf("browser %s", c)
	}
	for _, e := range l.exceptions {
		t.Errorf("JavaScript exception on the page: %s", e)
	}
}

// TestTrackerPage drives the tracker web page in headless Chromium: sign in
// with a token, find a prescription by ID, open it, read its status and
// history, and see invalid input refused in words before anything is sent;
// find an electronic repeat dispensing prescription (a row per issue, "eRD
// n of N") and step through its issues in the detail.
func TestTrackerPage(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no Chromium or Chrome binary (looked for /usr/bin/chromium and chromium, chromium-browser, google-chrome, headless-shell on PATH): install one (Debian: apt-get install chromium) to run the browser test")
	}

	b := startBroker(t, "")
	const id = "24F5DA-A83008-7EFE6Z"
	order := currentOrder(t, readFile(t, filepath.Join(fixtures, "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json")), time.Now())
	if res := b.post(b.token(auth.RolePrescriber, "A83008"), order); res.Status != 200 {
		t.Fatalf("posting the order: %d %s", res.Status, res.Body)
	}
	// A repeat dispensing prescription of 6 issues, dated today.
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	erd, err := tmpl.Order(fhirgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	erd.Body = fhirgen.RepeatDispensing(erd.Body, 5, 28, time.Now().UTC().Truncate(24*time.Hour))
	if res := b.post(b.token(auth.RolePrescriber, erd.Sender), erd.Body); res.Status != 200 {
		t.Fatalf("posting the eRD order: %d %s", res.Status, res.Body)
	}
	b.settle()
	trackerToken := b.token(auth.RoleTracker, "A83008")
	waitSearchable(t, b, trackerToken, id)
	waitSearchable(t, b, trackerToken, erd.ShortID)

	bctx, log, stop := startChromium(t, chromium, 60*time.Second)
	defer stop()
	defer log.report(t)

	shots := t.TempDir()
	screenshot := func(name string) string {
		sctx, c := context.WithTimeout(bctx, 10*time.Second)
		defer c()
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Logf("screenshot %s: %v", name, err)
			return ""
		}
		path := filepath.Join(shots, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Errorf("saving the screenshot: %v", err)
			return ""
		}
		// EPS_TRACKER_SCREENSHOTS keeps a copy (for CI artefacts or a look).
		if dir := os.Getenv("EPS_TRACKER_SCREENSHOTS"); dir != "" {
			if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
				t.Logf("copying the screenshot to %s: %v", dir, err)
			}
		}
		return path
	}
	text := func(sel chromedp.CSS) string {
		sctx, c := context.WithTimeout(bctx, 5*time.Second)
		defer c()
		s, err := chromedp.Run(sctx, chromedp.Text(sel))
		if err != nil {
			return fmt.Sprintf("(%s not readable: %v)", sel, err)
		}
		return s
	}
	// step runs actions with a time limit; on failure it says what the page
	// showed and keeps a screenshot.
	step := func(what string, limit time.Duration, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, limit)
		defer c()
		if err := chromedp.Do(sctx, actions...); err != nil {
			if errors.Is(bctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("%s: the test ran out of its 60s: %v", what, err)
			}
			shot := screenshot("failure.png")
			t.Fatalf("%s: %v\n#message: %q\n#token-error: %q\n#query-error: %q\nscreenshot: %s",
				what, err, text("#message"), text("#token-error"), text("#query-error"), shot)
		}
	}
	// poll waits for a JavaScript condition on the page.
	poll := func(what, expr string) {
		t.Helper()
		step(what, 15*time.Second, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(14*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			return chromedp.Void{}, err
		})
	}

	// Open the page: not signed in, so it asks for a token.
	step("open the page", 15*time.Second,
		chromedp.EmulateViewport(1366, 768),
		chromedp.Navigate(b.URL+"/tracker"),
		chromedp.WaitVisible(chromedp.ID("token")),
	)

	// Sign in with a tracker token.
	step("sign in", 15*time.Second,
		chromedp.SetValue(chromedp.ID("token"), trackerToken),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("query")),
		chromedp.WaitVisible(chromedp.ID("sign-out")),
	)
	if got := text("#session-user"); !strings.Contains(got, "tracker-user-A83008") {
		t.Errorf("the header shows user %q, want tracker-user-A83008", got)
	}
	if got := text("#session-role"); !strings.Contains(strings.ToLower(got), "tracker") {
		t.Errorf("the header shows role %q, want tracker", got)
	}

	// Search by ID: typed, then Enter.
	rowButton := chromedp.CSS(`#results button[data-id="` + id + `"]`)
	step("search by prescription ID", 15*time.Second,
		chromedp.SendKeys(chromedp.ID("query"), id+kb.Enter),
		chromedp.WaitVisible(chromedp.ID("results")),
		chromedp.WaitVisible(rowButton),
	)
	results := text("#results")
	for _, want := range []string{id, "Current prescriptions", "To Be Dispensed", "Acute"} {
		if !strings.Contains(results, want) {
			t.Errorf("the results do not show %q:\n%s", want, results)
		}
	}
	screenshot("tracker-results.png")

	// Open the prescription.
	step("open the prescription", 15*time.Second,
		chromedp.Click(rowButton),
		chromedp.WaitVisible(chromedp.ID("detail")),
		chromedp.WaitVisible(chromedp.CSS("#timeline li")),
	)
	if got := text("#status"); !strings.Contains(got, "To Be Dispensed") {
		t.Errorf("#status shows %q, want To Be Dispensed", got)
	}
	n, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline li').length`))
	if err != nil || n < 1 {
		t.Errorf("#timeline has %d entries (%v), want at least 1", n, err)
	}
	detail := text("#detail")
	for _, want := range []string{id, "Patient", "NHS number", "Date of birth", "Prescriber", "A83008",
		"Nominated dispenser", "Current dispenser", "Items", "History"} {
		if !strings.Contains(detail, want) {
			t.Errorf("the detail does not show %q:\n%s", want, detail)
		}
	}
	focused, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.activeElement ? document.activeElement.id : ''`))
	if focused != "detail-heading" {
		t.Errorf("after opening the detail, focus is on #%s, want the detail's heading", focused)
	}

	// The page reads what is typed as an ID or an NHS number as the broker
	// does: trimmed, upper-cased, dashes optional, '+' a check character.
	for _, tc := range []struct{ input, want string }{
		{" 24f5da-a83008-7efe6z ", "id 24F5DA-A83008-7EFE6Z"},
		{"24F5DAA830087EFE6Z", "id 24F5DA-A83008-7EFE6Z"},
		{"7B7EF0-A83008-0001F+", "id 7B7EF0-A83008-0001F+"},
		{"973 273 0684", "nhs 9732730684"},
		{"9732730685", "error"},
		{"24F5DA-A83008-7EFE6Y", "error"},
		{"G4F5DA-A83008-7EFE6Z", "error"},
		{"12345", "error"},
		{"", "error"},
	} {
		got, err := chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(
			`(q => q.error ? 'error' : q.kind + ' ' + q.value)(window.epsTracker.parseQuery(%q))`, tc.input)))
		if err != nil || got != tc.want {
			t.Errorf("parseQuery(%q) = %q (%v), want %q", tc.input, got, err, tc.want)
		}
	}

	// Invalid input is refused in words, next to the field, and not sent.
	before := log.searchCount()
	for _, tc := range []struct{ input, want string }{
		{"24F5DA-A83008-7EFE6A", "not a valid prescription ID"},
		{"973 273 0685", "not a valid NHS number"},
	} {
		step("type "+tc.input, 10*time.Second,
			clearField("query"),
			chromedp.SendKeys(chromedp.ID("query"), tc.input),
			chromedp.Click(chromedp.ID("search")),
		)
		poll("the error for "+tc.input, `document.getElementById('query-error').textContent.trim() !== ''`)
		if got := text("#query-error"); !strings.Contains(got, tc.want) {
			t.Errorf("for %q the field says %q, want it to say %q", tc.input, got, tc.want)
		}
		attrs, err := chromedp.Run(bctx, chromedp.Attributes(chromedp.ID("query")))
		if err != nil {
			t.Fatal(err)
		}
		if attrs["aria-invalid"] != "true" || !strings.Contains(attrs["aria-describedby"], "query-error") {
			t.Errorf("#query has aria-invalid=%q aria-describedby=%q; want true and one naming #query-error", attrs["aria-invalid"], attrs["aria-describedby"])
		}
		role, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('query-error').getAttribute('role') || ''`))
		if role != "alert" {
			t.Errorf("#query-error has role %q, want alert", role)
		}
	}
	time.Sleep(200 * time.Millisecond) // a request, had one been sent, would have shown by now
	if after := log.searchCount(); after != before {
		t.Errorf("invalid input sent %d request(s) to the broker", after-before)
	}

	// A repeat dispensing prescription: a row per issue, "eRD n of N".
	erdRow := func(n int) chromedp.CSS {
		return chromedp.CSS(fmt.Sprintf(`#results button[data-id="%s"][data-issue="%d"]`, erd.ShortID, n))
	}
	step("search the eRD prescription", 15*time.Second,
		clearField("query"),
		chromedp.SendKeys(chromedp.ID("query"), erd.ShortID+kb.Enter),
		chromedp.WaitVisible(erdRow(1)),
		chromedp.WaitVisible(erdRow(6)),
	)
	rows, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll('#results button[data-id]').length`))
	if err != nil || rows != 6 {
		t.Errorf("the eRD search shows %d rows (%v), want 6", rows, err)
	}
	results = text("#results")
	for _, want := range []string{"Current prescriptions (1)", "Future prescriptions (5)", "eRD 1 of 6", "eRD 2 of 6", "eRD 6 of 6",
		"To Be Dispensed", "Repeat Dispense future instance"} {
		if !strings.Contains(results, want) {
			t.Errorf("the eRD results do not show %q:\n%s", want, results)
		}
	}
	screenshot("tracker-erd-results.png")

	disabled := func(id string) bool {
		d, err := chromedp.Run(bctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.getElementById(%q).disabled`, id)))
		if err != nil {
			t.Errorf("#%s: %v", id, err)
		}
		return d
	}
	// expectIssue waits until the detail shows issue n of 6 and checks its
	// status and the buttons.
	expectIssue := func(n int, status string) {
		t.Helper()
		poll(fmt.Sprintf("issue %d of 6", n), fmt.Sprintf(`(e => !!e && e.textContent.includes('Issue %d of 6'))(document.getElementById('issue-label'))`, n))
		if got := text("#status"); !strings.Contains(got, status) {
			t.Errorf("issue %d: #status shows %q, want %q", n, got, status)
		}
		if got := text("#issue-label"); !strings.Contains(got, status) {
			t.Errorf("issue %d: the issue bar shows %q, want the status %q", n, got, status)
		}
		if got := text("#type"); got != fmt.Sprintf("eRD %d of 6", n) {
			t.Errorf("issue %d: type %q", n, got)
		}
		if prev, next := disabled("issue-previous"), disabled("issue-next"); prev != (n == 1) || next != (n == 6) {
			t.Errorf("issue %d: Previous disabled %v, Next disabled %v", n, prev, next)
		}
	}
	step("open issue 1", 15*time.Second,
		chromedp.Click(erdRow(1)),
		chromedp.WaitVisible(chromedp.ID("issue-label")),
	)
	expectIssue(1, "To Be Dispensed")
	step("next issue", 10*time.Second, chromedp.Click(chromedp.ID("issue-next")))
	expectIssue(2, "Repeat Dispense future instance")
	if got := text("#available-from"); strings.HasPrefix(got, "(") {
		t.Errorf("issue 2 does not say when it becomes available: %s", got)
	}
	if got := text("#timeline"); !strings.Contains(got, "Prescription upload successful") {
		t.Errorf("issue 2 history: %q", got)
	}
	screenshot("tracker-erd-issue-2.png")
	step("previous issue", 10*time.Second, chromedp.Click(chromedp.ID("issue-previous")))
	expectIssue(1, "To Be Dispensed")
	// Back to the results, and the last issue from its row.
	step("back to the results and open issue 6", 15*time.Second,
		chromedp.Click(chromedp.ID("back")),
		chromedp.WaitVisible(erdRow(6)),
		chromedp.Click(erdRow(6)),
	)
	expectIssue(6, "Repeat Dispense future instance")
	log.mu.Lock()
	asked := strings.Join(log.responses, "\n")
	log.mu.Unlock()
	for _, want := range []string{"?issueNumber=1", "?issueNumber=2", "?issueNumber=6"} {
		if !strings.Contains(asked, want) {
			t.Errorf("the page did not ask for %s:\n%s", want, asked)
		}
	}

	path := screenshot("tracker.png")
	if path == "" {
		t.Error("no screenshot saved")
	} else {
		t.Logf("screenshot of the page: %s", path)
	}

	// Sign out: the page forgets what it showed and asks for a token again,
	// also after a reload (the session has ended on the server).
	step("sign out", 15*time.Second,
		chromedp.Click(chromedp.ID("sign-out")),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	if left, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.getElementById('results').textContent + document.getElementById('detail').textContent`)); strings.Contains(left, id) || strings.Contains(left, erd.ShortID) {
		t.Errorf("after sign-out the page still shows a prescription: %q", left)
	}
	step("reload after sign-out", 15*time.Second,
		chromedp.Reload(),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
}

// clearField empties a text field, as selecting its text and deleting it
// would. (chromedp.SetValue cannot set "": it reports that it failed.)
func clearField(id string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Evaluate[bool](fmt.Sprintf(`(el => (el.value = '', el.dispatchEvent(new Event('input', {bubbles: true})), true))(document.getElementById(%q))`, id))(ctx, t)
		return chromedp.Void{}, err
	}
}

// waitSearchable waits until the broker's tracker finds the prescription, so
// that the page is not tested against an index that has not caught up.
func waitSearchable(t *testing.T, b *testBroker, token, id string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last *response
	for time.Now().Before(deadline) {
		last = b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+url.QueryEscape(id), token, nil)
		var bundle struct {
			Total int `json:"total"`
		}
		if last.Status == 200 && json.Unmarshal(last.Body, &bundle) == nil && bundle.Total > 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the tracker API does not find %s yet (last answer %d %s); trying the page anyway", id, last.Status, last.Body)
}

// startChromium starts headless Chromium for a page test, with a browser
// log; stop ends it (defer it before log.report, so that the log is
// reported first and Chromium has exited before its user-data-dir is
// removed). timeout bounds the whole test's browser work.
func startChromium(t *testing.T, chromium string, timeout time.Duration) (context.Context, *browserLog, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 768),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx)
	stop := func() { cancelBrowser(); cancelAlloc(); cancel() }
	log := &browserLog{}
	// The first call starts the browser: no timeout of its own (see chromedp.Run).
	if err := chromedp.Listen(bctx, log.listen); err != nil {
		stop()
		t.Fatalf("starting Chromium (%s): %v", chromium, err)
	}
	return bctx, log, stop
}
