package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/nomination"
)

// The records of the store that the HTTP layer reads and writes through its
// ports (broker/httpapi/ports.go): the audit trail, the tracker page's
// sessions, the answers kept for X-Request-ID, and the nomination import.
// The JetStream adapter (package broker) keeps them.

// AuditEntry is one tracker look-up: who looked, from which organisation and
// in which role, what they searched for, when, and how many prescriptions
// they were shown.
type AuditEntry struct {
	Time           time.Time `json:"time"`
	User           string    `json:"user"`
	Org            string    `json:"org"`
	Role           string    `json:"role"`
	Action         string    `json:"action"` // search or detail
	PrescriptionID string    `json:"prescriptionId,omitempty"`
	NHSNumber      string    `json:"nhsNumber,omitempty"` // searched for, or of the prescription shown
	Results        int       `json:"results"`
	Outcome        int       `json:"outcome"` // the HTTP status answered
	// Issue is the repeat dispensing issue asked for (issueNumber), if any.
	Issue int `json:"issue,omitempty"`
	// Query is which report was read: its path and query string (a
	// nomination report names a dispenser and a period, no patient).
	Query string `json:"query,omitempty"`
	Seq   uint64 `json:"seq,omitempty"`
}

// AuditQuery filters the audit trail.
type AuditQuery struct {
	User      string // "" for every user
	NHSNumber string // "" for every patient
	Limit     int
}

// Session is a tracker page sign-in: the principal of the bearer token the
// user signed in with. It ends after SessionIdle without use, and never
// outlives the token.
type Session struct {
	Subject string    `json:"sub"`
	ODS     string    `json:"ods"`
	Role    auth.Role `json:"role"`
	Expires time.Time `json:"exp"`  // the token's expiry
	Used    time.Time `json:"used"` // last use, by the broker's clock
}

// Principal is the session's user.
func (s *Session) Principal() auth.Principal {
	return auth.Principal{Subject: s.Subject, ODS: s.ODS, Role: s.Role, Expires: s.Expires}
}

// DefaultSessionsPerUser is how many live tracker page sessions a user
// keeps when the request's context sets no limit (WithSessionLimit).
const DefaultSessionsPerUser = 5

type sessionLimitKey struct{}

// WithSessionLimit sets, for NewSession, how many live sessions one user
// may hold.
func WithSessionLimit(ctx context.Context, n int) context.Context {
	return context.WithValue(ctx, sessionLimitKey{}, n)
}

// ErrNoSession is a cookie with no live session.
var ErrNoSession = errors.New("no session")

// SavedResponse is the answer given to a request that carried an
// X-Request-ID, kept so that the same request sent again is answered the
// same way without being processed again.
//
// A release's answer is not kept: it holds every released order whole (3.4
// MB for 25 large ones, more than one NATS message takes, and patient data
// besides). Release lists what was handed over instead, and the same answer
// is rebuilt from the event log (AnswerHash checks that it is the same).
//
// Other answers may name a patient (a nomination change answers the
// patient's nominations; an error may quote what was sent), so in the bucket
// the body is sealed (AES-256-GCM under a key derived from the pseudonym
// key, bound to the bucket key) and the request hash is keyed (a nomination
// change's path holds the NHS number, and a plain hash of it could be
// reversed by trying every number). The bucket entry expires with
// --idempotency-ttl. Store methods take and return them in clear.
type SavedResponse struct {
	BodyHash    string `json:"bodyHash"` // SHA-256 of method, path and body (keyed in the bucket)
	Status      int    `json:"status"`
	ContentType string `json:"contentType"`
	Body        []byte `json:"body,omitempty"`
	// Sealed is Body as kept in the bucket.
	Sealed []byte `json:"sealed,omitempty"`

	// Since is when the key was first reserved, set when a retry takes an
	// abandoned reservation over (kept by the next takeover): the work of
	// the request it was reserved for is in the event log after it.
	Since time.Time `json:"since,omitzero"`

	// Unresolved marks a reservation kept, without an answer, for a
	// release answered 503 because its writes could not be confirmed
	// (ErrReleaseUnresolved): a retry of the same request, on any
	// instance, takes it over at once (Reservation.TakenOver = Since) and
	// hands over what it released. Status is 0.
	Unresolved bool `json:"unresolved,omitempty"`

	Release    []ReleasedRef `json:"release,omitempty"`
	Rebuild    bool          `json:"rebuild,omitempty"`    // the answer is rebuilt from Release (which may be empty)
	AnswerHash string        `json:"answerHash,omitempty"` // SHA-256 of the answer's body, when rebuilt
}

// ReleasedRef is one prescription a release handed over: what its answer
// needs to be written again (the order's bytes are read from the event log).
type ReleasedRef struct {
	ID       string `json:"id"`
	BundleID string `json:"bundleId"`
	Issue    int    `json:"issue,omitempty"`
	Issues   int    `json:"issues,omitempty"`
}

// AnswerHash is SavedResponse.AnswerHash for an answer's body.
func AnswerHash(body []byte) string {
	h := sha256.Sum256(body)
	return hex.EncodeToString(h[:])
}

// RequestKey is the bucket key of an X-Request-ID: scoped to the user and
// organisation that sent it, so one client can never read another's answer.
func RequestKey(subject, ods, requestID string) string {
	h := sha256.Sum256([]byte(subject + "\x00" + ods + "\x00" + requestID))
	return hex.EncodeToString(h[:])
}

// RequestHash is SavedResponse.BodyHash for a request.
func RequestHash(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method + " " + path + "\x00"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// ErrInFlight says that a request with the same X-Request-ID is being
// processed now.
var ErrInFlight = errors.New("a request with this X-Request-ID is in progress")

// Reservation is a key claimed for a request.
type Reservation struct {
	Rev uint64
	// TakenOver is when the key was first reserved, when this reservation
	// took over one abandoned without an answer (its request may have done
	// part or all of its work: see Lifecycle.ReleasedUnder); zero otherwise.
	TakenOver time.Time
}

// ImportSource yields the rows of an import: nomination.ImportParser.
type ImportSource interface {
	Next() (nomination.ImportRow, *nomination.Rejection, error)
}

// ImportResult is the outcome of a bulk import.
type ImportResult struct {
	Rows      int64 `json:"rows"`      // data rows read (stored + unchanged + rejected)
	Stored    int64 `json:"stored"`    // rows that changed a patient's nominations
	Unchanged int64 `json:"unchanged"` // valid rows already so on record
	Rejected  int64 `json:"rejected"`  // invalid rows, not applied
	// Rejections are the first MaxImportRejections rejected rows, by line;
	// MoreRejections is how many more there were.
	Rejections     []nomination.Rejection `json:"rejections"`
	MoreRejections int64                  `json:"moreRejections"`
}

// ImportOptions tune an import.
type ImportOptions struct {
	Workers int // rows applied at once (broker.DefaultImportWorkers when 0)
}

// SessionLimit is the limit of live sessions set on ctx (WithSessionLimit),
// DefaultSessionsPerUser when none.
func SessionLimit(ctx context.Context) int {
	if n, ok := ctx.Value(sessionLimitKey{}).(int); ok && n > 0 {
		return n
	}
	return DefaultSessionsPerUser
}
