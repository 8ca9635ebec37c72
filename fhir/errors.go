package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/tracker/rx"
	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"
)

// Kind classifies an error by what the caller did wrong (or what went wrong
// here): the domain core's kinds (rx.Kind), one set for every error. The
// HTTP layer maps each kind to a status code in one place.
type Kind = rx.Kind

const (
	KindInternal            = rx.KindInternal            // a fault of the broker's: 500
	KindInvalid             = rx.KindInvalid             // bad input: 400
	KindUnauthorized        = rx.KindUnauthorized        // no or bad credentials: 401
	KindForbidden           = rx.KindForbidden           // not allowed for this principal: 403
	KindNotFound            = rx.KindNotFound            // no such resource: 404
	KindConflict            = rx.KindConflict            // conflicts with the current state: 409
	KindTooLarge            = rx.KindTooLarge            // body over the limit: 413
	KindUnsupportedMedia    = rx.KindUnsupportedMedia    // media type not accepted: 415
	KindUnavailable         = rx.KindUnavailable         // a dependency is down; retry: 503
	KindThrottled           = rx.KindThrottled           // too many requests: 429
	KindMethodNotAllowed    = rx.KindMethodNotAllowed    // 405
	KindInsufficientStorage = rx.KindInsufficientStorage // a write the store refused for want of space; nothing was stored: 507
)

// CodeInsufficientStorage is the code of a KindInsufficientStorage answer.
const CodeInsufficientStorage = "INSUFFICIENT_STORAGE"

// Code systems for issue[].details.coding.
const (
	SystemSpineErrorOrWarningCode = "https://fhir.nhs.uk/CodeSystem/Spine-ErrorOrWarningCode"
	SystemEPSIssueCode            = "https://fhir.nhs.uk/CodeSystem/EPS-IssueCode"
)

// EPS codes used in details.coding.
const (
	CodeMissingValue                = "MISSING_VALUE"
	CodeInvalidValue                = rx.CodeInvalidValue
	CodeInvalidChecksum             = "INVALID_CHECKSUM"
	CodeDuplicatePrescriptionID     = "DUPLICATE_PRESCRIPTION_ID"
	CodeMissingDigitalSignature     = "MISSING_DIGITAL_SIGNATURE"
	CodePrescriptionWithAnother     = rx.CodePrescriptionWithAnother
	CodeResourceNotFound            = rx.CodeResourceNotFound
	CodeInvalidStateTransition      = rx.CodeInvalidStateTransition
	CodeFailureToProcessMessage     = "FAILURE_TO_PROCESS_MESSAGE"
	CodeAccessDenied                = "ACCESS_DENIED"
	CodeUnauthorised                = "UNAUTHORIZED"
	CodeServiceUnavailable          = "SERVICE_UNAVAILABLE"
	CodeServerError                 = "SERVER_ERROR"
	CodeTooLarge                    = "MESSAGE_TOO_LARGE"
	CodeUnsupportedMedia            = "UNSUPPORTED_MEDIA_TYPE"
	CodeDuplicateRequestIDDifferent = "DUPLICATE_REQUEST_ID"
	CodeMethodNotAllowed            = "METHOD_NOT_ALLOWED"
)

// Coding is a FHIR Coding.
type Coding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

// Error is the one error type of the broker's domain. It carries what an
// OperationOutcome issue needs: the FHIR issue type, the EPS code (and any
// further codings), the words and the FHIRPath of the offending field.
type Error struct {
	Kind        Kind
	Op          string   // what was being done, e.g. "validate prescription-order"
	IssueType   string   // FHIR issue type: invalid, value, required, structure, ...
	Code        string   // EPS code, e.g. INVALID_VALUE
	CodeSystem  string   // system of Code; SystemSpineErrorOrWarningCode when empty
	Display     string   // display of Code
	Diagnostics string   // in words: what is wrong and where
	Expression  []string // FHIRPath of the field
	Codings     []Coding // further codings after Code
	// SupportingOrg, when set, is an organisation's ODS code the answer
	// names in a contained Organization (e.g. the dispenser that holds a
	// prescription), referenced by Extension-Spine-supportingInfo.
	SupportingOrg string
	Err           error // the underlying cause, never shown to callers for KindInternal
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
	if e.Diagnostics != "" {
		b.WriteString(e.Diagnostics)
	} else if e.Display != "" {
		b.WriteString(e.Display)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Invalid builds a KindInvalid error with the given EPS code, FHIR issue type,
// FHIRPath and words.
func Invalid(code, issueType, expression, format string, args ...any) *Error {
	e := &Error{Kind: KindInvalid, Code: code, IssueType: issueType, Diagnostics: fmt.Sprintf(format, args...)}
	if expression != "" {
		e.Expression = []string{expression}
	}
	return e
}

// Errorf builds an error of the given kind with words only.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, IssueType: defaultIssueType(kind), Diagnostics: fmt.Sprintf(format, args...)}
}

// ErrorKind returns the kind of err: that of the first *Error (or, when
// there is none, *rx.Error) in its chain, KindInternal otherwise.
func ErrorKind(err error) Kind {
	if e, ok := asError(err); ok {
		return e.Kind
	}
	return KindInternal
}

// asError is the first *Error in err's chain or, when there is none, the
// first *rx.Error as the *Error it is answered as (FromRx).
func asError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	var r *rx.Error
	if errors.As(err, &r) {
		return FromRx(r), true
	}
	return nil, false
}

// rxAnswer is how an EPS code of the domain core is answered: its FHIR
// issue type, code system (SystemSpineErrorOrWarningCode when empty),
// display (the words when empty) and FHIRPath.
type rxAnswer struct{ issueType, system, display, expression string }

// rxAnswers are the answers of the domain core's EPS codes.
var rxAnswers = map[string]rxAnswer{
	rx.CodeInvalidStateTransition:  {"business-rule", SystemEPSIssueCode, "", ""},
	rx.CodeInvalidValue:            {"value", SystemEPSIssueCode, "", ""},
	rx.CodeResourceNotFound:        {"not-found", "", "Resource not found", ""},
	rx.CodePrescriptionWithAnother: {"business-rule", SystemEPSIssueCode, "Prescription is with another dispenser", ""},
	rx.CodeItemNotFound:            {"business-rule", "", "Item not found", "Bundle.entry.resource.ofType(MedicationDispense).authorizingPrescription"},
}

// rCodeAnswer is the answer of a domain core error carrying an R-code
// (rx.SameNHSNumber's R-5000): a business rule of Spine's, its EPS code in
// Spine's code system, and the R-code as a further coding.
var rCodeAnswer = rxAnswer{issueType: "business-rule"}

// FromRx is a domain core error as the *Error it is answered as: the one
// place an rx.Error becomes an OperationOutcome issue (IssueFor,
// ErrorOutcome), with the organisation it names as SupportingOrg.
func FromRx(r *rx.Error) *Error {
	a, ok := rxAnswers[r.Code]
	switch {
	case r.RCode != "":
		a = rCodeAnswer
	case !ok:
		a.issueType = defaultIssueType(r.Kind)
	}
	e := &Error{Kind: r.Kind, Op: r.Op, IssueType: a.issueType, Code: r.Code, CodeSystem: a.system,
		Display: a.display, Diagnostics: r.Message, SupportingOrg: r.Org}
	if a.expression != "" {
		e.Expression = []string{a.expression}
	}
	if r.RCode != "" {
		e.Codings = []Coding{{System: SystemStatusHistory, Code: string(r.RCode), Display: r.RCode.Display()}}
	}
	return e
}

func defaultIssueType(k Kind) string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindUnauthorized:
		return "security"
	case KindForbidden:
		return "forbidden"
	case KindNotFound:
		return "not-found"
	case KindConflict:
		return "conflict"
	case KindTooLarge:
		return "too-long"
	case KindUnsupportedMedia:
		return "not-supported"
	case KindMethodNotAllowed:
		return "not-supported"
	case KindUnavailable:
		return "transient"
	case KindThrottled:
		return "throttled"
	case KindInsufficientStorage:
		return "no-store"
	default:
		return "exception"
	}
}

// Issue is one OperationOutcome issue.
type Issue struct {
	Severity    string   `json:"severity"`
	Code        string   `json:"code"`
	Details     *Concept `json:"details,omitempty"`
	Diagnostics string   `json:"diagnostics,omitempty"`
	Expression  []string `json:"expression,omitempty"`
}

// Concept is a FHIR CodeableConcept.
type Concept struct {
	Coding []Coding `json:"coding,omitempty"`
	Text   string   `json:"text,omitempty"`
}

// OperationOutcome is the FHIR resource every answer of a message carries
// (an error's, or an accepted message's informational one). It is declared
// here, not taken from samply's fhir.OperationOutcome (v0.3.2), which has
// no contained resources (the answer naming the dispenser that holds a
// prescription contains its Organization) and writes resourceType last:
// every answer's bytes would change. What it holds besides its issues is
// samply's.
type OperationOutcome struct {
	ResourceType string            `json:"resourceType"`
	ID           string            `json:"id,omitempty"`
	Meta         *fm.Meta          `json:"meta,omitempty"`
	Contained    []fm.Organization `json:"contained,omitempty"`
	Extension    []fm.Extension    `json:"extension,omitempty"`
	Issue        []Issue           `json:"issue"`
}

// IssueFor turns an error into an OperationOutcome issue. Errors that are not
// *Error, and KindInternal errors, give a generic exception issue whose words
// reveal nothing of the cause.
func IssueFor(err error) Issue {
	e, ok := asError(err)
	if !ok || e.Kind == KindInternal {
		return Issue{Severity: "error", Code: "exception",
			Details:     &Concept{Coding: []Coding{{System: SystemSpineErrorOrWarningCode, Code: CodeServerError, Display: "Unexpected internal server error"}}},
			Diagnostics: "the broker could not process the request; it has not changed anything it did not acknowledge, and the request may be retried"}
	}
	is := Issue{Severity: "error", Code: e.IssueType, Diagnostics: e.Diagnostics, Expression: e.Expression}
	if is.Code == "" {
		is.Code = defaultIssueType(e.Kind)
	}
	if e.Code != "" || len(e.Codings) > 0 {
		is.Details = &Concept{}
		if e.Code != "" {
			sys := e.CodeSystem
			if sys == "" {
				sys = SystemSpineErrorOrWarningCode
			}
			display := e.Display
			if display == "" {
				display = e.Diagnostics
			}
			is.Details.Coding = append(is.Details.Coding, Coding{System: sys, Code: e.Code, Display: display})
		}
		is.Details.Coding = append(is.Details.Coding, e.Codings...)
	}
	return is
}

// ErrorOutcome encodes err as an OperationOutcome.
func ErrorOutcome(err error) []byte {
	oo := OperationOutcome{ResourceType: "OperationOutcome", Issue: []Issue{IssueFor(err)}}
	if e, ok := asError(err); ok && e.Kind != KindInternal && e.SupportingOrg != "" {
		id := "org-" + strings.ToLower(e.SupportingOrg)
		oo.Contained = []fm.Organization{{Id: &id,
			Identifier: []fm.Identifier{{System: ptr(SystemODSCode), Value: &e.SupportingOrg}}}}
		oo.Extension = []fm.Extension{{Url: "https://fhir.nhs.uk/StructureDefinition/Extension-Spine-supportingInfo",
			ValueReference: &fm.Reference{Reference: ptr("#" + id)}}}
	}
	return encodeOutcome(oo)
}

// InformationalOutcome is the OperationOutcome of an accepted message, with
// optional warning issues after the informational one.
func InformationalOutcome(now time.Time, warnings ...Issue) []byte {
	if len(warnings) == 0 {
		// The answer to nearly every accepted message: written directly,
		// byte for byte what json.Marshal writes (TestInformationalOutcome),
		// without reflecting over the FHIR types.
		b := make([]byte, 0, len(informationalHead)+len(time.RFC3339)+len(informationalTail)+10)
		b = append(b, informationalHead...)
		b = now.UTC().AppendFormat(b, time.RFC3339)
		return append(b, informationalTail...)
	}
	oo := OperationOutcome{ResourceType: "OperationOutcome",
		Meta:  &fm.Meta{LastUpdated: ptr(now.UTC().Format(time.RFC3339))},
		Issue: []Issue{{Severity: "information", Code: "informational"}}}
	oo.Issue = append(oo.Issue, warnings...)
	return encodeOutcome(oo)
}

// The OperationOutcome of an accepted message without warnings, around its
// meta.lastUpdated.
const (
	informationalHead = `{"resourceType":"OperationOutcome","meta":{"lastUpdated":"`
	informationalTail = `"},"issue":[{"severity":"information","code":"informational"}]}`
)

func encodeOutcome(oo OperationOutcome) []byte {
	b, err := json.Marshal(oo)
	if err != nil { // cannot happen: the types are plain
		return []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"exception"}]}`)
	}
	return b
}
