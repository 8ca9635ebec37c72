package fhir

import (
	"slices"
	"strconv"
	"strings"
)

// This file holds the Task messages: return and withdraw
// (DecodeTaskRequest).

// Code systems and values of the return and withdraw Tasks.
const (
	SystemTaskCode       = "http://hl7.org/fhir/CodeSystem/task-code"
	SystemReturnReason   = "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-return-status-reason"
	SystemWithdrawReason = "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-withdraw-reason"
	TaskKindReturn       = "return"
	TaskKindWithdraw     = "withdraw"
	withdrawTaskCode     = "abort"
	taskStatusReturn     = "rejected"
	taskStatusWithdraw   = "in-progress"
)

// Codes a return or a withdraw may state.
var (
	// ReturnReasons are the EPS-task-dispense-return-status-reason codes.
	ReturnReasons = []string{"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"}
	// WithdrawReasons are the EPS-task-dispense-withdraw-reason codes.
	WithdrawReasons = []string{"QU", "MU", "DA", "PA", "OC", "ONC"}
)

// TaskRequest is POST /Task: a return (status rejected, code fulfill) or a
// withdraw (status in-progress, code abort).
type TaskRequest struct {
	Kind           string // TaskKindReturn or TaskKindWithdraw
	ID             string // Task.identifier value (a UUID) if present
	PrescriptionID string // groupIdentifier value (short form)
	LongID         string // groupIdentifier extension Extension-DM-PrescriptionId, if present
	NHSNumber      string // Task.for identifier (nhs-number) if present
	Owner          string // the organisation the Task names (Task.owner, else the requester's): recorded as sent, never used to refuse; may be ""
	FocusID        string // focus.identifier.value: for a withdraw, the dispense notification's Bundle.identifier
	Reason         string // statusReason code: ReturnReasons or WithdrawReasons
	ReasonDisplay  string
	// Issue is the repeat dispensing issue returned or withdrawn (1 to
	// MaxRepeatIssues; see repeat.go for how each counts); 0 when the Task
	// names none.
	Issue int
}

// DecodeTaskRequest decodes and validates the body of POST /Task: a return
// or a withdraw, with the checks of the EPS FHIR facade
// (validation/task-validator.ts verifyTask; translation/request/return and
// withdraw) first. The checks, in order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Task                             MISSING_VALUE required, INVALID_VALUE value
//	requester a reference to a contained
//	  PractitionerRole                            INVALID_VALUE invalid
//	its practitioner identifier sds-user-id, its
//	  identifiers with one sds-role-profile-id    TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid (thrown)
//	intent order                                  INVALID_VALUE value
//	its practitioner not a reference              INVALID_VALUE invalid
//	status rejected (return) or in-progress
//	  (withdraw)                                  INVALID_VALUE value
//	withdraw: code present, one task-code coding,
//	  abort                                       MISSING_VALUE value, TOO_FEW/TOO_MANY_VALUES_SUBMITTED, INVALID_VALUE value
//	  (a return's code is not checked)
//	statusReason: one coding of the return or
//	  withdraw reason code system, a code of it   INVALID_VALUE value, TOO_MANY_VALUES_SUBMITTED
//	identifier (when present) a UUID              INVALID_VALUE value
//	groupIdentifier: system prescription-order-
//	  number, short ID, check character (its
//	  long-form extension is not read)            TOO_FEW_VALUES_SUBMITTED, MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//	for (when present) a valid NHS number         INVALID_VALUE value
//	focus.identifier a UUID (withdraw: required)  MISSING_VALUE required, INVALID_VALUE value
//	Extension-EPS-RepeatInformation (when
//	  present) numberOfRepeatsIssued: a return's
//	  counted from 0, a withdraw's from 1         MISSING_VALUE, INVALID_VALUE structure / value
//
// The organisations the Task names (owner, the contained Organization) are
// recorded as sent and never used to refuse it: the acting dispenser is the
// caller's.
func DecodeTaskRequest(body []byte) (*TaskRequest, error) {
	tr, err := decodeTask(body)
	if err != nil {
		err.Op = "decode task"
		return nil, err
	}
	return tr, nil
}

type task struct {
	Extension       []extension
	Contained       []rawResource
	Identifier      []identifier
	Status          string
	Intent          string
	StatusReason    Concept
	Code            Concept
	HasCode         bool
	GroupIdentifier groupIdentifier
	Focus           reference
	For             reference
	Requester       reference
	Owner           reference
	AuthoredOn      *string
}

func decodeTask(body []byte) (*TaskRequest, *Error) {
	const root = "Task"
	var t task
	if err := readBody(body, root, []string{"extension", "contained", "identifier", "status", "intent", "statusReason", "code", "groupIdentifier", "focus", "for", "requester", "owner", "authoredOn"}, func(r *reader, key string) {
		switch key {
		case "extension":
			list(r, &t.Extension, r.extension)
		case "contained":
			t.Contained = r.containedList(root + ".contained")
		case "identifier":
			t.Identifier = presentList(r, t.Identifier)
			list(r, &t.Identifier, r.identifier)
		case "status":
			t.Status = r.str()
		case "intent":
			t.Intent = r.str()
		case "statusReason":
			r.concept(&t.StatusReason)
		case "code":
			t.HasCode = r.peek() != 'n'
			r.concept(&t.Code)
		case "groupIdentifier":
			r.groupIdentifier(&t.GroupIdentifier)
		case "focus":
			r.reference(&t.Focus)
		case "for":
			r.reference(&t.For)
		case "requester":
			r.reference(&t.Requester)
		case "owner":
			r.reference(&t.Owner)
		case "authoredOn":
			v := r.str()
			t.AuthoredOn = &v
		}
	}); err != nil {
		return nil, err
	}
	tr := &TaskRequest{}

	// verifyTask: what it throws (the requester's PractitionerRole, its
	// SDS identifiers), then what it collects: intent, the practitioner,
	// status.
	if t.Requester.Reference == "" {
		return nil, processingError("task.requester", "task.requester should be a reference to contained.practitionerRole")
	}
	role, err := containedRole(t.Contained, t.Requester.Reference, "Task.requester")
	if err != nil {
		return nil, err
	}
	if err := sdsIdentifiers(role, `task.contained("PractitionerRole")`); err != nil {
		return nil, err
	}
	if t.Intent != "order" {
		return nil, facadeIssue(CodeInvalidValue, "value", "Task.intent", "Task.intent must be one of: 'order'.")
	}
	if role.Practitioner.Reference != "" {
		return nil, referenceNotIdentifier(`Task.contained("PractitionerRole").practitioner`)
	}
	var reasonSystem string
	var reasons []string
	switch t.Status {
	case taskStatusReturn:
		tr.Kind, reasonSystem, reasons = TaskKindReturn, SystemReturnReason, ReturnReasons
	case taskStatusWithdraw:
		tr.Kind, reasonSystem, reasons = TaskKindWithdraw, SystemWithdrawReason, WithdrawReasons
	default:
		return nil, facadeIssue(CodeInvalidValue, "value", "Task.status", "Task.status must be one of: 'in-progress', 'rejected'.")
	}
	if tr.Kind == TaskKindWithdraw {
		if !t.HasCode {
			return nil, facadeIssue(CodeMissingValue, "value", "Task.code", "Task.code is required when Task.status is 'in-progress'.")
		}
		js := inSystem(t.Code.Coding, SystemTaskCode)
		switch {
		case len(js) == 0:
			return nil, tooFewValues("Task.code.coding", "system == '"+SystemTaskCode+"'")
		case len(js) > 1:
			return nil, tooManyValues("Task.code.coding", "system == '"+SystemTaskCode+"'")
		case t.Code.Coding[js[0]].Code != withdrawTaskCode:
			return nil, facadeIssue(CodeInvalidValue, "value", "Task.code.coding.code", "Task.code.coding.code must be one of: 'abort'.")
		}
	}
	js := inSystem(t.StatusReason.Coding, reasonSystem)
	switch {
	case len(js) == 0:
		return nil, facadeIssue(CodeInvalidValue, "value", "Task.reasonCode",
			"Task.reasonCode must have a system of '"+reasonSystem+"' and a value from that system.")
	case len(js) > 1:
		return nil, facadeIssue(CodeTooManyValues, "invalid", "Task.statusReason",
			"Too many values submitted. Expected at most 1 element where system == '"+reasonSystem+"'.")
	}
	reason := t.StatusReason.Coding[js[0]]
	if !slices.Contains(reasons, reason.Code) {
		expr := "Task.statusReason.coding[" + strconv.Itoa(js[0]) + "].code"
		return nil, badValue(expr, "%s %s is not a %s reason (%s)", expr, quote(reason.Code), tr.Kind, strings.Join(reasons, ", "))
	}
	tr.Reason, tr.ReasonDisplay = reason.Code, reason.Display

	// The translation (return.ts convertTaskToDispenseProposalReturn,
	// withdraw.ts convertTaskToEtpWithdraw): the message id, authoredOn,
	// the requester's organisation.
	j, err := identifierForSystem(t.Identifier, SystemMessageID, "Task.identifier")
	if err != nil {
		return nil, err
	}
	if err := requireUUID(t.Identifier[j].Value, pathOf("Task.identifier["+strconv.Itoa(j)+"].value")); err != nil {
		return nil, err
	}
	tr.ID = t.Identifier[j].Value
	if err := facadeDateTime(t.AuthoredOn, "Task.authoredOn"); err != nil {
		return nil, err
	}
	if err := containedOrganization(t.Contained, role.Organization, tr.Kind == TaskKindWithdraw,
		`task.contained("PractitionerRole").organization`, "practitionerRole.organization should be a Reference"); err != nil {
		return nil, err
	}

	// The prescription (task.ts getPrescriptionShortFormIdFromTaskGroupIdentifier:
	// the groupIdentifier of the prescription-order-number system, else
	// TooFewValuesError at Task.groupIdentifier), then Spine's format and
	// check character. Its long-form extension is not read by EPS: recorded
	// when it is a UUID, never refused.
	gi := &t.GroupIdentifier
	if (gi.System != "" || gi.Value != "") && gi.System != SystemPrescriptionID {
		return nil, tooFewValues("Task.groupIdentifier", "system == '"+SystemPrescriptionID+"'")
	}
	if err := checkShortID(gi.identifier, "Task.groupIdentifier"); err != nil {
		return nil, err
	}
	tr.PrescriptionID = gi.Value
	if e := findExtension(gi.Extension, ExtPrescriptionLongID); e != nil && e.ValueIdentifier != nil && ValidUUID(e.ValueIdentifier.Value) {
		tr.LongID = e.ValueIdentifier.Value
	}

	// A withdraw's Task.for names the patient (withdraw.ts createRecordTarget:
	// the identifier of the nhs-number system), which Spine compares. A
	// return's is not read (return.ts sends no recordTarget): never refused,
	// recorded only when it is a valid NHS number.
	id := t.For.Identifier
	switch {
	case tr.Kind == TaskKindWithdraw:
		if id.System != SystemNHSNumber {
			return nil, tooFewValues("Task.for.identifier", "system == '"+SystemNHSNumber+"'")
		}
		if err := requireNHSNumber(id.Value, pathOf("Task.for.identifier.value")); err != nil {
			return nil, err
		}
		tr.NHSNumber = id.Value
	case id.System == SystemNHSNumber && requireNHSNumber(id.Value, pathOf("Task.for.identifier.value")) == nil:
		tr.NHSNumber = id.Value
	}

	// Recorded as sent, never used to refuse: the organisation the Task
	// names, if it names one.
	if owner, err := dispenserODS(t.Contained, "Task", refAt("Task.owner", t.Owner), refAt("Task.requester", t.Requester)); err == nil {
		tr.Owner = owner
	}

	// focus.identifier (getMessageIdFromTaskFocusIdentifier): the id of the
	// message returned (the release response) or withdrawn (the dispense
	// notification), of the rfc4122 system; both messages require it.
	fid := t.Focus.Identifier
	if fid.System == "" && fid.Value == "" {
		return nil, missing("Task.focus.identifier", "Task.focus.identifier is missing: a %s names the message it reverses by its identifier (a UUID)", tr.Kind)
	}
	if fid.System != SystemMessageID {
		return nil, tooFewValues("Task.focus.identifier", "system == '"+SystemMessageID+"'")
	}
	tr.FocusID = fid.Value
	if err := requireUUID(tr.FocusID, pathOf("Task.focus.identifier.value")); err != nil {
		return nil, err
	}

	// The issue: both count from 0 (return.ts getRepeatNumberIssued and
	// withdraw.ts createPertinentInformation1 add 1); the extension is
	// optional in both.
	n, _, err := repeatIssue(t.Extension, "Task.extension", ExtRepeatInformation, RepeatPartIssued, countFrom0)
	if err != nil {
		return nil, err
	}
	tr.Issue = n
	return tr, nil
}
