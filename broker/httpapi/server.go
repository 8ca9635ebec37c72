// Package httpapi is the broker's HTTP interface: the FHIR endpoints of
// CONTRACT.md, health, readiness and metrics. It authenticates callers,
// limits request bodies, applies X-Request-ID idempotency and maps the
// domain's error kinds to HTTP status codes in one place (statusFor).
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
)

// FHIRMediaType is the media type of every FHIR answer.
const FHIRMediaType = "application/fhir+json"

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(token string) (auth.Principal, error)
}

// Deps are what the HTTP API serves from: the ports (ports.go) it calls,
// and its settings.
type Deps struct {
	Intake     Intake
	Releases   Releases
	Dispensing Dispensing
	// Requests keeps X-Request-ID answers; Sessions the tracker page's
	// sign-ins; Audit the audit trail of every read of patient data.
	Requests Requests
	Sessions Sessions
	Audit    AuditTrail
	// Tracker finds prescriptions, Records reads them.
	Tracker TrackerIndex
	Records Records
	// TrackerMustReach is the event sequence the index must have applied
	// before a search is answered from it.
	TrackerMustReach func() uint64
	// Nominations reads a patient's nominations, Registry changes them,
	// NominationReports holds the changes for the reports.
	Nominations       NominationReads
	Registry          NominationRegistry
	NominationReports NominationReports
	// Storage says how full storage is; StorageFull reads the errors of a
	// write refused for want of space.
	Storage     Storage
	StorageFull StorageFull
	// Unavailable tells an error of the store that means it cannot answer
	// now (no quorum, no leader, a timeout: broker.IsUnavailable): such an
	// error that no service mapped is answered 503 with Retry-After, not 500.
	Unavailable func(error) bool
	Verifier    Verifier
	Metrics     Metrics
	Log         *zap.Logger
	// Ready reports whether the broker can serve: NATS connected, streams and
	// buckets in place, projections running.
	Ready   func(context.Context) error
	MaxBody int64
	Now     func() time.Time

	// Limits bound the requests of one user or client address and the
	// tracker sessions of one user; LimitMetrics counts their refusals.
	Limits       Limits
	LimitMetrics *LimitMetrics
	// MetricsElsewhere leaves GET /metrics out (404): it is served on a
	// listener of its own (MetricsHandler).
	MetricsElsewhere bool
}

type api struct {
	Deps
	// importSlots bounds the nomination imports this broker runs at once:
	// each keeps a pool of writers busy.
	importSlots chan struct{}
	// userLimiter and addressLimiter keep the request rates (nil: none).
	userLimiter, addressLimiter *keyedLimiter
	// reads is the tracker's read path (trackerread.go).
	reads *trackerReads
}

// NewHandler returns the broker's HTTP handler.
func NewHandler(d Deps) http.Handler {
	a := &api{Deps: d, importSlots: make(chan struct{}, 2),
		userLimiter:    newKeyedLimiter(d.Limits.UserRate, d.Limits.UserBurst, nil),
		addressLimiter: newKeyedLimiter(d.Limits.AddressRate, d.Limits.AddressBurst, nil),
		reads:          &trackerReads{index: d.Tracker, mustReach: d.TrackerMustReach, records: d.Records, audit: d.Audit, now: d.Now}}
	mux := http.NewServeMux()
	route := func(pattern string, h http.Handler) {
		mux.Handle(pattern, a.observe(pattern, securityHeaders(pattern, a.limited(pattern, h))))
	}
	route("GET /healthz", http.HandlerFunc(a.healthz))
	route("GET /readyz", http.HandlerFunc(a.readyz))
	if !d.MetricsElsewhere {
		route("GET /metrics", promhttp.HandlerFor(d.Metrics.Registry, promhttp.HandlerOpts{Registry: d.Metrics.Registry}))
	}
	route("GET /_ping", http.HandlerFunc(a.ping))
	route("GET /FHIR/R4/metadata", http.HandlerFunc(a.metadata))
	route("POST /FHIR/R4/$validate", a.authenticated(a.withBody(http.HandlerFunc(a.validate))))
	route("POST /FHIR/R4/$process-message", a.authenticated(a.withBody(a.idempotent(a.processMessage))))
	route("POST /FHIR/R4/Task/$release", a.authenticated(a.withBody(a.idempotent(a.release))))
	route("POST /FHIR/R4/Task", a.authenticated(a.withBody(a.idempotent(a.task))))
	route("POST /FHIR/R4/Claim", a.authenticated(a.withBody(a.idempotent(a.claim))))
	route("GET /FHIR/R4/RequestGroup", a.authenticated(http.HandlerFunc(a.searchRequestGroups)))
	route("GET /FHIR/R4/RequestGroup/{id}", a.authenticated(http.HandlerFunc(a.getRequestGroup)))
	route("GET /FHIR/R4/RequestGroup/{$}", a.authenticated(http.HandlerFunc(a.requestGroupWithoutID)))
	route("GET /api/v1/audit", a.authenticated(http.HandlerFunc(a.auditList)))
	route("GET /api/v1/nominations/{nhsNumber}", a.authenticated(http.HandlerFunc(a.getNominations)))
	route("PUT /api/v1/nominations/{nhsNumber}/{type}", a.authenticated(a.withBody(a.idempotent(a.putNomination))))
	route("DELETE /api/v1/nominations/{nhsNumber}/{type}", a.authenticated(a.idempotent(a.deleteNomination)))
	a.nominationImportRoutes(route)
	a.nominationReportRoutes(route)
	route("GET /tracker", a.trackerPage())
	route("GET /tracker/", a.trackerPage())
	route("POST /tracker/session", a.withBody(a.sessionLimit(http.HandlerFunc(a.signIn))))
	route("GET /tracker/session", a.authenticated(http.HandlerFunc(a.sessionInfo)))
	route("DELETE /tracker/session", http.HandlerFunc(a.signOut))
	// Known paths with another method: 405 (after authentication, so that
	// nothing is told to an anonymous caller).
	route("/FHIR/R4/$process-message", a.authenticated(methodNotAllowed(a, "POST")))
	route("/FHIR/R4/metadata", methodNotAllowed(a, "GET"))
	route("/_ping", methodNotAllowed(a, "GET, HEAD"))
	route("/FHIR/R4/$validate", a.authenticated(methodNotAllowed(a, "POST")))
	route("/FHIR/R4/Task/$release", a.authenticated(methodNotAllowed(a, "POST")))
	route("/FHIR/R4/Task", a.authenticated(methodNotAllowed(a, "POST")))
	route("/FHIR/R4/Claim", a.authenticated(methodNotAllowed(a, "POST")))
	// Everything else under the API prefixes answers with an OperationOutcome.
	route("/FHIR/R4/", a.authenticated(http.HandlerFunc(a.notFound)))
	route("/api/", a.authenticated(http.HandlerFunc(a.notFound)))
	route("/", http.HandlerFunc(a.notFound))
	// The mux answers some requests before any route does (a redirect of
	// an unclean path such as //FHIR/R4/metadata): nosniff on those too.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		mux.ServeHTTP(w, r)
	})
}

// methodNotAllowed answers 405 with the allowed method.
func methodNotAllowed(a *api, allow string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		a.writeError(w, r, fhir.Errorf(fhir.KindMethodNotAllowed, fhir.CodeMethodNotAllowed, "%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
	})
}

// statusFor maps an error kind to its HTTP status: the one place where
// domain errors meet HTTP.
func statusFor(k fhir.Kind) int {
	switch k {
	case fhir.KindInvalid:
		return http.StatusBadRequest
	case fhir.KindUnauthorized:
		return http.StatusUnauthorized
	case fhir.KindForbidden:
		return http.StatusForbidden
	case fhir.KindNotFound:
		return http.StatusNotFound
	case fhir.KindConflict:
		return http.StatusConflict
	case fhir.KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case fhir.KindUnsupportedMedia:
		return http.StatusUnsupportedMediaType
	case fhir.KindMethodNotAllowed:
		return http.StatusMethodNotAllowed
	case fhir.KindThrottled:
		return http.StatusTooManyRequests
	case fhir.KindUnavailable:
		return http.StatusServiceUnavailable
	case fhir.KindInsufficientStorage:
		return http.StatusInsufficientStorage
	default:
		return http.StatusInternalServerError
	}
}

// writeError answers with err as an OperationOutcome, and logs it: an
// error (status 5xx) as a failure, a refusal (4xx) at debug level.
func (a *api) writeError(w http.ResponseWriter, r *http.Request, err error) {
	err = a.storageFull(err)
	err = overloaded(err)
	err = a.unavailable(err)
	status := statusFor(fhir.ErrorKind(err))
	if status >= 500 {
		a.Log.Error("request failed", zap.String("path", r.URL.Path), zap.String("request_id", r.Header.Get("X-Request-ID")), zap.Error(err))
	} else {
		a.Log.Debug("request rejected", zap.String("path", r.URL.Path), zap.Int("status", status), zap.Error(err))
	}
	answerError(w, err)
}

// answerError answers with err as an OperationOutcome, with the status
// statusFor gives its kind (an error that is no *fhir.Error is
// KindInternal: 500) and the headers that status carries, without logging
// it: every error answer of the API is written here, by writeError or by a
// caller that accounts for the error itself (the connection cap, which
// counts its refusals; the panic recoverer, which logs the panic).
func answerError(w http.ResponseWriter, err error) {
	status := statusFor(fhir.ErrorKind(err))
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="eps"`)
	}
	switch status {
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case http.StatusInsufficientStorage:
		// A full stream stays full until an operator acts: clients that
		// honour Retry-After come back in a minute, not in a storm.
		w.Header().Set("Retry-After", "60")
	}
	writeFHIR(w, status, fhir.ErrorOutcome(err))
}

// storageFull turns a write JetStream refused for want of space, wherever
// in err's chain, into the 507 answer: nothing of the request was stored.
// 507 rather than 503: a full stream does not clear in a second as the
// broker's other 503s do, and a 503 tells load balancers and gateways to
// try another instance, which shares the same full stream.
func (a *api) storageFull(err error) error {
	if err == nil || a.StorageFull.Full == nil || !a.StorageFull.Full(err) || fhir.ErrorKind(err) == fhir.KindInsufficientStorage {
		return err
	}
	var stream string
	if a.StorageFull.Stream != nil {
		stream = a.StorageFull.Stream(err)
	}
	if stream == "" && a.Storage != nil {
		a.Storage.NoteStorageFull("") // the event log's refusals are noted where they happen
	}
	where := "the broker's storage"
	if stream != "" {
		where = "the broker's storage for " + stream
	}
	return &fhir.Error{Kind: fhir.KindInsufficientStorage, Code: fhir.CodeInsufficientStorage, Display: "Insufficient storage",
		Diagnostics: where + " is full: nothing of this request was stored and nothing changed; retry later (the operators are alerted)", Err: err}
}

// overloaded turns a write the store refused because too many writes were
// already waiting to be committed (service.ErrOverloaded, wherever in
// err's chain) into its answer: 503 with Retry-After (answerError), nothing
// of the request stored. 503 rather than 429: it is the broker that is
// short of capacity, not the client that sends too much, and another
// instance may have room.
func overloaded(err error) error {
	if err == nil || !errors.Is(err, service.ErrOverloaded) {
		return err
	}
	return &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the broker is taking more writes than its store can commit now: nothing of this request was stored and nothing changed; retry after the Retry-After seconds", Err: err}
}

// unavailable turns an error that would be a 500 but means the store could
// not answer now (Deps.Unavailable: a timeout, no responders, a stream
// without a leader while the cluster has no quorum) into its answer: 503
// with Retry-After (answerError). The request was not acknowledged; a
// retry, here or on another instance, may succeed.
func (a *api) unavailable(err error) error {
	if err == nil || a.Unavailable == nil || statusFor(fhir.ErrorKind(err)) != http.StatusInternalServerError || !a.Unavailable(err) {
		return err
	}
	return &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
		Diagnostics: "the broker's store did not answer in time (the NATS cluster may be electing a leader or have lost its quorum): this request was not acknowledged; retry after the Retry-After seconds", Err: err}
}

// securityHeaders sets, before h answers, the headers every answer of the
// route pattern carries: nosniff on all; no-store on the FHIR API, the
// /api/ endpoints and the tracker's session (answers that hold patient data
// or tokens must not be kept by a cache or a browser); and on the tracker
// page X-Frame-Options DENY beside its CSP frame-ancestors (for browsers
// that know only the older header).
func securityHeaders(pattern string, h http.Handler) http.Handler {
	path := pattern[strings.IndexByte(pattern, ' ')+1:] // "GET /x" -> "/x"
	noStore := strings.HasPrefix(path, "/FHIR/") || strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/tracker/session")
	page := strings.HasPrefix(path, "/tracker") && !strings.HasPrefix(path, "/tracker/session")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		if noStore {
			hd.Set("Cache-Control", "no-store")
		}
		if page {
			hd.Set("X-Frame-Options", "DENY")
		}
		h.ServeHTTP(w, r)
	})
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func writeFHIR(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", FHIRMediaType+"; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

type ctxKey int

const (
	principalKey ctxKey = iota
	bodyKey
)

func principalFrom(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey).(auth.Principal)
	return p
}

func bodyFrom(ctx context.Context) []byte {
	b, _ := ctx.Value(bodyKey).([]byte)
	return b
}

// authenticated requires a valid bearer token (or, for reads from the
// tracker page, a session cookie) and puts its principal in the request
// context. The request counts against its user's rate; one whose
// credentials fail counts against its client address's.
func (a *api) authenticated(next http.Handler) http.Handler {
	return &authHandler{http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(err error) {
			if a.allowAddress(w, r) {
				a.writeError(w, r, err)
			}
		}
		token := auth.BearerToken(r.Header.Get("Authorization"))
		if token == "" && r.Header.Get("Authorization") == "" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			// The tracker page's session cookie, for reads only.
			if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
				if r.Header.Get(trackerHeader) == "" {
					refuse(fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "a session cookie is accepted only from the tracker page (header %s)", trackerHeader))
					return
				}
				ss, err := a.Sessions.TouchSession(r.Context(), c.Value, a.Now())
				switch {
				case errors.Is(err, service.ErrNoSession):
					refuse(fhir.Errorf(fhir.KindUnauthorized, fhir.CodeUnauthorised, "your session has ended: sign in again"))
					return
				case err != nil:
					a.writeError(w, r, unavailable("session", err))
					return
				}
				p := ss.Principal()
				if o, ok := w.(*observedWriter); ok {
					o.principal = p
				}
				if !a.allowUser(w, r, p) {
					return
				}
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
				return
			}
		}
		if token == "" {
			refuse(fhir.Errorf(fhir.KindUnauthorized, fhir.CodeUnauthorised, "missing bearer token: send Authorization: Bearer <JWT>"))
			return
		}
		p, err := a.Verifier.Verify(token)
		if err != nil {
			refuse(fhir.Errorf(fhir.KindUnauthorized, fhir.CodeUnauthorised, "invalid bearer token: %s", strings.TrimPrefix(err.Error(), auth.ErrUnauthorized.Error()+": ")))
			return
		}
		if o, ok := w.(*observedWriter); ok {
			o.principal = p
		}
		if !a.allowUser(w, r, p) {
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey, p)))
	})}
}

// sessionLimit tells the tracker's sign-in how many sessions a user keeps.
func (a *api) sessionLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.Limits.SessionsPerUser
		if n <= 0 {
			n = service.DefaultSessionsPerUser
		}
		next.ServeHTTP(w, r.WithContext(service.WithSessionLimit(r.Context(), n)))
	})
}

// withBody reads the whole request body, up to the configured limit (413
// past it), and refuses media types that are not JSON.
func (a *api) withBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := strings.ToLower(r.Header.Get("Content-Type"))
		if strings.Contains(ct, "xml") {
			a.writeError(w, r, fhir.Errorf(fhir.KindUnsupportedMedia, fhir.CodeUnsupportedMedia, "Content-Type %q is not supported: send application/fhir+json", ct))
			return
		}
		tooLarge := func() error {
			return fhir.Errorf(fhir.KindTooLarge, fhir.CodeTooLarge, "request body is larger than the limit of %d bytes", a.MaxBody)
		}
		if r.ContentLength > a.MaxBody {
			a.writeError(w, r, tooLarge())
			return
		}
		start := time.Now()
		body, err := readBody(http.MaxBytesReader(w, r.Body, a.MaxBody), r.ContentLength)
		if err != nil {
			// Declared here, not on the way of every request: errors.As
			// moves its target to the heap.
			var maxErr *http.MaxBytesError
			if errors.As(err, &maxErr) {
				a.writeError(w, r, tooLarge())
			} else {
				a.writeError(w, r, fhir.Errorf(fhir.KindInvalid, fhir.CodeInvalidValue, "request body could not be read: %v", err))
			}
			return
		}
		a.Metrics.IntakeStage.WithLabelValues("read").Observe(time.Since(start).Seconds())
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyKey, body)))
	})
}

// idempotent applies X-Request-ID: the same key from the same user with the
// same request answers as the first time did, and changes nothing.
func (a *api) idempotent(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-ID")
		if id == "" {
			next(w, r)
			return
		}
		if len(id) > 200 {
			a.writeError(w, r, &fhir.Error{Kind: fhir.KindInvalid, IssueType: "value", Code: fhir.CodeInvalidValue,
				Diagnostics: "X-Request-ID is longer than 200 characters (send a UUID)"})
			return
		}
		p := principalFrom(r.Context())
		key := service.RequestKey(p.Subject, p.ODS, id)
		hash := service.RequestHash(r.Method, r.URL.Path, bodyFrom(r.Context()))
		saved, res, err := a.Requests.ReserveRequest(r.Context(), key, hash, a.Now())
		switch {
		case errors.Is(err, service.ErrInFlight):
			w.Header().Set("Retry-After", "1")
			a.writeError(w, r, &fhir.Error{Kind: fhir.KindConflict, IssueType: "conflict", Code: fhir.CodeDuplicateRequestIDDifferent,
				Diagnostics: "a request with this X-Request-ID is still being processed; retry shortly to get its answer"})
			return
		case err != nil:
			a.writeError(w, r, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable, Diagnostics: "X-Request-ID could not be checked; retry", Err: err})
			return
		case saved != nil && saved.BodyHash == hash:
			body := saved.Body
			if saved.Rebuild {
				if body, err = a.releaseAnswer(r.Context(), saved.Release); err != nil {
					a.writeError(w, r, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
						Diagnostics: "the answer to this X-Request-ID could not be read again; nothing was changed; retry", Err: err})
					return
				}
				if service.AnswerHash(body) != saved.AnswerHash {
					a.Log.Warn("X-Request-ID release answer rebuilt differently (same prescriptions)", zap.Int("released", len(saved.Release)))
				}
			}
			w.Header().Set("X-Idempotent-Replay", "true")
			w.Header().Set("Content-Type", saved.ContentType)
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(saved.Status)
			_, _ = w.Write(body)
			return
		case saved != nil:
			a.writeError(w, r, &fhir.Error{Kind: fhir.KindConflict, IssueType: "duplicate", Code: fhir.CodeDuplicateRequestIDDifferent,
				Diagnostics: "X-Request-ID was already used for a different request; a retry must resend the same request, a new request needs a new X-Request-ID"})
			return
		}
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		note := &replayNote{takenOver: res.TakenOver}
		next(rec, r.WithContext(context.WithValue(r.Context(), replayNoteKey{}, note)))
		// Recorded even when the client has gone: its retry must get this answer.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
		if final(rec.status) {
			saved := &service.SavedResponse{BodyHash: hash, Status: rec.status,
				ContentType: rec.Header().Get("Content-Type"), Body: rec.body}
			if note.release != nil && rec.status == http.StatusOK {
				// A release: what it handed over, not the orders themselves.
				saved.Body, saved.Rebuild, saved.Release, saved.AnswerHash = nil, true, note.release, service.AnswerHash(rec.body)
			}
			err = a.Requests.CompleteRequest(ctx, key, res.Rev, saved)
		} else if note.unresolved {
			// A release that may have handed prescriptions over: its
			// retry, on any instance, must get them (see noteUnresolved).
			err = a.Requests.CompleteRequest(ctx, key, res.Rev,
				&service.SavedResponse{BodyHash: hash, Unresolved: true, Since: res.TakenOver})
		} else {
			err = a.Requests.ReleaseRequest(ctx, key, res.Rev)
		}
		cancel()
		if err != nil {
			a.Log.Warn("X-Request-ID answer not recorded", zap.Error(err))
		}
		rec.flush()
	})
}

// replayNote is what a handler tells the idempotency middleware about its
// answer: a release names the prescriptions it handed over, from which a
// replay rebuilds the answer.
type replayNote struct {
	release []service.ReleasedRef
	// takenOver is when the key was first reserved, when this request took
	// over a reservation whose request never answered (zero otherwise).
	takenOver time.Time
	// unresolved: a release whose outcome is not known answered 503; its
	// reservation is kept for its retry instead of given up.
	unresolved bool
}

type replayNoteKey struct{}

// noteRelease tells the idempotency middleware (if the request has an
// X-Request-ID) which prescriptions a release handed over.
func noteRelease(ctx context.Context, refs []service.ReleasedRef) {
	if n, ok := ctx.Value(replayNoteKey{}).(*replayNote); ok {
		n.release = append(make([]service.ReleasedRef, 0, len(refs)), refs...)
	}
}

// takenOver is when the request's X-Request-ID was first reserved, when
// this request took the reservation over from one that never answered; zero
// otherwise.
func takenOver(ctx context.Context) time.Time {
	if n, ok := ctx.Value(replayNoteKey{}).(*replayNote); ok {
		return n.takenOver
	}
	return time.Time{}
}

// final reports whether an answer is final, and so is replayed for the same
// X-Request-ID: not a 5xx, a timeout or a throttle, which a retry may change.
func final(status int) bool {
	return status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// recorder holds a response back until it has been remembered.
type recorder struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }
func (r *recorder) flush() {
	r.ResponseWriter.Header().Set("Content-Length", strconv.Itoa(len(r.body)))
	r.ResponseWriter.WriteHeader(r.status)
	_, _ = r.ResponseWriter.Write(r.body)
}

func (a *api) processMessage(w http.ResponseWriter, r *http.Request) {
	out, err := a.Intake.ProcessMessage(r.Context(), principalFrom(r.Context()), bodyFrom(r.Context()))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if out.Status != 0 {
		status = out.Status
	}
	writeFHIR(w, status, out.Body)
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := a.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+err.Error()+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
	// Storage near or at its limits: said here, without making the broker
	// unready (every instance shares the streams, and reads go on).
	if a.Storage == nil {
		return
	}
	if warnings, err := a.Storage.StorageWarnings(ctx); err == nil {
		for _, s := range warnings {
			_, _ = io.WriteString(w, s+"\n")
		}
	}
}

func (a *api) notFound(w http.ResponseWriter, r *http.Request) {
	a.writeError(w, r, fhir.Errorf(fhir.KindNotFound, fhir.CodeResourceNotFound, "no endpoint %s %s (see GET /FHIR/R4/metadata)", r.Method, r.URL.Path))
}
