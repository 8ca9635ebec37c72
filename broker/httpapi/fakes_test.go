package httpapi

// Fakes of the HTTP layer's ports (ports.go), in memory: the handler's unit
// tests run against them, without NATS. Each fake keeps what it was asked
// to do, so a test can check the state after a request, and can be told to
// fail.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// errStore stands for a store that cannot be reached.
var errStore = errors.New("store unreachable (fake)")

// fakeVerifier accepts the tokens it holds.
type fakeVerifier map[string]auth.Principal

func (v fakeVerifier) Verify(token string) (auth.Principal, error) {
	p, ok := v[token]
	if !ok {
		return auth.Principal{}, fmt.Errorf("%w: signature invalid", auth.ErrUnauthorized)
	}
	return p, nil
}

// The tokens of the fake verifier: one per role.
const (
	tokPrescriber  = "tok-prescriber"  // A83008
	tokOtherPresc  = "tok-prescriber2" // B81001
	tokDispenser   = "tok-dispenser"   // FA565
	tokOtherDisp   = "tok-dispenser2"  // FCG71
	tokTracker     = "tok-tracker"
	tokAdmin       = "tok-admin"
	tokUnknownRole = "tok-norole"
)

var testPrincipals = fakeVerifier{
	tokPrescriber:  {Subject: "presc-user", ODS: "A83008", Role: auth.RolePrescriber},
	tokOtherPresc:  {Subject: "presc-user2", ODS: "B81001", Role: auth.RolePrescriber},
	tokDispenser:   {Subject: "disp-user", ODS: "FA565", Role: auth.RoleDispenser},
	tokOtherDisp:   {Subject: "disp-user2", ODS: "FCG71", Role: auth.RoleDispenser},
	tokTracker:     {Subject: "desk-user", ODS: "X26", Role: auth.RoleTracker},
	tokAdmin:       {Subject: "admin-user", ODS: "X26", Role: auth.RoleAdmin},
	tokUnknownRole: {Subject: "odd-user", ODS: "X26", Role: "auditor"},
}

// fakeIntake answers $process-message with out, or err.
type fakeIntake struct {
	mu     sync.Mutex
	out    *service.Outcome
	err    error
	panic  any // when not nil, ProcessMessage panics with it
	bodies [][]byte
}

func (f *fakeIntake) ProcessMessage(_ context.Context, _ auth.Principal, body []byte) (*service.Outcome, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bodies = append(f.bodies, body)
	if f.panic != nil {
		panic(f.panic) // the deferred Unlock runs
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.out, nil
}

func (f *fakeIntake) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

// fakeLifecycle is Releases and Dispensing: a release by ID hands over the
// prescriptions it holds; Task and Claim answer err.
type fakeLifecycle struct {
	mu       sync.Mutex
	rx       map[string]service.Released
	err      error
	released []string // IDs handed over, in order
	tasks    int
	// under is what ReleasedUnder finds; since the times it was asked from.
	under []service.Released
	since []time.Time
}

func (f *fakeLifecycle) ReleaseByID(_ context.Context, _ auth.Principal, _, id, _ string, _ []byte) (*service.Released, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	r, ok := f.rx[id]
	if !ok {
		return nil, fhir.Errorf(fhir.KindInvalid, fhir.CodeResourceNotFound, "prescription %s not found", id)
	}
	f.released = append(f.released, id)
	return &r, nil
}

func (f *fakeLifecycle) ReleaseNominated(context.Context, auth.Principal, string, string, []byte, int) ([]service.Released, error) {
	return nil, f.err
}

func (f *fakeLifecycle) ReleasedUnder(_ context.Context, _ auth.Principal, _, _ string, since time.Time) ([]service.Released, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since = append(f.since, since)
	return f.under, nil
}

func (f *fakeLifecycle) OrderOf(_ context.Context, id string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rx[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	return r.Order, nil
}

func (f *fakeLifecycle) Task(context.Context, auth.Principal, *fhir.TaskRequest, []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tasks++
	return f.err
}

func (f *fakeLifecycle) Claim(context.Context, auth.Principal, *fhir.ClaimRequest, []byte) error {
	return f.err
}

// fakeRequests keeps X-Request-ID answers in a map. inFlight keys answer
// service.ErrInFlight; err fails every reservation.
type fakeRequests struct {
	mu       sync.Mutex
	saved    map[string]*service.SavedResponse
	reserved map[string]uint64
	since    map[string]time.Time // when each reserved key was first reserved
	inFlight map[string]bool
	err      error
	rev      uint64
	released int // reservations given back (no final answer)
}

func newFakeRequests() *fakeRequests {
	return &fakeRequests{saved: map[string]*service.SavedResponse{}, reserved: map[string]uint64{}, since: map[string]time.Time{}, inFlight: map[string]bool{}}
}

func (f *fakeRequests) ReserveRequest(_ context.Context, key, _ string, now time.Time) (*service.SavedResponse, service.Reservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.err != nil:
		return nil, service.Reservation{}, f.err
	case f.inFlight[key]:
		return nil, service.Reservation{}, service.ErrInFlight
	case f.saved[key] != nil && f.saved[key].Unresolved:
		// Kept for the retry of a release whose outcome is not known.
		since := f.saved[key].Since
		delete(f.saved, key)
		f.rev++
		f.reserved[key], f.since[key] = f.rev, since
		return nil, service.Reservation{Rev: f.rev, TakenOver: since}, nil
	case f.saved[key] != nil:
		return f.saved[key], service.Reservation{}, nil
	}
	f.rev++
	f.reserved[key], f.since[key] = f.rev, now
	return nil, service.Reservation{Rev: f.rev}, nil
}

func (f *fakeRequests) CompleteRequest(_ context.Context, key string, rev uint64, r *service.SavedResponse) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reserved[key] != rev {
		return fmt.Errorf("complete %s: revision %d, reserved %d", key, rev, f.reserved[key])
	}
	delete(f.reserved, key)
	if r.Unresolved && r.Since.IsZero() {
		kept := *r
		kept.Since = f.since[key]
		r = &kept
	}
	f.saved[key] = r
	return nil
}

func (f *fakeRequests) ReleaseRequest(_ context.Context, key string, rev uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reserved[key] != rev {
		return fmt.Errorf("release %s: revision %d, reserved %d", key, rev, f.reserved[key])
	}
	delete(f.reserved, key)
	f.released++
	return nil
}

// fakeSessions keeps sessions by cookie.
type fakeSessions struct {
	mu       sync.Mutex
	sessions map[string]*service.Session
	err      error
	n        int
}

func newFakeSessions() *fakeSessions { return &fakeSessions{sessions: map[string]*service.Session{}} }

func (f *fakeSessions) NewSession(ctx context.Context, p auth.Principal, now time.Time) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	f.n++
	cookie := fmt.Sprintf("cookie-%d", f.n)
	f.sessions[cookie] = &service.Session{Subject: p.Subject, ODS: p.ODS, Role: p.Role, Expires: p.Expires, Used: now}
	return cookie, nil
}

func (f *fakeSessions) TouchSession(_ context.Context, cookie string, now time.Time) (*service.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	s, ok := f.sessions[cookie]
	if !ok {
		return nil, service.ErrNoSession
	}
	s.Used = now
	return s, nil
}

func (f *fakeSessions) EndSession(_ context.Context, cookie string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	delete(f.sessions, cookie)
	return nil
}

// fakeAudit is the audit trail in memory; err fails every write.
type fakeAudit struct {
	mu      sync.Mutex
	entries []service.AuditEntry
	err     error
	listErr error // fails AuditEntries
	queries []service.AuditQuery
}

func (f *fakeAudit) Audit(_ context.Context, p auth.Principal, e service.AuditEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	e.User, e.Org, e.Role = p.Subject, p.ODS, string(p.Role)
	f.entries = append(f.entries, e)
	return nil
}

func (f *fakeAudit) AuditEntries(_ context.Context, q service.AuditQuery) ([]service.AuditEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []service.AuditEntry
	for i := len(f.entries) - 1; i >= 0 && len(out) < q.Limit; i-- {
		e := f.entries[i]
		if (q.User == "" || e.User == q.User) && (q.NHSNumber == "" || e.NHSNumber == q.NHSNumber) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeAudit) all() []service.AuditEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]service.AuditEntry(nil), f.entries...)
}

// fakeIndex is the tracker index: the entries of the records it was given.
type fakeIndex struct {
	mu      sync.Mutex
	entries map[string]tracker.Entry
	applied uint64
}

func (f *fakeIndex) Get(id string) (tracker.Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	return e, ok
}

func (f *fakeIndex) ByNHSNumber(nhs string) []tracker.Entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []tracker.Entry
	for _, e := range f.entries {
		if e.NHSNumber == nhs {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (f *fakeIndex) Applied() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

// WaitApplied does not wait: an index behind seq stays behind (the fake
// has no projection), so it answers as a timeout would.
func (f *fakeIndex) WaitApplied(ctx context.Context, seq uint64) error {
	if f.Applied() >= seq {
		return nil
	}
	return context.DeadlineExceeded
}

// fakeRecords is the event log: each prescription's current state, and the
// order messages by sequence. reads counts what was read, err fails reads.
type fakeRecords struct {
	mu      sync.Mutex
	current map[string]*service.Event
	events  map[uint64]*service.Event
	err     error
	reads   []string
}

func (f *fakeRecords) Current(_ context.Context, id string) (*service.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads = append(f.reads, id)
	if f.err != nil {
		return nil, f.err
	}
	ev, ok := f.current[id]
	if !ok {
		return nil, service.ErrNotFound
	}
	return ev, nil
}

func (f *fakeRecords) Event(_ context.Context, seq uint64) (*service.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	ev, ok := f.events[seq]
	if !ok {
		return nil, service.ErrNotFound
	}
	return ev, nil
}

func (f *fakeRecords) readIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reads...)
}

// fakeNominations is NominationReads and NominationRegistry over one map.
type fakeNominations struct {
	mu       sync.Mutex
	patients map[string]*nomination.Patient
	err      error
}

func (f *fakeNominations) Nominations(_ context.Context, nhs string) (*nomination.Patient, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, 0, f.err
	}
	return f.patients[nhs], 1, nil
}

func (f *fakeNominations) NominationHistory(context.Context, string) ([]nomination.Change, error) {
	return nil, f.err
}

func (f *fakeNominations) Set(_ context.Context, _ auth.Principal, nhs string, t nomination.Type, ods string) (*nomination.Patient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	pt := f.patients[nhs]
	if pt == nil {
		pt = &nomination.Patient{NHSNumber: nhs, Nominations: map[nomination.Type]nomination.Nomination{}}
		f.patients[nhs] = pt
	}
	pt.Nominations[t] = nomination.Nomination{ODS: ods}
	return pt, nil
}

func (f *fakeNominations) Remove(_ context.Context, _ auth.Principal, nhs string, t nomination.Type) (*nomination.Patient, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	pt := f.patients[nhs]
	if pt != nil {
		delete(pt.Nominations, t)
	}
	return pt, f.err
}

func (f *fakeNominations) ImportAllowed(p auth.Principal) error {
	if p.Role != auth.RoleAdmin {
		return fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only admins import")
	}
	return nil
}

func (f *fakeNominations) Import(context.Context, auth.Principal, service.ImportSource, service.ImportOptions) (*service.ImportResult, error) {
	return &service.ImportResult{}, nil
}

// fakeStorage says warnings and keeps the streams noted full.
type fakeStorage struct {
	mu       sync.Mutex
	warnings []string
	noted    []string
}

func (f *fakeStorage) StorageWarnings(context.Context) ([]string, error) { return f.warnings, nil }
func (f *fakeStorage) NoteStorageFull(stream string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noted = append(f.noted, stream)
}

// errFull is the fakes' write refused for want of space; fullOn names its
// stream.
var errFull = errors.New("insufficient storage (fake)")

type fullOn struct{ stream string }

func (e *fullOn) Error() string { return "stream " + e.stream + " is full" }
func (e *fullOn) Unwrap() error { return errFull }

var fakeStorageFull = StorageFull{
	Full: func(err error) bool { return errors.Is(err, errFull) },
	Stream: func(err error) string {
		var f *fullOn
		if errors.As(err, &f) {
			return f.stream
		}
		return ""
	},
}

// fixture is a handler on fakes, and the fakes.
type fixture struct {
	t         *testing.T
	h         http.Handler
	now       time.Time
	intake    *fakeIntake
	life      *fakeLifecycle
	requests  *fakeRequests
	sessions  *fakeSessions
	audit     *fakeAudit
	index     *fakeIndex
	records   *fakeRecords
	noms      *fakeNominations
	storage   *fakeStorage
	ready     error
	mustReach uint64
}

// newFixture returns a handler on fresh fakes; edit, when given, changes
// the Deps first.
func newFixture(t *testing.T, edit ...func(*Deps)) *fixture {
	t.Helper()
	f := &fixture{t: t, now: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC),
		intake:   &fakeIntake{out: &service.Outcome{Body: fhir.InformationalOutcome(time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC))}},
		life:     &fakeLifecycle{rx: map[string]service.Released{}},
		requests: newFakeRequests(), sessions: newFakeSessions(), audit: &fakeAudit{},
		index:   &fakeIndex{entries: map[string]tracker.Entry{}},
		records: &fakeRecords{current: map[string]*service.Event{}, events: map[uint64]*service.Event{}},
		noms:    &fakeNominations{patients: map[string]*nomination.Patient{}},
		storage: &fakeStorage{},
	}
	d := Deps{
		Intake: f.intake, Releases: f.life, Dispensing: f.life,
		Requests: f.requests, Sessions: f.sessions, Audit: f.audit,
		Tracker: f.index, Records: f.records, TrackerMustReach: func() uint64 { return f.mustReach },
		Nominations: f.noms, Registry: f.noms,
		Storage: f.storage, StorageFull: fakeStorageFull,
		Verifier: testPrincipals,
		Metrics:  testMetrics(),
		Log:      zap.NewNop(),
		Ready:    func(context.Context) error { return f.ready },
		MaxBody:  testMaxBody,
		Now:      func() time.Time { return f.now },
	}
	for _, e := range edit {
		e(&d)
	}
	f.h = NewHandler(d)
	return f
}

// testMetrics are the HTTP metrics on a registry of their own.
func testMetrics() Metrics {
	m := Metrics{
		Registry:    prometheus.NewRegistry(),
		Requests:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "eps_http_requests_total"}, []string{"route", "method", "code"}),
		Duration:    prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "eps_http_request_duration_seconds"}, []string{"route", "method", "outcome"}),
		IntakeStage: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "eps_intake_stage_duration_seconds"}, []string{"stage"}),
	}
	m.Registry.MustRegister(m.Requests, m.Duration, m.IntakeStage)
	return m
}

// req is one request of a test.
type req struct {
	method, path, token string
	body                string
	header              map[string]string
	overCap             bool // the request came on a connection past the cap (ConnContext)
}

// do sends r through the handler.
func (f *fixture) do(r req) *httptest.ResponseRecorder {
	f.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/fhir+json")
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if r.overCap {
		hr = hr.WithContext(context.WithValue(hr.Context(), overCapKey{}, true))
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, hr)
	return w
}

// outcome is what the tests read of an OperationOutcome.
type outcome struct {
	ResourceType string `json:"resourceType"`
	Issue        []struct {
		Severity string `json:"severity"`
		Code     string `json:"code"`
		Details  struct {
			Coding []struct {
				System string `json:"system"`
				Code   string `json:"code"`
			} `json:"coding"`
		} `json:"details"`
		Diagnostics string   `json:"diagnostics"`
		Expression  []string `json:"expression"`
	} `json:"issue"`
}

// wantOutcome checks that w is an error OperationOutcome with status and
// EPS code, and returns it.
func wantOutcome(t *testing.T, w *httptest.ResponseRecorder, status int, code string) outcome {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d: %s", w.Code, status, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, FHIRMediaType) {
		t.Errorf("Content-Type %q, want %s", ct, FHIRMediaType)
	}
	var oo outcome
	if err := json.Unmarshal(w.Body.Bytes(), &oo); err != nil {
		t.Fatalf("not JSON: %v: %s", err, w.Body.String())
	}
	if oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Severity != "error" {
		t.Fatalf("not an error OperationOutcome: %s", w.Body.String())
	}
	if len(oo.Issue[0].Details.Coding) == 0 || oo.Issue[0].Details.Coding[0].Code != code {
		t.Errorf("code %+v, want %s: %s", oo.Issue[0].Details.Coding, code, w.Body.String())
	}
	if oo.Issue[0].Diagnostics == "" {
		t.Errorf("no diagnostics: %s", w.Body.String())
	}
	return oo
}

// addRx stores a prescription made from a fresh NHS example order, sent by
// prescriber (the token's organisation) and nominated to nominated, in the
// fake event log and index; it returns its record.
func (f *fixture) addRx(prescriber, nominated, nhs string) *rx.Prescription {
	f.t.Helper()
	tpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		f.t.Fatal(err)
	}
	g, err := tpl.Order(fhirgen.Options{Sender: "A83008", Performer: nominated, NHSNumber: nhs, Now: f.now})
	if err != nil {
		f.t.Fatal(err)
	}
	msg, err := fhir.DecodeMessage(g.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	order, err := msg.Order(f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	rec := rx.Create(order.RxOrder(), rx.Actor{User: "presc-user", Org: prescriber}, f.now)
	rec.Prescriber = prescriber
	seq := uint64(len(f.records.events) + 1)
	rec.OrderSeq = seq
	ev := &service.Event{Seq: seq, Time: f.now, Event: "prescription-order", MessageID: g.BundleID, Record: rec, Body: g.Body}
	f.records.events[seq] = ev
	f.records.current[rec.ID] = ev
	f.index.entries[rec.ID] = tracker.Entry{ID: rec.ID, NHSNumber: rec.NHSNumber, Status: rec.Status,
		Prescriber: rec.Prescriber, Nominated: rec.Nominated, Dispenser: rec.Dispenser}
	f.index.applied = seq
	return rec
}

// jsonBody is v as a request body.
func jsonBody(v any) string {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	return b.String()
}

// testMaxBody is the fixture's body limit.
const testMaxBody = 16 << 10
