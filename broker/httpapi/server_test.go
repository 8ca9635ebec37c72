package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// order is a body that $process-message hands to the (fake) intake.
const order = `{"resourceType":"Bundle","type":"message"}`

// Authentication: no, bad or unusable credentials are 401 (with
// WWW-Authenticate), a session cookie outside the tracker page 403, a store
// that cannot check a session 503; none of them reaches the service.
func TestAuthenticationRefusals(t *testing.T) {
	cases := []struct {
		name   string
		req    req
		edit   func(*fixture)
		status int
		code   string
	}{
		{name: "no token", req: req{method: "POST", path: "/FHIR/R4/$process-message", body: order},
			status: 401, code: fhir.CodeUnauthorised},
		{name: "bad token", req: req{method: "POST", path: "/FHIR/R4/$process-message", body: order, token: "forged"},
			status: 401, code: fhir.CodeUnauthorised},
		{name: "basic auth", req: req{method: "POST", path: "/FHIR/R4/$process-message", body: order,
			header: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}}, status: 401, code: fhir.CodeUnauthorised},
		{name: "no token on a tracker read", req: req{method: "GET", path: "/FHIR/R4/RequestGroup?nhsNumber=9449305552"},
			status: 401, code: fhir.CodeUnauthorised},
		{name: "no token on an unknown API path", req: req{method: "GET", path: "/FHIR/R4/Patient"},
			status: 401, code: fhir.CodeUnauthorised},
		{name: "cookie without the tracker header", req: req{method: "GET", path: "/tracker/session",
			header: map[string]string{"Cookie": "eps_session=cookie-1"}}, status: 403, code: fhir.CodeAccessDenied},
		{name: "cookie of an ended session", req: req{method: "GET", path: "/tracker/session",
			header: map[string]string{"Cookie": "eps_session=gone", trackerHeader: "1"}}, status: 401, code: fhir.CodeUnauthorised},
		{name: "sessions unreachable", req: req{method: "GET", path: "/tracker/session",
			header: map[string]string{"Cookie": "eps_session=cookie-1", trackerHeader: "1"}},
			edit: func(f *fixture) { f.sessions.err = errStore }, status: 503, code: fhir.CodeServiceUnavailable},
		{name: "cookie on a write", req: req{method: "POST", path: "/FHIR/R4/$process-message", body: order,
			header: map[string]string{"Cookie": "eps_session=cookie-1", trackerHeader: "1"}}, status: 401, code: fhir.CodeUnauthorised},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			if c.edit != nil {
				c.edit(f)
			}
			w := f.do(c.req)
			wantOutcome(t, w, c.status, c.code)
			if got := w.Header().Get("WWW-Authenticate"); (c.status == 401) != (got != "") {
				t.Errorf("WWW-Authenticate %q on a %d", got, c.status)
			}
			if f.intake.calls() != 0 {
				t.Error("the intake was called")
			}
		})
	}
}

// A valid token whose role may not make the request: 403, nothing done.
func TestForbiddenRoles(t *testing.T) {
	cases := []struct {
		name  string
		req   req
		found string // a word the diagnostics must hold
	}{
		{"tracker role on $validate", req{method: "POST", path: "/FHIR/R4/$validate", body: order, token: tokTracker}, "$validate"},
		{"dispenser on the audit trail", req{method: "GET", path: "/api/v1/audit", token: tokDispenser}, "admin"},
		{"tracker role on the audit trail", req{method: "GET", path: "/api/v1/audit?nhsNumber=9449305552", token: tokTracker}, "admin"},
		{"dispenser on a nomination report", req{method: "GET", path: "/api/v1/nominations/reports/summary?from=2026-01-01&to=2026-01-31", token: tokDispenser}, "admin"},
		{"prescriber importing nominations", req{method: "POST", path: "/api/v1/nominations/import", token: tokPrescriber, body: "nhsNumber,type,ods\n"}, "admin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			oo := wantOutcome(t, f.do(c.req), 403, fhir.CodeAccessDenied)
			if !strings.Contains(oo.Issue[0].Diagnostics, c.found) {
				t.Errorf("diagnostics %q do not say %q", oo.Issue[0].Diagnostics, c.found)
			}
			if len(f.audit.all()) != 0 || f.intake.calls() != 0 {
				t.Error("a refused request was audited or processed")
			}
		})
	}
}

// Bodies over the limit are 413 (by Content-Length, or as they are read),
// XML is 415; neither reaches the service.
func TestBodyLimitsAndMediaTypes(t *testing.T) {
	big := `{"resourceType":"Bundle","pad":"` + strings.Repeat("x", testMaxBody) + `"}`
	cases := []struct {
		name    string
		req     req
		chunked bool
		status  int
		code    string
	}{
		{name: "over the limit", req: req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: big},
			status: 413, code: fhir.CodeTooLarge},
		{name: "over the limit, no Content-Length", req: req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: big},
			chunked: true, status: 413, code: fhir.CodeTooLarge},
		{name: "over the limit on release", req: req{method: "POST", path: "/FHIR/R4/Task/$release", token: tokDispenser, body: big},
			status: 413, code: fhir.CodeTooLarge},
		{name: "XML", req: req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: "<Bundle/>",
			header: map[string]string{"Content-Type": "application/fhir+xml"}}, status: 415, code: fhir.CodeUnsupportedMedia},
		{name: "sign-in not JSON", req: req{method: "POST", path: "/tracker/session", body: "token=x",
			header: map[string]string{"Content-Type": "application/x-www-form-urlencoded", trackerHeader: "1"}}, status: 415, code: fhir.CodeUnsupportedMedia},
		{name: "import not NDJSON or CSV", req: req{method: "POST", path: "/api/v1/nominations/import", token: tokAdmin, body: "{}",
			header: map[string]string{"Content-Type": "application/json"}}, status: 415, code: fhir.CodeUnsupportedMedia},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			var w *httptest.ResponseRecorder
			if c.chunked {
				hr := httptest.NewRequest(c.req.method, c.req.path, struct{ *strings.Reader }{strings.NewReader(c.req.body)})
				hr.ContentLength = -1
				hr.Header.Set("Authorization", "Bearer "+c.req.token)
				hr.Header.Set("Content-Type", "application/fhir+json")
				w = httptest.NewRecorder()
				f.h.ServeHTTP(w, hr)
			} else {
				w = f.do(c.req)
			}
			wantOutcome(t, w, c.status, c.code)
			if f.intake.calls() != 0 || len(f.life.released) != 0 {
				t.Error("the request reached the service")
			}
		})
	}
}

// statusFor maps every error kind to its status, and the handler answers
// a service's error of each kind with that status, an OperationOutcome and
// the headers the status calls for.
func TestStatusForEveryKind(t *testing.T) {
	cases := []struct {
		kind       fhir.Kind
		status     int
		retryAfter string
	}{
		{fhir.KindInternal, 500, ""},
		{fhir.KindInvalid, 400, ""},
		{fhir.KindUnauthorized, 401, ""},
		{fhir.KindForbidden, 403, ""},
		{fhir.KindNotFound, 404, ""},
		{fhir.KindConflict, 409, ""},
		{fhir.KindTooLarge, 413, ""},
		{fhir.KindUnsupportedMedia, 415, ""},
		{fhir.KindUnavailable, 503, "1"},
		{fhir.KindThrottled, 429, ""},
		{fhir.KindMethodNotAllowed, 405, ""},
		{fhir.KindInsufficientStorage, 507, "60"},
	}
	seen := map[fhir.Kind]bool{}
	for _, c := range cases {
		seen[c.kind] = true
		if got := statusFor(c.kind); got != c.status {
			t.Errorf("statusFor(%d) = %d, want %d", c.kind, got, c.status)
		}
		t.Run(fmt.Sprint(c.status), func(t *testing.T) {
			f := newFixture(t)
			f.intake.err = &fhir.Error{Kind: c.kind, Code: "SOME_CODE", Diagnostics: "what went wrong"}
			w := f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: order})
			code := "SOME_CODE"
			if c.kind == fhir.KindInternal {
				code = fhir.CodeServerError // a fault of the broker's says nothing of its cause
			}
			oo := wantOutcome(t, w, c.status, code)
			if c.kind == fhir.KindInternal && strings.Contains(oo.Issue[0].Diagnostics, "what went wrong") {
				t.Errorf("a 500 tells its cause: %s", w.Body.String())
			}
			if got := w.Header().Get("Retry-After"); got != c.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, c.retryAfter)
			}
			if got := w.Header().Get("WWW-Authenticate"); (c.status == 401) != (got != "") {
				t.Errorf("WWW-Authenticate %q", got)
			}
		})
	}
	// Every kind fhir declares is in the table (a new one must be mapped).
	for k := fhir.KindInternal; k <= fhir.KindInsufficientStorage; k++ {
		if !seen[k] {
			t.Errorf("kind %d has no case", k)
		}
	}
	if got := statusFor(fhir.KindInsufficientStorage + 1); got != 500 {
		t.Errorf("an unknown kind maps to %d, want 500", got)
	}
	// An error that is not a fhir.Error is the broker's fault: 500.
	f := newFixture(t)
	f.intake.err = errors.New("boom")
	wantOutcome(t, f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: order}), 500, fhir.CodeServerError)
}

// The answers written outside writeError (the connection cap's refusal,
// which is counted rather than logged, and a panic's, which the recoverer
// logs) take their status from statusFor too, with the headers it calls for.
func TestErrorAnswersOutsideWriteError(t *testing.T) {
	cases := []struct {
		name       string
		set        func(*fixture)
		r          req
		status     int
		code       string
		retryAfter string
		close      bool
	}{
		{name: "connection past the cap", r: req{overCap: true}, status: 503, code: fhir.CodeServiceUnavailable, retryAfter: "1", close: true},
		{name: "handler panics", set: func(f *fixture) { f.intake.panic = "broken fake" }, status: 500, code: fhir.CodeServerError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			if c.set != nil {
				c.set(f)
			}
			c.r.method, c.r.path, c.r.token, c.r.body = "POST", "/FHIR/R4/$process-message", tokPrescriber, order
			w := f.do(c.r)
			oo := wantOutcome(t, w, c.status, c.code)
			if c.status != statusFor(fhir.KindUnavailable) && c.status != statusFor(fhir.KindInternal) {
				t.Errorf("status %d is no error kind's", c.status)
			}
			if strings.Contains(oo.Issue[0].Diagnostics, "broken fake") {
				t.Errorf("a 500 tells its cause: %s", w.Body.String())
			}
			if got := w.Header().Get("Retry-After"); got != c.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, c.retryAfter)
			}
			if got := w.Header().Get("Connection"); (got == "close") != c.close {
				t.Errorf("Connection %q", got)
			}
			if c.r.overCap && f.intake.calls() != 0 {
				t.Error("a request past the cap reached the service")
			}
		})
	}
}

// A write refused for want of space, wherever in the error's chain and
// whatever the error's kind, is 507 with Retry-After 60; a refusal whose
// stream is not known is noted for the storage warnings.
func TestStorageFull507(t *testing.T) {
	cases := []struct {
		name      string
		err       error
		wantNoted []string
	}{
		{"event log full (stream known)", fmt.Errorf("store order: %w", &fullOn{stream: "EPS_EVENTS"}), nil},
		{"account full (stream unknown)", fmt.Errorf("publish: %w", errFull), []string{""}},
		{"as an unavailable store", &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable, Err: &fullOn{stream: "EPS_AUDIT"}}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.intake.err = c.err
			w := f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: order})
			oo := wantOutcome(t, w, 507, fhir.CodeInsufficientStorage)
			if !strings.Contains(oo.Issue[0].Diagnostics, "nothing of this request was stored") {
				t.Errorf("diagnostics %q", oo.Issue[0].Diagnostics)
			}
			if got := w.Header().Get("Retry-After"); got != "60" {
				t.Errorf("Retry-After %q, want 60", got)
			}
			if fmt.Sprint(f.storage.noted) != fmt.Sprint(c.wantNoted) {
				t.Errorf("noted full %q, want %q", f.storage.noted, c.wantNoted)
			}
		})
	}
}

// /readyz is 503 while the broker cannot serve, 200 with the storage
// warnings when it can; /healthz is 200 whatever.
func TestReadiness(t *testing.T) {
	f := newFixture(t)
	f.ready = errors.New("NATS connection CLOSED")
	w := f.do(req{method: "GET", path: "/readyz"})
	if w.Code != 503 || !strings.Contains(w.Body.String(), "not ready: NATS connection CLOSED") {
		t.Errorf("not ready: %d %q", w.Code, w.Body.String())
	}
	if w := f.do(req{method: "GET", path: "/healthz"}); w.Code != 200 {
		t.Errorf("healthz %d while not ready", w.Code)
	}
	f.ready = nil
	f.storage.warnings = []string{"warning: stream EPS_AUDIT is 91% full"}
	w = f.do(req{method: "GET", path: "/readyz"})
	if w.Code != 200 || w.Body.String() != "ready\nwarning: stream EPS_AUDIT is 91% full\n" {
		t.Errorf("ready: %d %q", w.Code, w.Body.String())
	}
}

// X-Request-ID: the same request again is answered as the first time, from
// what was kept, without reaching the service; the key with another body
// is 409; a key in flight is 409 with Retry-After; a key that cannot be
// checked is 503; an answer that is not final is not kept; keys are the
// user's own.
func TestIdempotency(t *testing.T) {
	f := newFixture(t)
	send := func(token, key, body string) *httptest.ResponseRecorder {
		return f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: token, body: body,
			header: map[string]string{"X-Request-ID": key, "X-Correlation-ID": "corr-1"}})
	}
	first := send(tokPrescriber, "key-1", order)
	if first.Code != 200 || f.intake.calls() != 1 {
		t.Fatalf("first: %d, %d calls", first.Code, f.intake.calls())
	}
	steps := []struct {
		name         string
		token, key   string
		body         string
		edit         func()
		status       int
		code         string // of an error
		replay       bool
		intakeCalls  int
		retryAfter   string
		sameAsFirst  bool
		wantReleased int
	}{
		{name: "same request again", token: tokPrescriber, key: "key-1", body: order, status: 200, replay: true, intakeCalls: 1, sameAsFirst: true},
		{name: "same key, another body", token: tokPrescriber, key: "key-1", body: order + " ", status: 409, code: fhir.CodeDuplicateRequestIDDifferent, intakeCalls: 1},
		{name: "same key, another user", token: tokOtherPresc, key: "key-1", body: order, status: 200, intakeCalls: 2},
		{name: "key in flight", token: tokPrescriber, key: "key-2", body: order, edit: func() { f.requests.inFlight[service.RequestKey("presc-user", "A83008", "key-2")] = true },
			status: 409, code: fhir.CodeDuplicateRequestIDDifferent, intakeCalls: 2, retryAfter: "1"},
		{name: "keys unreachable", token: tokPrescriber, key: "key-3", body: order, edit: func() { f.requests.err = errStore },
			status: 503, code: fhir.CodeServiceUnavailable, intakeCalls: 2, retryAfter: "1"},
		{name: "a 503 answer is not kept", token: tokPrescriber, key: "key-4", body: order,
			edit: func() {
				f.requests.err = nil
				f.intake.err = &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable, Diagnostics: "retry"}
			},
			status: 503, code: fhir.CodeServiceUnavailable, intakeCalls: 3, retryAfter: "1", wantReleased: 1},
		{name: "its retry is processed", token: tokPrescriber, key: "key-4", body: order, edit: func() { f.intake.err = nil },
			status: 200, intakeCalls: 4, wantReleased: 1},
		{name: "key too long", token: tokPrescriber, key: strings.Repeat("k", 201), body: order, status: 400, code: fhir.CodeInvalidValue, intakeCalls: 4, wantReleased: 1},
	}
	for _, s := range steps {
		if s.edit != nil {
			s.edit()
		}
		w := send(s.token, s.key, s.body)
		if s.code != "" {
			wantOutcome(t, w, s.status, s.code)
		} else if w.Code != s.status {
			t.Errorf("%s: status %d, want %d: %s", s.name, w.Code, s.status, w.Body.String())
		}
		if got := w.Header().Get("X-Idempotent-Replay") == "true"; got != s.replay {
			t.Errorf("%s: replay header %v, want %v", s.name, got, s.replay)
		}
		if got := w.Header().Get("X-Request-ID"); got != s.key {
			t.Errorf("%s: X-Request-ID %q not echoed", s.name, got)
		}
		if got := w.Header().Get("X-Correlation-ID"); got != "corr-1" {
			t.Errorf("%s: X-Correlation-ID %q not echoed", s.name, got)
		}
		if got := w.Header().Get("Retry-After"); got != s.retryAfter {
			t.Errorf("%s: Retry-After %q, want %q", s.name, got, s.retryAfter)
		}
		if f.intake.calls() != s.intakeCalls {
			t.Errorf("%s: intake called %d times, want %d", s.name, f.intake.calls(), s.intakeCalls)
		}
		if s.sameAsFirst && !bytes.Equal(w.Body.Bytes(), first.Body.Bytes()) {
			t.Errorf("%s: replay answered %s, first %s", s.name, w.Body.String(), first.Body.String())
		}
		if f.requests.released != s.wantReleased {
			t.Errorf("%s: %d reservations given back, want %d", s.name, f.requests.released, s.wantReleased)
		}
	}
	if n := len(f.requests.reserved); n != 0 {
		t.Errorf("%d reservations left open", n)
	}
}

// A release's answer is kept as what it handed over, not the orders, and a
// replay rebuilds the same answer from the orders.
func TestIdempotentReleaseReplay(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	order := f.records.current[rec.ID].Body
	f.life.rx[rec.ID] = service.Released{Record: rec, Order: order}
	body := string(fhirgen.Release("FA565", rec.ID))
	send := func() *httptest.ResponseRecorder {
		return f.do(req{method: "POST", path: "/FHIR/R4/Task/$release", token: tokDispenser, body: body,
			header: map[string]string{"X-Request-ID": "rel-1"}})
	}
	first := send()
	if first.Code != 200 || !bytes.Contains(first.Body.Bytes(), []byte(rec.BundleID)) {
		t.Fatalf("release: %d %s", first.Code, first.Body.String())
	}
	saved := f.requests.saved[service.RequestKey("disp-user", "FA565", "rel-1")]
	switch {
	case saved == nil:
		t.Fatal("the answer was not kept")
	case saved.Body != nil || !saved.Rebuild || len(saved.Release) != 1 || saved.Release[0].ID != rec.ID:
		t.Fatalf("kept %+v, want the released prescription without the orders", saved)
	case saved.AnswerHash != service.AnswerHash(first.Body.Bytes()):
		t.Error("the kept answer hash is not the answer's")
	}
	again := send()
	if again.Code != 200 || again.Header().Get("X-Idempotent-Replay") != "true" || !bytes.Equal(again.Body.Bytes(), first.Body.Bytes()) {
		t.Errorf("replay: %d %q, same body %v", again.Code, again.Header().Get("X-Idempotent-Replay"), bytes.Equal(again.Body.Bytes(), first.Body.Bytes()))
	}
	if len(f.life.released) != 1 {
		t.Errorf("released %d times, want once", len(f.life.released))
	}
	// The orders cannot be read again: 503, and nothing is released anew.
	delete(f.life.rx, rec.ID)
	wantOutcome(t, send(), 503, fhir.CodeServiceUnavailable)
	if len(f.life.released) != 1 {
		t.Errorf("released %d times after a failed replay", len(f.life.released))
	}
}

// A nominated release answered 503 because its writes could not be
// confirmed keeps its X-Request-ID reservation, marked, instead of giving it
// up: the retry (on any instance: the mark is in the shared bucket) takes
// it over at once and hands over what the request released, not others.
func TestUnresolvedReleaseRetry(t *testing.T) {
	f := newFixture(t)
	rec := f.addRx("A83008", "FA565", "9449305552")
	order := f.records.current[rec.ID].Body
	body := string(fhirgen.Release("FA565", ""))
	send := func() *httptest.ResponseRecorder {
		return f.do(req{method: "POST", path: "/FHIR/R4/Task/$release", token: tokDispenser, body: body,
			header: map[string]string{"X-Request-ID": "rel-u"}})
	}
	f.life.err = &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "not confirmed", Err: service.ErrReleaseUnresolved}
	wantOutcome(t, send(), 503, fhir.CodeServiceUnavailable)
	saved := f.requests.saved[service.RequestKey("disp-user", "FA565", "rel-u")]
	if saved == nil || !saved.Unresolved || saved.Status != 0 || saved.Since.IsZero() || f.requests.released != 0 {
		t.Fatalf("kept %+v, %d given back; want the reservation kept, marked unresolved, with when it was reserved", saved, f.requests.released)
	}
	// The release did hand the prescription over; the retry finds it.
	f.life.err = nil
	f.life.under = []service.Released{{Record: rec, Order: order}}
	f.life.rx[rec.ID] = service.Released{Record: rec, Order: order} // for the replay
	again := send()
	if again.Code != 200 || !bytes.Contains(again.Body.Bytes(), []byte(rec.BundleID)) {
		t.Fatalf("retry: %d %s", again.Code, again.Body.String())
	}
	if len(f.life.since) != 1 || !f.life.since[0].Equal(saved.Since) {
		t.Errorf("looked for the request's releases since %v, want once since %v", f.life.since, saved.Since)
	}
	if third := send(); third.Code != 200 || third.Header().Get("X-Idempotent-Replay") != "true" || !bytes.Equal(third.Body.Bytes(), again.Body.Bytes()) {
		t.Errorf("replay: %d %q", third.Code, third.Header().Get("X-Idempotent-Replay"))
	}
}

// Known paths with another method are 405 with Allow (after
// authentication on the API); unknown paths 404 with an OperationOutcome.
func TestMethodsAndPaths(t *testing.T) {
	cases := []struct {
		req    req
		status int
		code   string
		allow  string
	}{
		{req{method: "GET", path: "/FHIR/R4/$process-message", token: tokPrescriber}, 405, fhir.CodeMethodNotAllowed, "POST"},
		{req{method: "DELETE", path: "/FHIR/R4/metadata"}, 405, fhir.CodeMethodNotAllowed, "GET"},
		{req{method: "GET", path: "/FHIR/R4/Task", token: tokDispenser}, 405, fhir.CodeMethodNotAllowed, "POST"},
		{req{method: "GET", path: "/FHIR/R4/Patient", token: tokTracker}, 404, fhir.CodeResourceNotFound, ""},
		{req{method: "GET", path: "/api/v2/things", token: tokAdmin}, 404, fhir.CodeResourceNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.req.method+" "+c.req.path, func(t *testing.T) {
			w := newFixture(t).do(c.req)
			wantOutcome(t, w, c.status, c.code)
			if got := w.Header().Get("Allow"); got != c.allow {
				t.Errorf("Allow %q, want %q", got, c.allow)
			}
			if got := w.Header().Get("Cache-Control"); strings.HasPrefix(c.req.path, "/FHIR/") && got != "no-store" {
				t.Errorf("Cache-Control %q", got)
			}
		})
	}
}

// Sign-in exchanges a token for a session cookie that then reads (GET, with
// the page's header); sign-out ends it.
func TestTrackerSessionOnFakes(t *testing.T) {
	f := newFixture(t)
	w := f.do(req{method: "POST", path: "/tracker/session", body: jsonBody(map[string]string{"token": tokTracker}),
		header: map[string]string{"Content-Type": "application/json", trackerHeader: "1"}})
	if w.Code != 204 {
		t.Fatalf("sign-in: %d %s", w.Code, w.Body.String())
	}
	res := http.Response{Header: w.Header()}
	cookies := res.Cookies()
	if len(cookies) != 1 || cookies[0].Name != sessionCookie || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie %+v", cookies)
	}
	withCookie := map[string]string{"Cookie": sessionCookie + "=" + cookies[0].Value, trackerHeader: "1"}
	w = f.do(req{method: "GET", path: "/tracker/session", header: withCookie})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"role":"tracker"`) {
		t.Fatalf("session info: %d %s", w.Code, w.Body.String())
	}
	if w := f.do(req{method: "DELETE", path: "/tracker/session", header: withCookie}); w.Code != 204 {
		t.Fatalf("sign-out: %d", w.Code)
	}
	if len(f.sessions.sessions) != 0 {
		t.Error("the session outlived its sign-out")
	}
	wantOutcome(t, f.do(req{method: "GET", path: "/tracker/session", header: withCookie}), 401, fhir.CodeUnauthorised)
	// A bad token signs no one in.
	w = f.do(req{method: "POST", path: "/tracker/session", body: jsonBody(map[string]string{"token": "forged"}),
		header: map[string]string{"Content-Type": "application/json", trackerHeader: "1"}})
	wantOutcome(t, w, 401, fhir.CodeUnauthorised)
	if len(f.sessions.sessions) != 0 {
		t.Error("a bad token made a session")
	}
}

// The services' answers pass through as they are: the intake's status and
// body, the lifecycle's outcome.
func TestServiceAnswers(t *testing.T) {
	f := newFixture(t)
	f.intake.out = &service.Outcome{Status: 400, Body: []byte(`{"resourceType":"Bundle","type":"message"}`)}
	w := f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: order})
	if w.Code != 400 || w.Body.String() != `{"resourceType":"Bundle","type":"message"}` {
		t.Errorf("cancel response: %d %s", w.Code, w.Body.String())
	}
	if string(f.intake.bodies[0]) != order {
		t.Errorf("the intake got %q", f.intake.bodies[0])
	}
	// A return goes to Dispensing, and is answered informational.
	tpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	g, err := tpl.Order(fhirgen.Options{Now: f.now})
	if err != nil {
		t.Fatal(err)
	}
	w = f.do(req{method: "POST", path: "/FHIR/R4/Task", token: tokDispenser, body: string(fhirgen.ReturnTask(g, "FA565", "0002"))})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"informational"`) || f.life.tasks != 1 {
		t.Errorf("return: %d %s, %d tasks", w.Code, w.Body.String(), f.life.tasks)
	}
	f.life.err = fhir.Errorf(fhir.KindConflict, fhir.CodeInvalidStateTransition, "not held by you")
	wantOutcome(t, f.do(req{method: "POST", path: "/FHIR/R4/Task/$release", token: tokDispenser, body: string(fhirgen.Release("FA565", "24F5DA-A83008-7EFE6Z"))}),
		409, fhir.CodeInvalidStateTransition)
}

// Past a user's rate: 429 TOO_MANY_REQUESTS with Retry-After, the request
// not processed; another user goes on.
func TestUserRateLimit(t *testing.T) {
	f := newFixture(t, func(d *Deps) { d.Limits = Limits{UserRate: 0.001, UserBurst: 1} })
	send := func(token string) *httptest.ResponseRecorder {
		return f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: token, body: order})
	}
	if w := send(tokPrescriber); w.Code != 200 {
		t.Fatalf("first: %d", w.Code)
	}
	w := send(tokPrescriber)
	oo := wantOutcome(t, w, 429, codeTooManyRequests)
	if oo.Issue[0].Code != "throttled" || w.Header().Get("Retry-After") == "" {
		t.Errorf("issue code %q, Retry-After %q", oo.Issue[0].Code, w.Header().Get("Retry-After"))
	}
	if f.intake.calls() != 1 {
		t.Errorf("intake called %d times, want 1", f.intake.calls())
	}
	if w := send(tokOtherPresc); w.Code != 200 {
		t.Errorf("another user: %d", w.Code)
	}
}
