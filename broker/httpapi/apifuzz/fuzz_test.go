package apifuzz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// fzMethods, fzRoles and fzTypes are what the fuzz target's small integers
// choose among.
var (
	fzMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodPatch}
	fzRoles   = []struct {
		role auth.Role
		ods  string
	}{{"", ""}, {auth.RolePrescriber, "A83008"}, {auth.RoleDispenser, "FA565"}, {auth.RoleTracker, "X26"}, {auth.RoleAdmin, "X26"}}
	fzTypes = []string{"application/fhir+json", "application/json", "application/x-ndjson", "text/csv", "application/fhir+xml", ""}
)

// fzOutcome is what the target reads of an OperationOutcome.
type fzOutcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity string `json:"severity"`
		Code     string `json:"code"`
		Details  struct {
			Coding []struct{ Code string } `json:"coding"`
		} `json:"details"`
		Diagnostics string `json:"diagnostics"`
	} `json:"issue"`
}

// FuzzHTTP sends the whole HTTP API (a broker with its embedded NATS, one per
// fuzzing process) fuzzed requests: any method, path, query string, body,
// media type, X-Request-ID and role. That reaches every decoder of a
// client's input: the FHIR messages of $process-message, $validate,
// Task/$release, Task and Claim, the tracker's search and detail parameters
// (prescriptionId, nhsNumber, issueNumber), the audit list's, the
// nomination change body, the nomination import (NDJSON and CSV) and the
// reports' parameters, and the tracker page's sign-in body. Bad input never
// answers 5xx (but 503, retry, when the machine is too slow); every error
// of the API is a complete OperationOutcome; every answer says nosniff; a
// request without a token is 401 on the API.
func FuzzHTTP(f *testing.F) {
	tpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		f.Fatal(err)
	}
	g, err := tpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565"})
	if err != nil {
		f.Fatal(err)
	}
	const fhirJSON, ndjson, csv = 0, 2, 3
	const get, post, put, del = 0, 1, 2, 3
	const none, prescriber, dispenser, tracker, admin = 0, 1, 2, 3, 4
	cancel, _ := fhirgen.Cancellation(g, g.ItemIDs[0], "0001")
	dn, dnID := fhirgen.DispenseNotification(g, "FA565", map[string]string{g.ItemIDs[0]: "0001"}, "0003", "")
	claim, _ := fhirgen.Claim(g, "FA565", "")
	nhsFixture, err := os.ReadFile("../../../test/testdata/nhs/nhs-eps-api/primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []struct {
		method     uint8
		path, q    string
		body       []byte
		role, ct   uint8
		xRequestID string
	}{
		{post, "/FHIR/R4/$process-message", "", g.Body, prescriber, fhirJSON, "r1"},
		{post, "/FHIR/R4/$validate", "", fhirgen.Redate(nhsFixture, time.Now()), prescriber, fhirJSON, ""},
		{post, "/FHIR/R4/$process-message", "", cancel, prescriber, fhirJSON, ""},
		{post, "/FHIR/R4/Task/$release", "", fhirgen.Release("FA565", g.ShortID), dispenser, fhirJSON, ""},
		{post, "/FHIR/R4/Task/$release", "", fhirgen.Release("FA565", ""), dispenser, fhirJSON, "r2"},
		{post, "/FHIR/R4/$process-message", "", dn, dispenser, fhirJSON, ""},
		{post, "/FHIR/R4/Task", "", fhirgen.WithdrawTask(g, "FA565", dnID, "MIS"), dispenser, fhirJSON, ""},
		{post, "/FHIR/R4/Task", "", fhirgen.ReturnTask(g, "FA565", "0002"), dispenser, fhirJSON, ""},
		{post, "/FHIR/R4/Claim", "", claim, dispenser, fhirJSON, ""},
		{get, "/FHIR/R4/RequestGroup", "prescriptionId=" + g.ShortID, nil, tracker, fhirJSON, ""},
		{get, "/FHIR/R4/RequestGroup", "nhsNumber=" + g.NHSNumber + "&prescriptionId=x", nil, tracker, fhirJSON, ""},
		{get, "/FHIR/R4/RequestGroup", "nhsNumber=%zz", nil, prescriber, fhirJSON, ""},
		{get, "/FHIR/R4/RequestGroup/" + g.ShortID, "issueNumber=99999999999999999999", nil, dispenser, fhirJSON, ""},
		{get, "/FHIR/R4/RequestGroup/", "", nil, tracker, fhirJSON, ""},
		{get, "/FHIR/R4/metadata", "", nil, none, fhirJSON, ""},
		{get, "/api/v1/audit", "user=x&nhsNumber=" + g.NHSNumber + "&limit=5", nil, admin, fhirJSON, ""},
		{get, "/api/v1/nominations/" + g.NHSNumber, "", nil, admin, fhirJSON, ""},
		{put, "/api/v1/nominations/" + g.NHSNumber + "/P1", "", []byte(`{"ods":"FA565"}`), admin, fhirJSON, "r3"},
		{del, "/api/v1/nominations/" + g.NHSNumber + "/p1", "", nil, admin, fhirJSON, ""},
		{post, "/api/v1/nominations/import", "", []byte(`{"nhsNumber":"` + g.NHSNumber + `","type":"P1","ods":"FA565"}` + "\n"), admin, ndjson, ""},
		{post, "/api/v1/nominations/import", "dryRun=true", []byte("nhsNumber,type,ods\n" + g.NHSNumber + ",P1,FA565\n"), admin, csv, ""},
		{get, "/api/v1/nominations/reports/dispensers/FA565", "from=2026-01-01&to=2026-12-31&limit=3", nil, admin, fhirJSON, ""},
		{get, "/api/v1/nominations/reports/summary", "days=30", nil, admin, fhirJSON, ""},
		{post, "/tracker/session", "", []byte(`{"token":"a.b.c"}`), none, 1, ""},
		{get, "/tracker/session", "", nil, tracker, fhirJSON, ""},
		{get, "/tracker/assets/app.js", "", nil, none, fhirJSON, ""},
		{post, "/FHIR/R4/$process-message", "", []byte(`{"resourceType":"Bundle","type":"message","entry":[{},{}]}`), none, fhirJSON, ""},
	} {
		f.Add(s.method, s.path, s.q, s.body, s.role, s.ct, s.xRequestID)
	}

	cfg := config.Default()
	cfg.DataDir = f.TempDir()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.JetStreamSync = "1m"              // no fsync per write: the target is the decoding, not durability
	cfg.RateLimit, cfg.RateLimitIP = 0, 0 // nor throttling: a fuzzer sends thousands of requests a second
	ctx, stop := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, zap.NewNop(), nil)
	if err != nil {
		stop()
		f.Fatal(err)
	}
	if err := a.Listen(); err != nil { // Serve drains and closes everything when ctx ends
		stop()
		f.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx) }()
	f.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			f.Errorf("broker stopped with %v", err)
		}
	})
	tokens := make([]string, len(fzRoles))
	for i, r := range fzRoles[1:] {
		if tokens[i+1], err = auth.Mint(a.IssuerKey, cfg.JWTIssuer, cfg.JWTAudience,
			auth.Principal{Subject: string(r.role) + "-fuzz", ODS: r.ods, Role: r.role}, 24*time.Hour, time.Now()); err != nil {
			f.Fatal(err)
		}
	}
	h := a.Handler()

	f.Fuzz(func(t *testing.T, method uint8, path, query string, body []byte, role, ct uint8, xRequestID string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		u := &url.URL{Path: path, RawQuery: query}
		m := fzMethods[int(method)%len(fzMethods)]
		r := httptest.NewRequest(m, "/", bytes.NewReader(body))
		r.URL, r.RequestURI, r.Host = u, u.RequestURI(), "127.0.0.1"
		r.Header.Set("X-EPS-Tracker", "1")
		if c := fzTypes[int(ct)%len(fzTypes)]; c != "" {
			r.Header.Set("Content-Type", c)
		}
		if validHeaderValue(xRequestID) {
			r.Header.Set("X-Request-ID", xRequestID)
		}
		roleIdx := int(role) % len(fzRoles)
		if roleIdx > 0 {
			r.Header.Set("Authorization", "Bearer "+tokens[roleIdx])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		res := w.Result()
		got, _ := io.ReadAll(res.Body)
		status := res.StatusCode
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("%s %s: %d without nosniff", m, u, status)
		}
		if status >= 300 && status < 400 {
			return // the router's redirect to the clean path
		}
		api := strings.HasPrefix(u.Path, "/FHIR/") || strings.HasPrefix(u.Path, "/api/")
		if status >= 500 && status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: %d: %s", m, u, status, got)
		}
		// CONTRACT.md: every request under /FHIR/R4/ and /api/ but the
		// metadata carries a token.
		guarded := strings.HasPrefix(u.Path, "/FHIR/R4/") || strings.HasPrefix(u.Path, "/api/")
		if guarded && roleIdx == 0 && u.Path != "/FHIR/R4/metadata" && status != http.StatusUnauthorized {
			t.Fatalf("%s %s without a token: %d", m, u, status)
		}
		if m == http.MethodHead {
			return
		}
		if status >= 400 && (api || u.Path == "/tracker/session") { // not /tracker/session0: a page path
			var oo fzOutcome
			if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/fhir+json") || json.Unmarshal(got, &oo) != nil ||
				oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
				t.Fatalf("%s %s: %d %q: not an OperationOutcome: %s", m, u, status, res.Header.Get("Content-Type"), got)
			}
			for _, is := range oo.Issue {
				if is.Severity != "error" || is.Code == "" || len(is.Details.Coding) == 0 || is.Details.Coding[0].Code == "" || is.Diagnostics == "" {
					t.Fatalf("%s %s: %d: incomplete issue: %s", m, u, status, got)
				}
			}
			return
		}
		if strings.HasPrefix(res.Header.Get("Content-Type"), "application/fhir+json") && !json.Valid(got) {
			t.Fatalf("%s %s: %d: answer is not JSON: %s", m, u, status, got)
		}
	})
}

// validHeaderValue reports whether an HTTP client could send s as a header
// value (a server refuses control characters before any handler runs).
func validHeaderValue(s string) bool {
	if s == "" || strings.TrimSpace(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}
