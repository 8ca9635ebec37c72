package httpapi

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker"
)

// The HTTP layer's ports: what it calls of the services and the store, one
// small interface per concern, declared here where they are used (the
// services and the JetStream store satisfy them; the package's tests use
// fakes). The types they carry are the services' own (package
// broker/service), named as such here and wherever the handlers use them.

// Intake takes the messages of POST $process-message (orders, cancellations
// and dispense notifications).
type Intake interface {
	ProcessMessage(ctx context.Context, p auth.Principal, body []byte) (*service.Outcome, error)
}

// Releases hands prescriptions over to dispensers (POST Task/$release), and
// reads again what a release handed over.
type Releases interface {
	ReleaseByID(ctx context.Context, p auth.Principal, owner, id, messageID string, body []byte) (*service.Released, error)
	ReleaseNominated(ctx context.Context, p auth.Principal, owner, messageID string, body []byte, max int) ([]service.Released, error)
	// ReleasedUnder is what a release with messageID, reserved at since and
	// never answered, handed over.
	ReleasedUnder(ctx context.Context, p auth.Principal, owner, messageID string, since time.Time) ([]service.Released, error)
	// OrderOf is a prescription's order message, byte for byte.
	OrderOf(ctx context.Context, id string) ([]byte, error)
}

// Dispensing applies a dispenser's return, withdraw (POST Task) and claim
// (POST Claim).
type Dispensing interface {
	Task(ctx context.Context, p auth.Principal, t *fhir.TaskRequest, body []byte) error
	Claim(ctx context.Context, p auth.Principal, c *fhir.ClaimRequest, body []byte) error
}

// Requests keeps the answers of requests sent with an X-Request-ID.
type Requests interface {
	// ReserveRequest claims key: the answer given before (saved), a
	// reservation to complete or release, or service.ErrInFlight.
	ReserveRequest(ctx context.Context, key, hash string, now time.Time) (*service.SavedResponse, service.Reservation, error)
	CompleteRequest(ctx context.Context, key string, rev uint64, r *service.SavedResponse) error
	ReleaseRequest(ctx context.Context, key string, rev uint64) error
}

// Sessions keeps the tracker page's sign-ins.
type Sessions interface {
	NewSession(ctx context.Context, p auth.Principal, now time.Time) (string, error)
	// TouchSession is the session of cookie, used now (service.ErrNoSession when
	// it has ended).
	TouchSession(ctx context.Context, cookie string, now time.Time) (*service.Session, error)
	EndSession(ctx context.Context, cookie string) error
}

// Auditor writes one entry to the audit trail, durably, before the read it
// records is answered.
type Auditor interface {
	Audit(ctx context.Context, p auth.Principal, e service.AuditEntry) error
}

// AuditTrail is the audit trail: written by every audited read, listed by
// admins.
type AuditTrail interface {
	Auditor
	AuditEntries(ctx context.Context, q service.AuditQuery) ([]service.AuditEntry, error)
}

// TrackerIndex finds prescriptions for the tracker (a projection of the
// event log).
type TrackerIndex interface {
	Get(id string) (tracker.Entry, bool)
	ByNHSNumber(nhs string) []tracker.Entry
	// Applied is the sequence of the last event applied; WaitApplied waits
	// until seq is.
	Applied() uint64
	WaitApplied(ctx context.Context, seq uint64) error
}

// Records reads prescriptions from the event log.
type Records interface {
	// Current is the latest event about a prescription (service.ErrNotFound when
	// there is none).
	Current(ctx context.Context, id string) (*service.Event, error)
	// Event is the event log message at seq.
	Event(ctx context.Context, seq uint64) (*service.Event, error)
}

// NominationReads reads a patient's nominations and their history.
type NominationReads interface {
	Nominations(ctx context.Context, nhs string) (*nomination.Patient, uint64, error)
	NominationHistory(ctx context.Context, nhs string) ([]nomination.Change, error)
}

// NominationRegistry changes nominations, one by one or by bulk import.
type NominationRegistry interface {
	Set(ctx context.Context, p auth.Principal, nhs string, t nomination.Type, ods string) (*nomination.Patient, error)
	Remove(ctx context.Context, p auth.Principal, nhs string, t nomination.Type) (*nomination.Patient, error)
	ImportAllowed(p auth.Principal) error
	Import(ctx context.Context, p auth.Principal, src service.ImportSource, o service.ImportOptions) (*service.ImportResult, error)
}

// NominationReports holds the nomination changes the reports are made of.
type NominationReports interface {
	// Wait returns once every change stored when it was called is held.
	Wait(ctx context.Context) error
	Changes() []nomination.Record
}

// Storage says how full the broker's storage is.
type Storage interface {
	// StorageWarnings are lines about streams near or at their limits.
	StorageWarnings(ctx context.Context) ([]string, error)
	// NoteStorageFull records a write refused for want of space on stream
	// ("" when not known).
	NoteStorageFull(stream string)
}

// StorageFull tells a write refused for want of space (Full) and on which
// stream ("" when not known), wherever in an error's chain.
type StorageFull struct {
	Full   func(error) bool
	Stream func(error) string
}

// Metrics are the HTTP layer's metrics.
type Metrics struct {
	// Registry is served on GET /metrics.
	Registry *prometheus.Registry
	// Requests and Duration count and time requests: by route, method and
	// code; by route, method and outcome (2xx, 4xx, 5xx).
	Requests *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	// IntakeStage times the stages of a request (stage "read": its body).
	IntakeStage *prometheus.HistogramVec
}
