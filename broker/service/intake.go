package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// Intake accepts FHIR messages posted to $process-message: it decodes and
// validates them, checks who may send them, and makes each accepted message
// real with one durable write to the event log.
type Intake struct {
	// Lifecycle handles the messages about existing prescriptions
	// (dispense notifications, cancellations).
	Lifecycle *Lifecycle
	rx        Prescriptions
	noms      Nominations
	metrics   Metrics
	log       *zap.Logger
	now       func() time.Time
}

// NewIntake returns the intake service over the event log and the
// nomination registry. now is the clock (time.Now in production).
func NewIntake(rx Prescriptions, noms Nominations, m Metrics, log *zap.Logger, now func() time.Time) *Intake {
	if m == nil {
		m = NoMetrics{}
	}
	return &Intake{rx: rx, noms: noms, metrics: m, log: log, now: now}
}

// Outcome is the answer to an accepted message: the FHIR resource to return.
type Outcome struct {
	// Status is the HTTP status when not 200 (a cancellation answered with
	// an R-code other than R-0001 is a Bundle with a 4xx status).
	Status         int
	Body           []byte
	PrescriptionID string
	// Resent is true when the message had been accepted before and nothing
	// new was stored.
	Resent bool
}

// ProcessMessage handles one $process-message request body from principal p.
// Errors are *fhir.Error values whose Kind says what the caller did wrong.
func (in *Intake) ProcessMessage(ctx context.Context, p auth.Principal, body []byte) (*Outcome, error) {
	start := time.Now()
	msg, err := fhir.DecodeMessage(body)
	in.stage("decode", start)
	if err != nil {
		in.metrics.CountOrder("invalid")
		return nil, err
	}
	switch msg.Event {
	case fhir.EventPrescriptionOrder:
		return in.order(ctx, p, msg)
	case fhir.EventDispenseNotification:
		n, err := msg.DispenseNotification()
		if err != nil {
			return nil, err
		}
		if err := in.Lifecycle.Dispense(ctx, p, n, msg.Raw); err != nil {
			return nil, err
		}
		return &Outcome{Body: fhir.InformationalOutcome(in.now()), PrescriptionID: n.PrescriptionID}, nil
	case fhir.EventPrescriptionOrderUpdate:
		c, err := msg.Cancellation()
		if err != nil {
			return nil, err
		}
		code, err := in.Lifecycle.Cancel(ctx, p, c, msg.Raw)
		if err != nil {
			return nil, err
		}
		if code.Refusal() {
			return nil, fhir.RCodeError(code)
		}
		body, err := fhir.CancelResponse(msg.Raw, code, in.now())
		if err != nil {
			return nil, err
		}
		out := &Outcome{Body: body, PrescriptionID: c.PrescriptionID}
		if code != rx.RCancelled {
			out.Status = 400
		}
		return out, nil
	default:
		return nil, &fhir.Error{Kind: fhir.KindInvalid, Op: "process-message", IssueType: "not-supported",
			Code: fhir.CodeInvalidValue, Expression: []string{"Bundle.entry[0].resource.eventCoding.code"},
			Diagnostics: fmt.Sprintf("message event %q is not supported by this broker (see GET /FHIR/R4/metadata)", msg.Event)}
	}
}

func (in *Intake) order(ctx context.Context, p auth.Principal, msg *fhir.Message) (*Outcome, error) {
	if p.Role != auth.RolePrescriber {
		in.metrics.CountOrder("forbidden")
		return nil, fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "role %q may not send prescription orders", p.Role)
	}
	// EPS takes the acting organisation from the authenticated caller; a
	// sender, when it names an organisation (an ODS code given as an
	// identifier, or a reference to an Organization or PractitionerRole
	// that resolves to one), must be that organisation (CONTRACT.md: a
	// deliberate difference, for security). A sender naming none is as
	// absent.
	if msg.Sender != "" && msg.Sender != p.ODS {
		in.metrics.CountOrder("forbidden")
		return nil, &fhir.Error{Kind: fhir.KindForbidden, IssueType: "forbidden", Code: fhir.CodeAccessDenied,
			Expression:  []string{"Bundle.entry[0].resource.sender"},
			Diagnostics: "MessageHeader.sender is not the organisation of the authenticated user; a prescriber may only send for its own organisation"}
	}
	now := in.now()
	start := time.Now()
	order, err := msg.Order(now)
	in.stage("validate", start)
	if err != nil {
		in.metrics.CountOrder("invalid")
		return nil, err
	}
	if order.Sender == "" {
		order.Sender = p.ODS
	}

	rec := rx.Create(order.RxOrder(), rx.Actor{User: p.Subject, Org: p.ODS}, now)
	var warnings []fhir.Issue
	if order.Nominated() && order.Performer == "" {
		// No performer named: the patient's nomination of this site type.
		start = time.Now()
		noms, _, err := in.noms.Nominations(ctx, order.NHSNumber)
		in.stage("nomination", start)
		if err != nil {
			in.metrics.CountOrder("error")
			return nil, StoreUnavailable("read nominations", err)
		}
		if ods := noms.Of(nomination.Type(order.SiteType)); ods != "" {
			rec.Nominate(ods, rx.NominationFromRegistry)
		} else {
			rec.Nominate("", rx.NominationNone)
			warnings = append(warnings, fhir.Issue{Severity: "warning", Code: "informational",
				Diagnostics: fmt.Sprintf("no nominated dispenser of type %s is on record for the patient: the prescription was accepted as non-nominated (it can be released by its ID)", order.SiteType),
				Expression:  []string{"Bundle.entry.resource.ofType(MedicationRequest).dispenseRequest.performer"}})
		}
	}
	// One compare-and-set write: the order is stored if its prescription ID
	// is new, or holds only cancellations that came first (they are
	// applied to it); the same message again stores nothing; another
	// message with the ID is a duplicate.
	var (
		resent, afterCancel bool
		created             = rec
	)
	start = time.Now()
	_, err = in.rx.Create(ctx, order.PrescriptionID, func(cur *Event) (*Write, error) {
		var held *rx.Prescription
		if cur != nil {
			held = cur.Record
		}
		next, outcome := rx.AcceptOrder(held, created, in.now())
		resent, afterCancel = outcome == rx.OrderResent, outcome == rx.OrderAfterCancellation
		switch outcome {
		case rx.OrderStored, rx.OrderAfterCancellation:
			return &Write{Event: rx.EventOrder, MessageID: order.BundleID, Record: next, Body: msg.Raw}, nil
		case rx.OrderResent:
			return nil, nil
		}
		return nil, decided{&fhir.Error{Kind: fhir.KindInvalid, IssueType: "duplicate", Code: fhir.CodeDuplicatePrescriptionID,
			Display:     "Duplicate prescription ID",
			Expression:  []string{"Bundle.entry.resource.ofType(MedicationRequest).groupIdentifier.value"},
			Diagnostics: fmt.Sprintf("prescription ID %s has already been used by another prescription message", order.PrescriptionID)}}
	})
	in.stage("store", start)
	var d decided
	switch {
	case errors.As(err, &d):
		in.metrics.CountOrder("duplicate_id")
		return nil, d.err
	case errors.Is(err, ErrTooLarge):
		in.metrics.CountOrder("invalid")
		return nil, fhir.Errorf(fhir.KindTooLarge, fhir.CodeTooLarge, "the message is too large to store with its record; send a smaller message")
	case errors.Is(err, ErrBusy):
		in.metrics.CountOrder("error")
		return nil, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable,
			Diagnostics: fmt.Sprintf("prescription %s is changing too often to accept the order now; retry", order.PrescriptionID)}
	case errors.Is(err, ErrUnresolved):
		in.metrics.CountOrder("error")
		return nil, &fhir.Error{Kind: fhir.KindUnavailable, Op: "store prescription-order", Code: fhir.CodeServiceUnavailable,
			Diagnostics: "the store did not confirm the prescription and could not be asked again: it may have been stored; send the same message again (a resend is recognised and stores nothing twice)", Err: err}
	case err != nil:
		in.metrics.CountOrder("error")
		return nil, &fhir.Error{Kind: fhir.KindUnavailable, Op: "store prescription-order", Code: fhir.CodeServiceUnavailable,
			Diagnostics: "the prescription could not be stored durably and was not accepted; retry it", Err: err}
	case resent:
		in.metrics.CountOrder("resent")
		return &Outcome{Body: fhir.InformationalOutcome(in.now()), PrescriptionID: order.PrescriptionID, Resent: true}, nil
	case afterCancel:
		in.metrics.CountOrder("accepted")
		return &Outcome{Body: fhir.InformationalOutcome(in.now()), PrescriptionID: order.PrescriptionID}, nil
	}
	in.metrics.CountOrder("accepted")
	in.log.Debug("prescription accepted", zap.String("prescription_id", order.PrescriptionID), zap.String("status", string(rec.Status)))
	return &Outcome{Body: fhir.InformationalOutcome(now, warnings...), PrescriptionID: order.PrescriptionID}, nil
}

func (in *Intake) stage(name string, start time.Time) {
	in.metrics.ObserveStage(name, time.Since(start))
}
