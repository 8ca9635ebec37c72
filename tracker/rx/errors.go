package rx

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an error by what the caller did wrong (or what went wrong
// here). The HTTP layer maps each kind to a status code in one place
// (broker/httpapi statusFor); the fhir package names the same kinds.
type Kind uint8

const (
	KindInternal         Kind = iota // a fault of the broker's: 500
	KindInvalid                      // bad input: 400
	KindUnauthorized                 // no or bad credentials: 401
	KindForbidden                    // not allowed for this principal: 403
	KindNotFound                     // no such resource: 404
	KindConflict                     // conflicts with the current state: 409
	KindTooLarge                     // body over the limit: 413
	KindUnsupportedMedia             // media type not accepted: 415
	KindUnavailable                  // a dependency is down; retry: 503
	KindThrottled                    // too many requests: 429
	KindMethodNotAllowed             // 405
	// KindInsufficientStorage is a write the store refused for want of
	// space; nothing was stored: 507.
	KindInsufficientStorage
)

// EPS codes (issue details.coding) of the domain core's refusals. The fhir
// package gives each its FHIR issue type, code system and display.
const (
	CodeInvalidValue            = "INVALID_VALUE"
	CodeResourceNotFound        = "RESOURCE_NOT_FOUND"
	CodeInvalidStateTransition  = "INVALID_STATE_TRANSITION"
	CodePrescriptionWithAnother = "PRESCRIPTION_WITH_ANOTHER_DISPENSER"
)

// Error is a refusal of the domain core: what kind of fault it is, its EPS
// code and its words. It knows nothing of the wire: the fhir package turns
// it into an OperationOutcome issue (fhir.IssueFor, fhir.ErrorOutcome).
type Error struct {
	Op      string // what was being done, e.g. "release"; may be empty
	Kind    Kind
	Code    string // EPS code, one of the Code constants
	Message string // in words: what is wrong
	// Org, when set, is the ODS code of an organisation the answer names
	// (the dispenser that holds the prescription).
	Org string
	// RCode, when set, is the R-code the answer carries besides Code
	// (SameNHSNumber: R-5000).
	RCode CancelCode
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Op != "" {
		b.WriteString(e.Op)
		b.WriteString(": ")
	}
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// Errorf builds an error of the given kind and code with words.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// KindOf is the kind of err: that of the first *Error in its chain,
// KindInternal otherwise.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// CodeOf is the EPS code of the first *Error in err's chain, "" when there
// is none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
