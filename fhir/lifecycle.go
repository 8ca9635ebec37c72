package fhir

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// This file decodes and validates the messages of a prescription's life
// after the order: release (Task/$release Parameters), return and withdraw
// (Task), dispense notification and cancellation ($process-message) and
// claim (Claim). Like Order, each decoder is a pure function that fails with
// a *Error of KindInvalid carrying the EPS code, the FHIR issue type, words
// and the FHIRPath of the offending element; a member of the wrong JSON type
// is INVALID_VALUE structure where it is found.

// Code systems, identifier systems and extensions of the dispensing
// messages.
const (
	SystemTaskCode           = "http://hl7.org/fhir/CodeSystem/task-code"
	SystemReturnReason       = "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-return-status-reason"
	SystemWithdrawReason     = "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-withdraw-reason"
	SystemCancellationReason = "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason"
	SystemMessageReason      = "https://fhir.nhs.uk/CodeSystem/message-reason-prescription"
	SystemDispenseType       = "https://fhir.nhs.uk/CodeSystem/medicationdispense-type"
	SystemTaskBusinessStatus = "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status"
	SystemEndorsement        = "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement"

	ExtTaskBusinessStatus    = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	ExtNonDispensingReason   = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason"
	ExtGroupIdentifier       = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-GroupIdentifier"
	ExtClaimLineItemRef      = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference"
	SystemDispenseItemNumber = "https://fhir.nhs.uk/Id/prescription-dispense-item-number"
	ExtClaimSequenceID       = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier"
	ODSNHSBSA                = "T1450" // NHS Business Services Authority: a claim's insurer (or RQFZ1)
	TaskKindReturn           = "return"
	TaskKindWithdraw         = "withdraw"
	ReleaseStatusAccepted    = "accepted"
	MessageReasonCancel      = "cancel"
	extGroupIDShortForm      = "shortForm"
	extGroupIDUUID           = "UUID"
	paramOwner               = "owner"
	paramGroupIdentifier     = "group-identifier"
	paramAgent               = "agent"
	withdrawTaskCode         = "abort"
	taskStatusReturn         = "rejected"
	taskStatusWithdraw       = "in-progress"
	cancelledStatus          = "cancelled"
	whereMedicationDispense  = "Bundle.entry.resource.ofType(MedicationDispense)"
	whereMedicationRequest   = "Bundle.entry.resource.ofType(MedicationRequest)"
)

// Codes each message may state.
var (
	// ReturnReasons are the EPS-task-dispense-return-status-reason codes.
	ReturnReasons = []string{"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"}
	// WithdrawReasons are the EPS-task-dispense-withdraw-reason codes.
	WithdrawReasons = []string{"QU", "MU", "DA", "PA", "OC", "ONC"}
	// CancellationReasons are the medicationrequest-status-reason codes.
	CancellationReasons = []string{"0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"}
	// DispensedItemStatuses are the medicationdispense-type codes a
	// dispenser may state for a line item: fully dispensed, not dispensed,
	// partially dispensed, not dispensed - owing, and cancelled (the NHS
	// examples send 0005 for an item the prescriber cancelled).
	DispensedItemStatuses = []string{"0001", "0002", "0003", "0004", "0005"}
	// DispensePrescriptionStatuses are the prescription statuses a dispense
	// notification may state: with dispenser - active, dispensed, not
	// dispensed.
	DispensePrescriptionStatuses = []string{"0003", "0006", "0007"}
	// ClaimPrescriptionStatuses are the prescription statuses a claim may
	// state: dispensed, not dispensed.
	ClaimPrescriptionStatuses = []string{"0006", "0007"}
)

// ReleaseRequest is a Task/$release Parameters body.
type ReleaseRequest struct {
	Owner          string // owner Organization ODS code (parameter "owner", resource Organization identifier ods-organization-code)
	PrescriptionID string // "group-identifier" valueIdentifier value (short form); empty for a nominated release
	AgentUserID    string // agent PractitionerRole -> practitioner identifier (sds-user-id) if present
	AgentRoleID    string // agent PractitionerRole identifier (sds-role-profile-id) if present
}

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

// DispenseNotification is a $process-message dispense-notification.
type DispenseNotification struct {
	BundleID            string
	ReplacementOf       string // MessageHeader replacementOf extension: the notification it amends
	Sender              string // MessageHeader.sender ODS as resolved by DecodeMessage: recorded only, may be ""
	PrescriptionID      string // the MedicationDispenses' authorizingPrescription groupIdentifier (short form)
	NHSNumber           string // MedicationDispense.subject identifier (nhs-number)
	PrescriptionStatus  string // Extension-EPS-TaskBusinessStatus: 0003, 0006 or 0007
	Items               []DispensedItem
	NonDispensingReason string // Extension-DM-PrescriptionNonDispensingReason code, if present
	// Issue is the repeat dispensing issue dispensed (1 to
	// MaxRepeatIssues): the first contained MedicationRequest's basedOn
	// Extension-EPS-RepeatInformation, counted from 0, else a contained
	// MedicationRequest's UK Core numberOfPrescriptionsIssued; 0 when none
	// names one.
	Issue int
}

// DispensedItem is one MedicationDispense.
type DispensedItem struct {
	LineItemID        string // the prescription line item (MedicationRequest identifier prescription-order-item-number)
	Status            string // MedicationDispense.type (medicationdispense-type): DispensedItemStatuses
	MedicationCode    string
	MedicationDisplay string
	Quantity          float64
	QuantityUnit      string
	// NonDispensingReason is the statusReasonCodeableConcept code
	// (medicationdispense-status-reason), if present: the tracker shows it.
	NonDispensingReason string
}

// Cancellation is a $process-message prescription-order-update
// (MessageHeader.reason cancel).
type Cancellation struct {
	BundleID       string
	Sender         string
	PrescriptionID string
	LongID         string
	NHSNumber      string
	LineItemID     string // the cancelled MedicationRequest's identifier
	Reason         string // statusReason code: CancellationReasons
	ReasonDisplay  string
}

// ClaimRequest is POST /Claim.
type ClaimRequest struct {
	ID                 string // Claim.identifier value
	PrescriptionID     string // prescription extension Extension-DM-GroupIdentifier shortForm
	LongID             string // ... UUID
	NHSNumber          string // patient identifier
	Provider           string // the organisation the claim names (provider, else payee.party): recorded as sent, never used to refuse; may be ""
	ReplacementOf      string // a claim amendment: the claim it replaces (Extension-replacementOf), if present
	PrescriptionStatus string // item Extension-EPS-TaskBusinessStatus: 0006 or 0007
	Items              []ClaimItem
	// Issue is the repeat dispensing issue claimed (1 to MaxRepeatIssues):
	// the Extension-EPS-RepeatInformation of Claim.item, else of its first
	// detail, counted from 0; 0 when none names one.
	Issue int
}

// ClaimItem is one line item claimed (Claim.item.detail): its id and the
// status the dispenser gives it (detail.modifier, medicationdispense-type).
type ClaimItem struct{ LineItemID, Status string }

// ---------------------------------------------------------------------------
// Release

// DecodeReleaseRequest decodes and validates a Task/$release Parameters
// body as the EPS FHIR facade does (validation/parameters-validator.ts
// verifyParameters, translation/common getAgentParameter). The checks, in
// order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Parameters                       MISSING_VALUE required, INVALID_VALUE value
//	an agent parameter holding a PractitionerRole INVALID_VALUE invalid (the facade throws first)
//	its practitioner identifier sds-user-id, its
//	  identifiers with one sds-role-profile-id    TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid (thrown)
//	an owner parameter holding an Organization    MISSING_VALUE invalid
//	agent.practitioner not a reference            INVALID_VALUE invalid
//	agent.telecom present                         MISSING_VALUE invalid
//	the owner's one ods-organization-code
//	  identifier (its format is not checked)      INVALID_VALUE, TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	at most one group-identifier; when present:
//	  a short ID (its system is not read) with a
//	  right check character                       TOO_MANY_VALUES_SUBMITTED, MISSING_VALUE, INVALID_VALUE, INVALID_CHECKSUM
//
// The status parameter is optional and not read (the facade does not read
// it either).
func DecodeReleaseRequest(body []byte) (*ReleaseRequest, error) {
	rr, err := decodeRelease(body)
	if err != nil {
		err.Op = "decode release request"
		return nil, err
	}
	return rr, nil
}

// parameter is one Parameters.parameter.
type parameter struct {
	Name            string
	ValueCode       string
	ValueIdentifier *identifier
	Resource        rawResource
}

func (r *reader) parameters(root string) []parameter {
	var out []parameter
	r.array(func(i int) {
		var p parameter
		r.object(func(key []byte) {
			switch string(key) {
			case "name":
				p.Name = r.str()
			case "valueCode":
				p.ValueCode = r.str()
			case "valueIdentifier":
				p.ValueIdentifier = new(identifier)
				r.identifier(p.ValueIdentifier)
			case "resource":
				p.Resource = r.resource(root + "[" + strconv.Itoa(i) + "].resource")
			}
		})
		out = append(out, p)
	})
	return out
}

// readBody reads the top-level object of a request body whose resourceType
// must be root: it checks the body (checkSyntax, which also refuses any
// member given twice), reads resourceType, and hands each member named in
// members to read, in order.
func readBody(body []byte, root string, members []string, read func(r *reader, key string)) *Error {
	if err := checkSyntax(body, root, "request"); err != nil {
		return err
	}
	var resourceType string
	var rtErr *Error
	r := newReader(body, root)
	r.object(func(key []byte) {
		k := string(key)
		switch {
		case k == "resourceType":
			rtErr = r.capture(func() { resourceType = r.str() })
		case slices.Contains(members, k):
			read(&r, k)
		}
	})
	return firstError(rtErr, requireCode(resourceType, root+".resourceType", root), r.err)
}

// Words of the EPS FHIR facade's issues (models/errors/validation-errors.ts
// and processing-errors.ts of NHSDigital/electronic-prescription-service-api).
const (
	exprAgentPractitioner = `Parameters.parameter("agent").resource.practitioner`
	exprAgentTelecom      = `Parameters.parameter("agent").resource.telecom`
)

// facadeIssue is an issue as the EPS FHIR facade writes it: the FHIR issue
// type, the words and the FHIRPath it gives (where it gives none, the path
// its words name). The facade's validation issues carry no EPS code; the
// broker gives each one: MISSING_VALUE for an element required, otherwise
// INVALID_VALUE.
func facadeIssue(code, issueType, expr, diagnostics string) *Error {
	e := &Error{Kind: KindInvalid, Code: code, IssueType: issueType, Diagnostics: diagnostics}
	if expr != "" {
		e.Expression = []string{expr}
	}
	return e
}

// processingError is the facade's InvalidValueError (processing-errors.ts):
// INVALID_VALUE, issue type invalid, its words and FHIRPath.
func processingError(expr, diagnostics string) *Error {
	return facadeIssue(CodeInvalidValue, "invalid", expr, diagnostics)
}

// referenceNotIdentifier is the facade's fieldIsReferenceButShouldNotBe.
func referenceNotIdentifier(path string) *Error {
	return facadeIssue(CodeInvalidValue, "invalid", path, path+" populated incorrectly. Please populate with Identifier and Display.")
}

// requiredField is the facade's missingRequiredField.
func requiredField(path string) *Error {
	return facadeIssue(CodeMissingValue, "invalid", path, "Required field "+path+" is missing.")
}

func decodeRelease(body []byte) (*ReleaseRequest, *Error) {
	const root = "Parameters"
	var params []parameter
	if err := readBody(body, root, []string{"parameter"}, func(r *reader, _ string) {
		params = r.parameters(root + ".parameter")
	}); err != nil {
		return nil, err
	}
	resourceParam := func(name string) int {
		for i := range params {
			if params[i].Name == name && params[i].Resource.b != nil {
				return i
			}
		}
		return -1
	}

	// The agent: getAgentParameter throws before anything is collected.
	ai := resourceParam(paramAgent)
	if ai < 0 {
		return nil, processingError(root+".parameter", "Parameter with name agent not found")
	}
	if params[ai].Resource.typ != "PractitionerRole" {
		return nil, processingError(paramPath(ai, "resource"), "Parameter with name agent has wrong resourceType")
	}
	var role practitionerRole
	if err := readRaw(&params[ai].Resource, func(r *reader) { r.practitionerRole(&role) }); err != nil {
		return nil, err
	}
	if err := sdsIdentifiers(&role, `parameters.parameter("PractitionerRole")`); err != nil {
		return nil, err
	}

	// Then, as verifyParameters collects them: the owner, the agent's
	// practitioner and telecom.
	oi := resourceParam(paramOwner)
	if oi < 0 || params[oi].Resource.typ != "Organization" {
		return nil, facadeIssue(CodeMissingValue, "invalid", root+".parameter", "Required parameter owner is missing.")
	}
	if role.Practitioner.Reference != "" {
		return nil, referenceNotIdentifier(exprAgentPractitioner)
	}
	if role.Telecom == 0 {
		return nil, requiredField(exprAgentTelecom)
	}

	// The owner's ODS code, as the translation reads it (agent-person.ts
	// convertOrganization: getIdentifierValueForSystem, the one identifier
	// of the ods-organization-code system at Organization.identifier). Its
	// format is not checked (neither the facade nor a Spine rule in the
	// reference does): the broker compares it with the caller's
	// organisation (403 when they differ).
	rr := &ReleaseRequest{}
	var owner organization
	if err := readRaw(&params[oi].Resource, func(r *reader) { r.organization(&owner) }); err != nil {
		return nil, err
	}
	ids := owner.Identifier
	if ids == nil && owner.HasIdentifier {
		ids = []identifier{}
	}
	j, err := identifierForSystem(ids, SystemODSCode, "Organization.identifier")
	if err != nil {
		return nil, err
	}
	rr.Owner = owner.Identifier[j].Value
	if rr.Owner == "" {
		// The facade would pass an undefined organisation id on to Spine,
		// which cannot route the release: a clear 400 instead.
		expr := paramPath(oi, "resource") + ".identifier[" + strconv.Itoa(j) + "].value"
		return nil, missing(expr, "%s is missing: the owner's ODS code", expr)
	}

	gi := -1
	for i := range params {
		if params[i].Name != paramGroupIdentifier || params[i].ValueIdentifier == nil {
			continue
		}
		if gi >= 0 {
			return nil, facadeIssue(CodeTooManyValues, "invalid", root+".parameter",
				"Too many values submitted. Expected at most 1 element where name == 'group-identifier'.")
		}
		gi = i
	}
	if gi >= 0 {
		if err := checkShortID(*params[gi].ValueIdentifier, paramPath(gi, "valueIdentifier")); err != nil {
			return nil, err
		}
		rr.PrescriptionID = params[gi].ValueIdentifier.Value
	}

	if j := findIdentifier(role.Identifier, SystemSDSRoleProfileID); j >= 0 {
		rr.AgentRoleID = role.Identifier[j].Value
	}
	if id := role.Practitioner.Identifier; id.System == SystemSDSUserID {
		rr.AgentUserID = id.Value
	}
	return rr, nil
}

func paramPath(i int, field string) string {
	p := "Parameters.parameter[" + strconv.Itoa(i) + "]"
	if field != "" {
		p += "." + field
	}
	return p
}

// ---------------------------------------------------------------------------
// Return and withdraw

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

// taskCodings returns the indexes of the codings of cs in system.
func codingsIn(cs []Coding, system string) []int {
	var out []int
	for j, c := range cs {
		if c.System == system {
			out = append(out, j)
		}
	}
	return out
}

// containedRole finds the contained PractitionerRole that the reference ref
// (at expr) names among cs, as the facade's
// getContainedPractitionerRoleViaReference does.
func containedRole(cs []rawResource, ref, expr string) (*practitionerRole, *Error) {
	c := findContained(cs, ref)
	if c == nil {
		return nil, processingError(expr, "Contained resource with reference "+ref+" not found")
	}
	if c.typ != "PractitionerRole" {
		return nil, processingError(expr, "Contained resource with reference "+ref+" is not of type PractitionerRole")
	}
	var role practitionerRole
	if err := readRaw(c, func(r *reader) { r.practitionerRole(&role) }); err != nil {
		return nil, err
	}
	return &role, nil
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
		js := codingsIn(t.Code.Coding, SystemTaskCode)
		switch {
		case len(js) == 0:
			return nil, tooFewValues("Task.code.coding", "system == '"+SystemTaskCode+"'")
		case len(js) > 1:
			return nil, tooManyValues("Task.code.coding", "system == '"+SystemTaskCode+"'")
		case t.Code.Coding[js[0]].Code != withdrawTaskCode:
			return nil, facadeIssue(CodeInvalidValue, "value", "Task.code.coding.code", "Task.code.coding.code must be one of: 'abort'.")
		}
	}
	js := codingsIn(t.StatusReason.Coding, reasonSystem)
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

// ---------------------------------------------------------------------------
// Dispense notification

// DispenseNotification validates a dispense-notification message (decoded by
// DecodeMessage) and returns what it states. First the checks of the EPS
// FHIR facade (validation/bundle-validator.ts verifyDispenseBundle, in the
// order it reports them: what it throws first, then what it collects), then
// what its translation (translation/request/dispense/dispense-notification.ts)
// and the broker need. In order (code, FHIR issue type):
//
//	event dispense-notification                   INVALID_VALUE value
//	at least one MedicationDispense               MISSING_VALUE required
//	every PractitionerRole entry (if any): a
//	  practitioner reference resolves by fullUrl,
//	  one sds-role-profile-id when it has
//	  identifiers (verifyCommonBundle)            TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the first MedicationDispense's performer
//	  names a contained PractitionerRole whose
//	  organization is a reference to the one
//	  entry of that fullUrl                       INVALID_VALUE invalid, TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	verifyCommonBundle's collected checks: no
//	  MedicationRequest entry of intent plan or
//	  reflex-order or with both medication
//	  forms; telecoms of Organization,
//	  Practitioner and PractitionerRole entries
//	  with value and use; PractitionerRole
//	  entries' references                         INVALID_VALUE, CONFLICTING_VALUES, MISSING_VALUE
//	whenHandedOver, subject.identifier.value and
//	  Extension-EPS-RepeatInformation the same
//	  on every MedicationDispense                 INVALID_VALUE value
//	performer the same on every one, and present  INVALID_VALUE value, MISSING_VALUE value
//	not both medicationCodeableConcept and
//	  medicationReference                         CONFLICTING_VALUES structure
//	the PractitionerRole's practitioner not a
//	  reference                                   INVALID_VALUE invalid
//	the Organization's reimbursement authority
//	  (Extension-ODS-OrganisationRelationships
//	  reimbursementAuthority) present             MISSING_VALUE invalid
//	whenHandedOver present                        MISSING_VALUE required
//	replacementOf (when present) a UUID           INVALID_VALUE value
//	prescriptionNonDispensingReason: when every
//	  MedicationDispense has one, the same        INVALID_VALUE invalid
//	the first one's Extension-EPS-
//	  TaskBusinessStatus 0003, 0006 or 0007       MISSING_VALUE, INVALID_VALUE value
//	the NHS number (the one Patient's, else the
//	  subject's, whatever its system) valid       TOO_MANY_VALUES_SUBMITTED, MISSING_VALUE, INVALID_VALUE value
//	authorizingPrescription: a contained
//	  MedicationRequest (or an identifier) with
//	  a line item id (UUID) and a short ID
//	  (check character), the same on every one    MISSING_VALUE, INVALID_VALUE, INVALID_CHECKSUM
//	type: one medicationdispense-type coding, a
//	  code 0001-0005, the same for
//	  MedicationDispenses of one line item        TOO_FEW/TOO_MANY_VALUES_SUBMITTED, INVALID_VALUE value / invalid
//	the medication dispensed and, for each line
//	  item, that requested: one SNOMED CT coding
//	  (a medicationReference resolved by
//	  fullUrl); the status reason, when it has
//	  codings, one of medicationdispense-status-
//	  reason; the first contained
//	  MedicationRequest's long-form ID extension  TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the issue (see repeat.go)                     MISSING_VALUE, INVALID_VALUE structure / value
//
// MessageHeader.sender is optional and recorded only, as are the
// organisations the message names: the acting dispenser is the caller's,
// and no ODS code's format is checked. Only the references EPS reads are
// resolved (the contained MedicationRequest and PractitionerRole by "#id",
// the role's Organization by fullUrl); others may name anything.
func (m *Message) DispenseNotification() (*DispenseNotification, error) {
	dn, err := m.dispenseNotification()
	if err != nil {
		err.Op = "validate dispense-notification"
		return nil, err
	}
	return dn, nil
}

type medicationDispense struct {
	Extension               []extension
	Contained               []rawResource
	Identifier              []identifier
	Subject                 reference
	AuthorizingPrescription []authorizingPrescription
	Type                    Concept
	Medication              Concept
	HasMedicationConcept    bool
	HasMedicationReference  bool
	MedicationReference     reference
	Quantity                quantity
	WhenHandedOver          []byte      // raw JSON, nil when absent
	Performers              [][]byte    // each performer's actor, raw JSON (nil when it has none)
	PerformerRefs           []reference // each performer's actor
	StatusReason            Concept
}

// authorizingPrescription is a MedicationDispense.authorizingPrescription:
// a reference to a contained MedicationRequest (the only form EPS reads).
type authorizingPrescription struct {
	Reference string
}

func (r *reader) medicationDispense(md *medicationDispense, k int) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &md.Extension, r.extension)
		case "contained":
			md.Contained = r.containedList(entryPath(k, "contained"))
		case "identifier":
			md.Identifier = presentList(r, md.Identifier)
			list(r, &md.Identifier, r.identifier)
		case "subject":
			r.reference(&md.Subject)
		case "authorizingPrescription":
			list(r, &md.AuthorizingPrescription, func(a *authorizingPrescription) {
				r.object(func(key []byte) {
					switch string(key) {
					case "reference":
						a.Reference = r.str()
					}
				})
			})
		case "type":
			r.concept(&md.Type)
		case "medicationCodeableConcept":
			md.HasMedicationConcept = r.peek() != 'n'
			r.concept(&md.Medication)
		case "medicationReference":
			md.HasMedicationReference = r.peek() != 'n'
			r.reference(&md.MedicationReference)
		case "quantity":
			r.amount(&md.Quantity)
		case "whenHandedOver":
			if r.peek() == 'n' {
				r.skip()
			} else {
				md.WhenHandedOver = r.raw()
			}
		case "performer":
			md.Performers, md.PerformerRefs = nil, nil
			r.array(func(int) {
				var actor []byte
				var ref reference
				r.object(func(key []byte) {
					if string(key) == "actor" && r.peek() == '{' {
						actor = r.raw()
						sub := newReader(actor, r.root)
						sub.reference(&ref)
						r.fail(sub.err)
					}
				})
				md.Performers = append(md.Performers, actor)
				md.PerformerRefs = append(md.PerformerRefs, ref)
			})
		case "statusReasonCodeableConcept":
			r.concept(&md.StatusReason)
		}
	})
}

// dispense is a decoded MedicationDispense and its entry index; request is
// the contained MedicationRequest its authorizingPrescription references
// (nil when it names the line item by identifier) and requestExt and
// requestBasedOn that one's extensions and those of its basedOn.
type dispense struct {
	k              int
	md             medicationDispense
	mr             dispensedRequest // the contained MedicationRequest
	request        *rawResource
	requestExt     []extension
	requestBasedOn [][]extension
}

// displayNonDispensingMix is the NHS EPS API's words when the
// MedicationDispenses disagree (3-Process-Response-Dispense-400_Invalid_Value).
const (
	displayNonDispensingMix = "Expected all MedicationDispenses to have the same value for MedicationDispense.extension:prescriptionNonDispensingReason"
	exprNonDispensingReason = "MedicationDispense.extension:prescriptionNonDispensingReason"
	// ExtOrganisationRelationships holds a dispensing Organization's
	// reimbursement authority.
	ExtOrganisationRelationships = "https://fhir.nhs.uk/StructureDefinition/Extension-ODS-OrganisationRelationships"
)

// dispenseInconsistent is the facade's
// createMedicationDispenseInconsistentValueIssue: values are the distinct
// values found (raw JSON; nil for absent).
func dispenseInconsistent(field string, values [][]byte) *Error {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = compactJSON(v)
	}
	return facadeIssue(CodeInvalidValue, "value", whereMedicationDispense+"."+field,
		"Expected all MedicationDispenses to have the same value for "+field+". Received ["+strings.Join(parts, ",")+"].")
}

// compactJSON is v without insignificant white space; "null" for nil.
func compactJSON(v []byte) string {
	if v == nil {
		return "null"
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return string(v)
	}
	return b.String()
}

// distinct returns the distinct values of vs (compared as compact JSON), in
// the order first seen.
func distinct(vs [][]byte) [][]byte {
	var out [][]byte
	seen := map[string]bool{}
	for _, v := range vs {
		k := compactJSON(v)
		if !seen[k] {
			seen[k] = true
			out = append(out, v)
		}
	}
	return out
}

// extensionJSON is the extension of exts with the given url as JSON (nil
// when absent): its url, its parts' urls and values.
func extensionJSON(exts []extension, url string) []byte {
	k := findExtensionIndex(exts, url)
	if k < 0 {
		return nil
	}
	var b bytes.Buffer
	var write func(e *extension)
	write = func(e *extension) {
		u, _ := json.Marshal(e.URL)
		b.WriteString(`{"url":`)
		b.Write(u)
		if len(e.ValueInt.b) > 0 {
			b.WriteString(`,"` + e.ValueInt.key + `":`)
			b.Write(e.ValueInt.b)
		}
		if e.ValueCoding != nil {
			c, _ := json.Marshal(e.ValueCoding)
			b.WriteString(`,"valueCoding":`)
			b.Write(c)
		}
		if len(e.Extension) > 0 {
			b.WriteString(`,"extension":[`)
			for i := range e.Extension {
				if i > 0 {
					b.WriteByte(',')
				}
				write(&e.Extension[i])
			}
			b.WriteByte(']')
		}
		b.WriteByte('}')
	}
	write(&exts[k])
	return b.Bytes()
}

func (m *Message) dispenseNotification() (*DispenseNotification, *Error) {
	if m.Event != EventDispenseNotification {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a dispense-notification message holds a dispense notification", quote(m.Event))
	}
	dn := &DispenseNotification{BundleID: m.BundleID, Sender: m.Sender, ReplacementOf: m.ReplacementOf}
	var mds []dispense
	for k, e := range m.Entries {
		if e.ResourceType != "MedicationDispense" {
			continue
		}
		mds = append(mds, dispense{k: k})
		d := &mds[len(mds)-1]
		if err := readEntry(m, k, func(r *reader) { r.medicationDispense(&d.md, k) }); err != nil {
			return nil, err
		}
	}
	if len(mds) == 0 {
		return nil, missing(whereMedicationDispense, "a dispense-notification needs at least one MedicationDispense; the Bundle has none")
	}
	if err := m.facadeDispenseChecks(mds); err != nil {
		return nil, err
	}
	if len(mds[0].md.WhenHandedOver) == 0 {
		expr := entryPath(mds[0].k, "whenHandedOver")
		return nil, missing(expr, "%s is missing: the time the medication was handed over", expr)
	}
	if dn.ReplacementOf != "" {
		if err := requireUUID(dn.ReplacementOf, under("MessageHeader", "extension('"+ExtReplacementOf+"').valueIdentifier.value")); err != nil {
			return nil, err
		}
	}

	// The non-dispensing reason, as the facade's translation checks it:
	// only when every MedicationDispense gives one must they agree.
	all := true
	for _, d := range mds {
		if findExtensionIndex(d.md.Extension, ExtNonDispensingReason) < 0 {
			all = false
		}
	}
	for i, d := range mds {
		code := extCode(d.md.Extension, ExtNonDispensingReason)
		if i == 0 {
			dn.NonDispensingReason = code
		} else if all && code != dn.NonDispensingReason {
			return nil, &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: displayNonDispensingMix, Expression: []string{exprNonDispensingReason}}
		}
	}
	if !all {
		dn.NonDispensingReason = ""
	}

	// The prescription status: the first MedicationDispense's, as the
	// facade translates it (getPrescriptionStatus: getExtensionForUrl,
	// exactly one), then the statuses a dispenser may state.
	if err := onlyExtension(mds[0].md.Extension, ExtTaskBusinessStatus, "MedicationDispense.extension"); err != nil {
		return nil, err
	}
	f, err := extCodeIn(mds[0].md.Extension, ExtTaskBusinessStatus, inEntry(mds[0].k, "").String(), DispensePrescriptionStatuses, "prescription status")
	if err != nil {
		return nil, err
	}
	dn.PrescriptionStatus = f.v

	// The patient, as the translation reads it (dispense-notification.ts
	// getNhsNumber): the nhs-number identifier of the Patient when the
	// Bundle has exactly one (getPatientOrNull), else the first
	// MedicationDispense's subject.identifier.value, whatever its system;
	// then Spine's check of the NHS number.
	nhs, p := mds[0].md.Subject.Identifier.Value, inEntry(mds[0].k, "subject.identifier.value")
	if pk, err := onlyPatient(m); err == nil {
		var pt patient
		if err := readEntry(m, pk, func(r *reader) { r.patient(&pt) }); err != nil {
			return nil, err
		}
		js := identifiersIn(pt.Identifier, SystemNHSNumber)
		if len(js) > 1 {
			return nil, facadeIssue(CodeTooManyValues, "invalid", "Patient.identifier.value",
				"Too many values submitted. Expected at most 1 element where system == '"+SystemNHSNumber+"'.")
		}
		nhs, p = "", inEntry(pk, "identifier")
		if len(js) == 1 {
			nhs, p = pt.Identifier[js[0]].Value, inEntry(pk, "identifier").at(js[0], ".value")
		}
	}
	if err := requireNHSNumber(nhs, p); err != nil {
		return nil, err
	}
	dn.NHSNumber = nhs

	// The line items.
	dn.Items = make([]DispensedItem, 0, len(mds))
	for i := range mds {
		d := &mds[i]
		// getPrescriptionItemNumber (dispense-notification.ts): exactly one
		// identifier of the prescription-dispense-item-number system.
		if _, err := identifierForSystem(d.md.Identifier, SystemDispenseItemNumber, "MedicationDispense.identifier"); err != nil {
			return nil, err
		}
		lineItem, rxID, err := d.authorizing()
		if err != nil {
			return nil, err
		}
		if i == 0 {
			dn.PrescriptionID = rxID.v
		} else if rxID.v != dn.PrescriptionID {
			return nil, inconsistent(rxID.expr, "%s %s differs from %s in Bundle.entry[%d]: every MedicationDispense belongs to the same prescription",
				rxID.expr, quote(rxID.v), quote(dn.PrescriptionID), mds[0].k)
		}
		// getPrescriptionLineItemStatus: the one coding of
		// medicationdispense-type; then the statuses a dispenser may state.
		if err := onlyCodingOf(d.md.Type.Coding, SystemDispenseType, "MedicationDispense.type.coding"); err != nil {
			return nil, err
		}
		c, err := checkCoding(d.md.Type.Coding, entryPath(d.k, "type"), SystemDispenseType, DispensedItemStatuses, "dispensed item status")
		if err != nil {
			return nil, err
		}
		for j, prev := range dn.Items {
			if strings.EqualFold(prev.LineItemID, lineItem) && prev.Status != c.Code {
				expr := entryPath(d.k, "type.coding")
				return nil, inconsistent(expr, "%s %s contradicts %s in Bundle.entry[%d] for the same line item %s",
					expr, quote(c.Code), quote(prev.Status), mds[j].k, quote(lineItem))
			}
		}
		// mapMedicationDispenses: the medication dispensed, and that
		// requested for the first MedicationDispense of each line item
		// (getMedicationCoding); the non-dispensing reason
		// (getFhirStatusReasonCodeableConceptCode: when it has codings,
		// the one of medicationdispense-status-reason).
		med, err := m.dispensedMedication(d.md.Medication, d.md.HasMedicationConcept, d.md.MedicationReference)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(dn.Items, func(it DispensedItem) bool { return strings.EqualFold(it.LineItemID, lineItem) }) {
			var ref reference
			if d.mr.MedicationReference != nil {
				ref = *d.mr.MedicationReference
			}
			if _, err := m.dispensedMedication(d.mr.Medication, d.mr.HasMedicationConcept, ref); err != nil {
				return nil, err
			}
		}
		item := DispensedItem{LineItemID: lineItem, Status: c.Code, QuantityUnit: d.md.Quantity.Unit, Quantity: d.md.Quantity.Value,
			MedicationCode: med.Code, MedicationDisplay: med.Display}
		if cs := d.md.StatusReason.Coding; len(cs) > 0 {
			js := codingsIn(cs, SystemDispenseStatusReason)
			switch {
			case len(js) == 0:
				return nil, tooFewValues("MedicationDispense.statusReasonCodeableConcept.coding[0]", "system == '"+SystemDispenseStatusReason+"'")
			case len(js) > 1:
				return nil, tooManyValues("MedicationDispense.statusReasonCodeableConcept.coding[0]", "system == '"+SystemDispenseStatusReason+"'")
			}
			item.NonDispensingReason = cs[js[0]].Code
		}
		dn.Items = append(dn.Items, item)
	}

	// createOriginalPrescriptionRef: the first contained MedicationRequest's
	// long-form prescription ID extension, exactly one.
	if err := onlyExtension(mds[0].mr.GroupIdentifier.Extension, ExtPrescriptionLongID, "MedicationRequest.groupIdentifier.extension.valueIdentifier"); err != nil {
		return nil, err
	}

	// The repeat dispensing issue: the prescription's, from the first
	// MedicationDispense's contained MedicationRequest's basedOn (counted
	// from 0); else a line item's, from the UK Core repeat information of
	// a contained MedicationRequest (counted from 1).
	if n, err := mds[0].prescriptionIssue(); err != nil || n > 0 {
		dn.Issue = n
		return dn, err
	}
	for i := range mds {
		c := mds[i].request
		if c == nil {
			continue
		}
		n, ok, err := repeatIssue(mds[i].requestExt, c.root+".extension", ExtUKCoreRepeatInformation, RepeatPartPrescriptons, countFrom1)
		if err != nil {
			return nil, err
		}
		if ok {
			dn.Issue = n
			break
		}
	}
	return dn, nil
}

// SystemDispenseStatusReason is the code system of a MedicationDispense's
// non-dispensing reason.
const SystemDispenseStatusReason = "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason"

// onlyCodingOf is the facade's getCodingForSystem: exactly one of cs in
// system, else TooFewValuesError or TooManyValuesError at expr.
func onlyCodingOf(cs []Coding, system, expr string) *Error {
	switch n := len(codingsIn(cs, system)); {
	case n == 0:
		return tooFewValues(expr, "system == '"+system+"'")
	case n > 1:
		return tooManyValues(expr, "system == '"+system+"'")
	}
	return nil
}

// dispensedMedication is the facade's getMedicationCoding
// (translation/common/index.ts) for a MedicationDispense or its contained
// MedicationRequest: the one SNOMED CT coding of its
// medicationCodeableConcept, or else of the code of the Medication entry
// its medicationReference names by fullUrl (resolveReference).
func (m *Message) dispensedMedication(concept Concept, hasConcept bool, ref reference) (Coding, *Error) {
	codings, expr := concept.Coding, "MedicationRequest.medicationCodeableConcept.coding"
	if !hasConcept {
		k, err := byFullURL(m, ref.Reference)
		if err != nil {
			return Coding{}, err
		}
		var code Concept
		if err := readEntry(m, k, func(r *reader) { r.medicationCode(&code) }); err != nil {
			return Coding{}, err
		}
		codings, expr = code.Coding, "Medication.code.coding"
	}
	js := codingsIn(codings, SystemSNOMED)
	switch {
	case len(js) == 0:
		return Coding{}, tooFewValues(expr, "system == '"+SystemSNOMED+"'")
	case len(js) > 1:
		return Coding{}, tooManyValues(expr, "system == '"+SystemSNOMED+"'")
	}
	return codings[js[0]], nil
}

// facadeDispenseChecks are verifyDispenseBundle's checks: what it throws
// (the first MedicationDispense's PractitionerRole and its Organization)
// comes first; then what it collects, in its order.
func (m *Message) facadeDispenseChecks(mds []dispense) *Error {
	// verifyCommonBundle runs first: what it throws comes before all.
	if err := m.commonRoleThrows(); err != nil {
		return err
	}
	first := &mds[0].md
	var role *practitionerRole
	var org *Entry
	if len(first.PerformerRefs) > 0 {
		base := entryPath(mds[0].k, "performer[0].actor.reference")
		var err *Error
		if role, err = containedRole(first.Contained, first.PerformerRefs[0].Reference, base); err != nil {
			return err
		}
		if role.Organization.Reference == "" {
			return processingError(`resource("MedicationDispense").contained("organization")`,
				"fhirContainedPractitionerRole.organization should be a Reference")
		}
		k, err := byFullURL(m, role.Organization.Reference)
		if err != nil {
			return err
		}
		org = &m.Entries[k]
	}

	// verifyCommonBundle's collected issues come before these.
	if err := m.commonCollected(); err != nil {
		return err
	}
	var whens, subjects, repeats, actors [][]byte
	for _, d := range mds {
		whens = append(whens, d.md.WhenHandedOver)
		var subject []byte
		if v := d.md.Subject.Identifier.Value; v != "" {
			subject, _ = json.Marshal(v)
		}
		subjects = append(subjects, subject)
		repeats = append(repeats, extensionJSON(d.md.Extension, ExtRepeatInformation))
		for _, a := range d.md.Performers {
			if a != nil {
				actors = append(actors, a)
			}
		}
	}
	for _, c := range []struct {
		field  string
		values [][]byte
	}{
		{"whenHandedOver", whens},
		{"subject.identifier.value", subjects},
		{`extension("` + ExtRepeatInformation + `")`, repeats},
		{"performer", actors},
	} {
		if u := distinct(c.values); len(u) > 1 {
			return dispenseInconsistent(c.field, u)
		}
	}
	for _, d := range mds {
		if len(d.md.Performers) == 0 {
			return facadeIssue(CodeMissingValue, "value", whereMedicationDispense+".performer.ofType(PractitionerRole)",
				"Expected MedicationDispense to have a value for performer.ofType(PractitionerRole).")
		}
	}
	for _, d := range mds {
		if d.md.HasMedicationConcept && d.md.HasMedicationReference {
			return &Error{Kind: KindInvalid, IssueType: "structure", Code: CodeConflictingValues,
				Display:     "Conflicting values have been specified in different fields",
				Diagnostics: "MedicationDispense cannot contain both medicationReference and medicationCodeableConcept fields.",
				Expression:  []string{entryPath(d.k, "")}}
		}
	}
	if role != nil && role.Practitioner.Reference != "" {
		return referenceNotIdentifier(`Bundle.entry("PractitionerRole").practitioner`)
	}
	if org != nil {
		var o struct{ Extension []extension }
		r := newReader(org.Resource, "Organization")
		r.object(func(key []byte) {
			if string(key) == "extension" {
				list(&r, &o.Extension, r.extension)
			}
		})
		if r.err != nil {
			return r.err
		}
		k := findExtensionIndex(o.Extension, ExtOrganisationRelationships)
		if k < 0 {
			return facadeIssue(CodeMissingValue, "invalid", "Organization.extension",
				"The dispense notification is missing the reimbursement authority and it should be provided.")
		}
		if findExtensionIndex(o.Extension[k].Extension, "reimbursementAuthority") < 0 {
			return facadeIssue(CodeMissingValue, "invalid", "Organization.extension[0].extension[0]",
				"The dispense notification is missing the ODS code for reimbursement authority and it should be provided.")
		}
	}
	return nil
}

// prescriptionIssue is the issue that the basedOn[0]
// Extension-EPS-RepeatInformation of the MedicationRequest contained in d
// names (counted from 0), or 0.
func (d *dispense) prescriptionIssue() (int, *Error) {
	c := d.request
	if c == nil || len(d.requestBasedOn) == 0 {
		return 0, nil
	}
	n, _, err := repeatIssue(d.requestBasedOn[0], c.root+".basedOn[0].extension", ExtRepeatInformation, RepeatPartIssued, countFrom0)
	return n, err
}

// dispensedRequest is what the broker reads of the MedicationRequest
// contained in a MedicationDispense.
type dispensedRequest struct {
	Extension            []extension
	Identifier           []identifier
	GroupIdentifier      groupIdentifier
	BasedOn              [][]extension
	Medication           Concept
	HasMedicationConcept bool
	MedicationReference  *reference
}

func (r *reader) dispensedRequest(mr *dispensedRequest) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &mr.Extension, r.extension)
		case "identifier":
			mr.Identifier = presentList(r, mr.Identifier)
			list(r, &mr.Identifier, r.identifier)
		case "groupIdentifier":
			r.groupIdentifier(&mr.GroupIdentifier)
		case "medicationCodeableConcept", "medicationReference":
			r.medication(string(key), &mr.Medication, &mr.HasMedicationConcept, &mr.MedicationReference)
		case "dispenseRequest":
			// The quantity prescribed, as the dispensing system copied it:
			// bounded as an order's is (amount).
			r.object(func(key []byte) {
				if string(key) == "quantity" {
					r.amount(new(quantity))
				}
			})
		case "basedOn":
			mr.BasedOn = nil
			r.array(func(int) {
				var exts []extension
				r.object(func(key []byte) {
					if string(key) == "extension" {
						list(r, &exts, r.extension)
					}
				})
				mr.BasedOn = append(mr.BasedOn, exts)
			})
		}
	})
}

// authorizing reads the line item id and the short-form prescription ID of
// the MedicationDispense's authorizingPrescription.
func (d *dispense) authorizing() (lineItem string, rxID found, err *Error) {
	if len(d.md.AuthorizingPrescription) == 0 {
		expr := entryPath(d.k, "authorizingPrescription")
		return "", found{}, missing(expr, "%s is missing: it names the prescription line item dispensed", expr)
	}
	// getContainedMedicationRequestViaReference (dispense-notification.ts
	// createPertinentInformation1, mapMedicationDispenses): EPS reads the
	// line item and the prescription only from the MedicationRequest that
	// authorizingPrescription[0].reference names among the
	// MedicationDispense's contained resources; an identifier (with an
	// Extension-DM-GroupIdentifier) is never read, and the facade fails on
	// it (it reads .reference of nothing: a server error there, a refusal
	// here).
	a := &d.md.AuthorizingPrescription[0]
	expr := entryPath(d.k, "authorizingPrescription[0].reference")
	if a.Reference == "" {
		return "", found{}, processingError(expr, expr+" is missing: EPS reads the line item dispensed only from the contained MedicationRequest it references")
	}
	c := findContained(d.md.Contained, a.Reference)
	if c == nil {
		return "", found{}, processingError(expr, "Contained resource with reference "+a.Reference+" not found")
	}
	if c.typ != "MedicationRequest" {
		return "", found{}, processingError(expr, "Contained resource with reference "+a.Reference+" is not of type MedicationRequest")
	}
	mr := &d.mr
	if err := readRaw(c, func(r *reader) { r.dispensedRequest(mr) }); err != nil {
		return "", found{}, err
	}
	// getPrescriptionItemId: the one prescription-order-item-number
	// identifier.
	j, err := identifierForSystem(mr.Identifier, SystemLineItemID, "MedicationDispense.contained[0].identifier")
	if err != nil {
		return "", found{}, err
	}
	lineItem = mr.Identifier[j].Value
	if err := requireUUID(lineItem, pathOf(c.root+".identifier["+strconv.Itoa(j)+"].value")); err != nil {
		return "", found{}, err
	}
	expr = c.root + ".groupIdentifier"
	if err := checkShortID(mr.GroupIdentifier.identifier, expr); err != nil {
		return "", found{}, err
	}
	d.request, d.requestExt, d.requestBasedOn = c, mr.Extension, mr.BasedOn
	return lineItem, found{mr.GroupIdentifier.Value, expr + ".value"}, nil
}

// ---------------------------------------------------------------------------
// Cancellation

// Cancellation validates a prescription-order-update (cancel) message
// (decoded by DecodeMessage) and returns what it asks. The checks, in order
// (code, FHIR issue type), follow the facade's verifyBundle
// (bundle-validator.ts verifyCommonBundle, verifyCancellationBundle), its
// translation (translation/request/cancel/cancellation.ts
// convertCancellation), then Spine's checks of the values it is sent:
//
//	event prescription-order-update               INVALID_VALUE value
//	every PractitionerRole entry: a practitioner
//	  reference resolves by fullUrl, one
//	  sds-role-profile-id when it has identifiers TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	no MedicationRequest of intent plan or
//	  reflex-order, none with both medication
//	  forms; telecoms with value and use;
//	  PractitionerRole references                 INVALID_VALUE, CONFLICTING_VALUES, MISSING_VALUE
//	exactly one MedicationRequest                 INVALID_VALUE value
//	its status cancelled, a statusReason          INVALID_VALUE value, MISSING_VALUE value
//	one Patient with one nhs-number identifier    TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the requester's and the responsible
//	  party's PractitionerRole, Practitioner,
//	  Organization (or locations) and first
//	  HealthcareService, resolved by fullUrl;
//	  their sds-role-profile-id and sds-user-id   TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	one line item identifier, one statusReason
//	  coding of medicationrequest-status-reason,
//	  one Extension-DM-PrescriptionId             TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid
//	the reason 0001-0009, the line item id a
//	  UUID, the short ID (its system is not
//	  read) and check character, the long ID a
//	  UUID, the NHS number                        MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//
// No other reference is resolved and no ODS code's format is checked: EPS
// resolves only what it reads, and no rule of the reference checks the
// format of a cancellation's organisations. MessageHeader.reason is not
// read (EPS tells a cancellation by its event; most NHS example
// cancellations have no reason).
func (m *Message) Cancellation() (*Cancellation, error) {
	c, err := m.cancellation()
	if err != nil {
		err.Op = "validate cancellation"
		return nil, err
	}
	return c, nil
}

// cancelExtras are the elements of a cancellation that medicationRequest
// does not read.
type cancelExtras struct{ StatusReason Concept }

func (m *Message) cancellation() (*Cancellation, *Error) {
	if m.Event != EventPrescriptionOrderUpdate {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order-update message holds a cancellation", quote(m.Event))
	}

	// verifyCommonBundle (bundle-validator.ts): what validatePractitionerRole
	// throws first, then validateMedicationRequests, validateTelecoms and
	// validatePractitionerRole's collected issues; then
	// verifyCancellationBundle, in its order.
	if err := m.commonRoleThrows(); err != nil {
		return nil, err
	}
	if err := m.commonCollected(); err != nil {
		return nil, err
	}
	k, n := -1, 0
	for i, e := range m.Entries {
		if e.ResourceType == "MedicationRequest" {
			if k < 0 {
				k = i
			}
			n++
		}
	}
	if n != 1 {
		return nil, facadeIssue(CodeInvalidValue, "value", whereMedicationRequest,
			"The Bundle must contain exactly one MedicationRequest if MessageHeader.eventCoding.code is '"+EventPrescriptionOrderUpdate+"'.")
	}
	var mr medicationRequest
	var extra cancelExtras
	if err := readEntry(m, k, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
		return nil, err
	}
	hasReason := false
	if err := readEntry(m, k, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) == "statusReason" {
				hasReason = r.peek() != 'n'
				r.concept(&extra.StatusReason)
			}
		})
	}); err != nil {
		return nil, err
	}
	if mr.Status != cancelledStatus {
		return nil, facadeIssue(CodeInvalidValue, "value", whereMedicationRequest+".status", "MedicationRequest.status must be cancelled.")
	}
	if !hasReason {
		return nil, facadeIssue(CodeMissingValue, "value", whereMedicationRequest+".statusReason",
			"Expected MedicationRequest to have a value for statusReason.")
	}

	// The translation (cancellation.ts convertCancellation), in its order:
	// the one Patient, the author (the requester's PractitionerRole) and
	// the responsible party, each resolved by fullUrl; the line item, the
	// reason, the long-form prescription ID.
	pk, err := onlyPatient(m)
	if err != nil {
		return nil, err
	}
	var pt patient
	if err := readEntry(m, pk, func(r *reader) { r.patient(&pt) }); err != nil {
		return nil, err
	}
	pj, err := identifierForSystem(pt.Identifier, SystemNHSNumber, "Patient.identifier")
	if err != nil {
		return nil, err
	}
	if err := m.cancelAgent(mr.Requester.Reference); err != nil {
		return nil, err
	}
	responsible := mr.Requester.Reference
	if e := findExtension(mr.Extension, ExtResponsiblePractitioner); e != nil {
		responsible = ""
		if e.ValueReference != nil {
			responsible = e.ValueReference.Reference
		}
	}
	if err := m.cancelAgent(responsible); err != nil {
		return nil, err
	}
	j, err := identifierForSystem(mr.Identifier, SystemLineItemID, "MedicationRequest.identifier")
	if err != nil {
		return nil, err
	}
	rj := codingsIn(extra.StatusReason.Coding, SystemCancellationReason)
	switch {
	case len(rj) == 0:
		return nil, tooFewValues("MedicationRequest.statusReason", "system == '"+SystemCancellationReason+"'")
	case len(rj) > 1:
		return nil, tooManyValues("MedicationRequest.statusReason", "system == '"+SystemCancellationReason+"'")
	}
	if err := onlyExtension(mr.GroupIdentifier.Extension, ExtPrescriptionLongID, "MedicationRequest.groupIdentifier.extension"); err != nil {
		return nil, err
	}

	// Then Spine's checks of what it was sent: the reason, the line item
	// and prescription IDs, the NHS number.
	rc := extra.StatusReason.Coding[rj[0]]
	if !slices.Contains(CancellationReasons, rc.Code) {
		expr := entryPath(k, "statusReason.coding["+strconv.Itoa(rj[0])+"].code")
		return nil, badValue(expr, "%s %s is not a cancellation reason (%s)", expr, quote(rc.Code), strings.Join(CancellationReasons, ", "))
	}
	c := &Cancellation{BundleID: m.BundleID, Sender: m.Sender, Reason: rc.Code, ReasonDisplay: rc.Display}
	c.LineItemID = mr.Identifier[j].Value
	if err := requireUUID(c.LineItemID, inEntry(k, "identifier").at(j, ".value")); err != nil {
		return nil, err
	}
	if err := checkShortID(mr.GroupIdentifier.identifier, entryPath(k, "groupIdentifier")); err != nil {
		return nil, err
	}
	c.PrescriptionID = mr.GroupIdentifier.Value
	c.LongID = longID(&mr)
	if err := requireUUID(c.LongID, inEntry(k, "groupIdentifier.extension('"+ExtPrescriptionLongID+"').valueIdentifier.value")); err != nil {
		return nil, err
	}
	c.NHSNumber = pt.Identifier[pj].Value
	if err := requireNHSNumber(c.NHSNumber, inEntry(pk, "identifier").at(pj, ".value")); err != nil {
		return nil, err
	}
	return c, nil
}

// onlyPatient is the facade's getPatient (getResourcesOfType.ts): the
// entry of the one Patient of the Bundle, else TooFewValuesError or
// TooManyValuesError at Bundle.entry.
func onlyPatient(m *Message) (int, *Error) {
	p := -1
	for k, e := range m.Entries {
		if e.ResourceType != "Patient" {
			continue
		}
		if p >= 0 {
			return -1, tooManyValues("Bundle.entry", "resource.resourceType == 'Patient'")
		}
		p = k
	}
	if p < 0 {
		return -1, tooFewValues("Bundle.entry", "resource.resourceType == 'Patient'")
	}
	return p, nil
}

// byFullURL is the facade's resolveReference (translation/common/index.ts
// getResourceForFullUrl): the entry whose fullUrl is ref, exactly; none is
// TooFewValuesError, several TooManyValuesError, at Bundle.entry.
func byFullURL(m *Message, ref string) (int, *Error) {
	k, n := -1, 0
	for i := range m.Entries {
		if m.Entries[i].FullURL == ref {
			if k < 0 {
				k = i
			}
			n++
		}
	}
	switch {
	case n == 0:
		return -1, tooFewValues("Bundle.entry", "fullUrl == '"+ref+"'")
	case n > 1:
		return -1, tooManyValues("Bundle.entry", "fullUrl == '"+ref+"'")
	}
	return k, nil
}

// cancelAgent resolves and reads the PractitionerRole that ref names as the
// cancellation's translation does (cancellation.ts convertAuthor,
// convertResponsibleParty, convertPractitionerRole, createAgentPerson):
// the role by fullUrl; its practitioner (a reference resolved by fullUrl,
// or an identifier) with one sds-user-id identifier; its sds-role-profile-id
// (when it has identifiers); its organization (a reference resolved by
// fullUrl, or an identifier with its locations resolved); its first
// healthcareService when it has one.
func (m *Message) cancelAgent(ref string) *Error {
	k, err := byFullURL(m, ref)
	if err != nil {
		return err
	}
	var role practitionerRole
	if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
		return err
	}
	if role.HasPractitioner {
		ids := []identifier{role.Practitioner.Identifier}
		if role.Practitioner.Reference != "" {
			p, err := byFullURL(m, role.Practitioner.Reference)
			if err != nil {
				return err
			}
			var pr struct{ Identifier []identifier }
			if err := readEntry(m, p, func(r *reader) {
				r.object(func(key []byte) {
					if string(key) == "identifier" {
						pr.Identifier = presentList(r, pr.Identifier)
						list(r, &pr.Identifier, r.identifier)
					}
				})
			}); err != nil {
				return err
			}
			ids = pr.Identifier
		}
		if role.HasIdentifier {
			if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, "PractitionerRole.identifier"); err != nil {
				return err
			}
		}
		if _, err := identifierForSystem(ids, SystemSDSUserID, "Practitioner.identifier"); err != nil {
			return err
		}
	} else if role.HasIdentifier {
		if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, "PractitionerRole.identifier"); err != nil {
			return err
		}
	}
	if role.Organization.Reference != "" {
		if _, err := byFullURL(m, role.Organization.Reference); err != nil {
			return err
		}
	} else {
		for _, l := range role.Location {
			if _, err := byFullURL(m, l.Reference); err != nil {
				return err
			}
		}
	}
	if len(role.HealthcareService) > 0 && role.HealthcareService[0].Reference != "" {
		if _, err := byFullURL(m, role.HealthcareService[0].Reference); err != nil {
			return err
		}
	}
	return nil
}

// presentIDs is ids, or an empty list when nil (an identifier member that
// is present).
func presentIDs(ids []identifier) []identifier {
	if ids == nil {
		return []identifier{}
	}
	return ids
}

// commonRoleThrows is what verifyCommonBundle's validatePractitionerRole
// (bundle-validator.ts) throws for the PractitionerRole entries of any
// message Bundle, role by role: a practitioner given as a reference must
// resolve by fullUrl (resolveReference), and its Practitioner have at most
// one sds-user-id (verifyPractitionerID); a role with identifiers must have
// exactly one sds-role-profile-id (verifyPractitionerRoleID). What the
// facade throws is answered before what it collects.
func (m *Message) commonRoleThrows() *Error {
	for k, e := range m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var role practitionerRole
		if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return err
		}
		if role.HasPractitioner && role.Practitioner.Reference != "" {
			p, err := byFullURL(m, role.Practitioner.Reference)
			if err != nil {
				return err
			}
			var pr struct{ Identifier []identifier }
			if err := readEntry(m, p, func(r *reader) {
				r.object(func(key []byte) {
					if string(key) == "identifier" {
						list(r, &pr.Identifier, r.identifier)
					}
				})
			}); err != nil {
				return err
			}
			if len(identifiersIn(pr.Identifier, SystemSDSUserID)) > 1 {
				const expr = `Bundle.entry("Practitioner").identifier`
				return facadeIssue(CodeTooManyValues, "invalid", expr,
					"Too many values submitted. Expected at most 1 element where system == '"+SystemSDSUserID+"'.")
			}
		}
		if role.HasIdentifier {
			if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, `Bundle.entry("PractitionerRole").identifier`); err != nil {
				return err
			}
		}
	}
	return nil
}

// identifiersIn returns the indexes of the identifiers of ids in system.
func identifiersIn(ids []identifier, system string) []int {
	var out []int
	for j, id := range ids {
		if id.System == system {
			out = append(out, j)
		}
	}
	return out
}

// commonCollected is what verifyCommonBundle (bundle-validator.ts) collects
// for any message Bundle, in its order: validateMedicationRequests over the
// MedicationRequest entries (none of intent plan or reflex-order,
// createMedicationRequestIncorrectValueIssue; none with both
// medicationCodeableConcept and medicationReference,
// createMedicationFieldIssue: CONFLICTING_VALUES); validateTelecoms (every
// telecom of an Organization, Practitioner or PractitionerRole entry with a
// value and a use); validatePractitionerRole for each PractitionerRole
// entry: its practitioner (when present) a reference, or, for the
// responsible practitioner named by a MedicationRequest's
// Extension-DM-ResponsiblePractitioner, a reference or an identifier but
// not both; its organization and every healthcareService a reference
// (fieldIsNotReferenceButShouldBe). Contained resources are not entries:
// a dispense notification's contained MedicationRequest and
// PractitionerRole are not checked here.
func (m *Message) commonCollected() *Error {
	var both = -1
	var responsible []string
	for k, e := range m.Entries {
		if e.ResourceType != "MedicationRequest" {
			continue
		}
		var mr medicationRequest
		if err := readEntry(m, k, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
			return err
		}
		if mr.Intent == "plan" || mr.Intent == "reflex-order" {
			return incorrectItemValue("intent", "order, original-order or instance-order")
		}
		if both < 0 && mr.HasMedicationConcept && mr.MedicationReference != nil {
			both = k
		}
		if j := findExtensionIndex(mr.Extension, ExtResponsiblePractitioner); j >= 0 && mr.Extension[j].ValueReference != nil {
			responsible = append(responsible, mr.Extension[j].ValueReference.Reference)
		}
	}
	if both >= 0 {
		const d = "MedicationRequest cannot contain both medicationReference and medicationCodeableConcept fields."
		return &Error{Kind: KindInvalid, IssueType: "structure", Code: CodeConflictingValues,
			Display: "Conflicting values have been specified in different fields", Diagnostics: d,
			Expression: []string{entryPath(both, "medication")}}
	}
	if err := (&orderCheck{m: m}).checkTelecoms(); err != nil {
		return err
	}
	for k, e := range m.Entries {
		if e.ResourceType != "PractitionerRole" {
			continue
		}
		var role practitionerRole
		if err := readEntry(m, k, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return err
		}
		if role.HasPractitioner {
			p := role.Practitioner
			isRef, isID := p.Reference != "", p.Identifier != (identifier{})
			if slices.Contains(responsible, e.FullURL) {
				if isRef == isID {
					return facadeIssue(CodeInvalidValue, "invalid", entryPath(k, "practitioner"),
						"Responsible practitioner must be either a reference to a Practitioner resource or an identifier reference.")
				}
			} else if !isRef {
				return notReference("practitionerRole.practitioner", entryPath(k, "practitioner"))
			}
		}
		if role.Organization.Reference == "" {
			return notReference("practitionerRole.organization", entryPath(k, "organization"))
		}
		for i, hs := range role.HealthcareService {
			if hs.Reference == "" {
				field := "practitionerRole.healthcareService[" + strconv.Itoa(i) + "]"
				return notReference(field, entryPath(k, "healthcareService["+strconv.Itoa(i)+"]"))
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Claim

// DecodeClaim decodes and validates the body of POST /Claim: first the
// checks of the EPS FHIR facade (validation/claim-validator.ts verifyClaim,
// what it throws first, then what it collects, in its order), then what its
// translation (translation/request/dispense/dispense-claim.ts) and the
// broker need. In order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Claim                            MISSING_VALUE required, INVALID_VALUE value
//	provider a reference to a contained
//	  PractitionerRole                            INVALID_VALUE invalid
//	its practitioner identifier sds-user-id, its
//	  identifiers with one sds-role-profile-id    TOO_FEW/TOO_MANY_VALUES_SUBMITTED invalid (thrown)
//	exactly one insurance, its coverage T1450 or
//	  RQFZ1                                       INVALID_VALUE invalid / value
//	the PractitionerRole's practitioner not a
//	  reference                                   INVALID_VALUE invalid
//	an endorsement on the first detail (of the
//	  first item) that has a programCode          MISSING_VALUE invalid
//	identifier present, a UUID                    MISSING_VALUE required, INVALID_VALUE value
//	status active                                 MISSING_VALUE required, INVALID_VALUE value
//	patient a valid NHS number                    MISSING_VALUE required, INVALID_VALUE value
//	prescription Extension-DM-GroupIdentifier
//	  shortForm: short ID and check character     MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//	Extension-replacementOf (when present) a UUID INVALID_VALUE value
//	item present; each with one
//	  Extension-EPS-TaskBusinessStatus 0006 or
//	  0007, the same on every item; detail
//	  present; each detail with one line item
//	  reference (its identifier's value a UUID,
//	  its system not read) and a
//	  medicationdispense-type modifier 0001-0005  TOO_FEW/TOO_MANY_VALUES_SUBMITTED, MISSING_VALUE, INVALID_VALUE value / invalid
//	Extension-EPS-RepeatInformation (when
//	  present, on the item or else its first
//	  detail) numberOfRepeatsIssued counted
//	  from 0                                      MISSING_VALUE, INVALID_VALUE structure / value
//	the long-form prescription ID a UUID          MISSING_VALUE, INVALID_VALUE value
//
// The organisation the claim names (provider, payee) is recorded as sent and
// never used to refuse it: the acting dispenser is the caller's.
func DecodeClaim(body []byte) (*ClaimRequest, error) {
	c, err := decodeClaim(body)
	if err != nil {
		err.Op = "decode claim"
		return nil, err
	}
	return c, nil
}

type claim struct {
	Extension    []extension
	Contained    []rawResource
	Identifier   []identifier
	Status       string
	Patient      reference
	Provider     reference
	Insurance    []reference // insurance[].coverage
	PayeeParty   reference
	Prescription []extension // prescription.extension
	Items        []claimItem
	Created      *string
}

type claimItem struct {
	Extension []extension
	Detail    []claimDetail
}

type claimDetail struct {
	Extension   []extension
	Modifier    []Concept
	ProgramCode []Concept
	SubDetail   [][]extension // each subDetail's extensions
}

func (r *reader) claimItem(it *claimItem) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &it.Extension, r.extension)
		case "detail":
			list(r, &it.Detail, func(d *claimDetail) {
				r.object(func(key []byte) {
					switch string(key) {
					case "extension":
						list(r, &d.Extension, r.extension)
					case "modifier":
						list(r, &d.Modifier, r.concept)
					case "programCode":
						list(r, &d.ProgramCode, r.concept)
					case "quantity":
						r.amount(new(quantity)) // the quantity claimed: bounded (amount)
					case "subDetail":
						list(r, &d.SubDetail, func(exts *[]extension) {
							r.object(func(key []byte) {
								switch string(key) {
								case "extension":
									list(r, exts, r.extension)
								case "quantity":
									r.amount(new(quantity))
								}
							})
						})
					}
				})
			})
		}
	})
}

func decodeClaim(body []byte) (*ClaimRequest, *Error) {
	const root = "Claim"
	var cl claim
	if err := readBody(body, root, []string{"extension", "contained", "identifier", "status", "patient", "provider", "insurance", "payee", "prescription", "item", "created"}, func(r *reader, key string) {
		switch key {
		case "extension":
			list(r, &cl.Extension, r.extension)
		case "contained":
			cl.Contained = r.containedList(root + ".contained")
		case "identifier":
			cl.Identifier = presentList(r, cl.Identifier)
			list(r, &cl.Identifier, r.identifier)
		case "status":
			cl.Status = r.str()
		case "patient":
			r.reference(&cl.Patient)
		case "provider":
			r.reference(&cl.Provider)
		case "insurance":
			list(r, &cl.Insurance, func(cov *reference) {
				r.object(func(key []byte) {
					if string(key) == "coverage" {
						r.reference(cov)
					}
				})
			})
		case "payee":
			r.object(func(key []byte) {
				if string(key) == "party" {
					r.reference(&cl.PayeeParty)
				}
			})
		case "prescription":
			r.object(func(key []byte) {
				if string(key) == "extension" {
					list(r, &cl.Prescription, r.extension)
				}
			})
		case "item":
			cl.Items = []claimItem{}
			list(r, &cl.Items, r.claimItem)
		case "created":
			v := r.str()
			cl.Created = &v
		}
	}); err != nil {
		return nil, err
	}
	if err := facadeClaimChecks(&cl); err != nil {
		return nil, err
	}
	c := &ClaimRequest{}

	// convertDispenseClaim (dispense-claim.ts): the message id, created,
	// exactly one item, the provider's organisation.
	j, err := identifierForSystem(cl.Identifier, SystemMessageID, "Claim.identifier")
	if err != nil {
		return nil, err
	}
	c.ID = cl.Identifier[j].Value
	if err := requireUUID(c.ID, pathOf("Claim.identifier["+strconv.Itoa(j)+"].value")); err != nil {
		return nil, err
	}
	if err := facadeDateTime(cl.Created, "Claim.created"); err != nil {
		return nil, err
	}
	switch {
	case cl.Items == nil:
		return nil, processingError("Claim.item", "Required field missing.")
	case len(cl.Items) == 0:
		return nil, facadeIssue(CodeTooFewValues, "invalid", "Claim.item", "Too few values submitted. Expected 1 element.")
	case len(cl.Items) > 1:
		return nil, facadeIssue(CodeTooManyValues, "invalid", "Claim.item", "Too many values submitted. Expected 1 element.")
	}
	role, _ := containedRole(cl.Contained, cl.Provider.Reference, "Claim.provider") // resolved by facadeClaimChecks
	if err := containedOrganization(cl.Contained, role.Organization, true,
		`Claim.contained("PractitionerRole").organization`, "practitioner.organization should be a reference"); err != nil {
		return nil, err
	}

	// Claim.status and Claim.patient are not read by EPS (claim-validator.ts,
	// dispense-claim.ts): the patient's NHS number is recorded when given.
	if id := cl.Patient.Identifier; id.System == SystemNHSNumber && requireNHSNumber(id.Value, pathOf("Claim.patient.identifier.value")) == nil {
		c.NHSNumber = id.Value
	}

	// Recorded as sent, never used to refuse: the organisation the claim
	// names, if it names one.
	if provider, err := dispenserODS(cl.Contained, "Claim", refAt("Claim.provider", cl.Provider), refAt("Claim.payee.party", cl.PayeeParty)); err == nil {
		c.Provider = provider
	}

	short, long, err := groupIdentifierExt(cl.Prescription, "Claim.prescription")
	if err != nil {
		return nil, err
	}
	c.PrescriptionID = short.v

	if k := findExtensionIndex(cl.Extension, ExtReplacementOf); k >= 0 {
		expr := "Claim.extension[" + strconv.Itoa(k) + "].valueIdentifier.value"
		v := ""
		if e := cl.Extension[k]; e.ValueIdentifier != nil {
			v = e.ValueIdentifier.Value
		}
		if err := requireUUID(v, pathOf(expr)); err != nil {
			return nil, err
		}
		c.ReplacementOf = v
	}

	if err := c.readItems(cl.Items); err != nil {
		return nil, err
	}
	if err := c.readIssue(cl.Items); err != nil {
		return nil, err
	}

	if err := requireUUID(long.v, pathOf(long.expr)); err != nil {
		return nil, err
	}
	c.LongID = long.v
	return c, nil
}

// claimAuthorities are the reimbursement authorities a claim may name
// (claim-validator.ts).
var claimAuthorities = []string{ODSNHSBSA, "RQFZ1"}

// facadeClaimChecks are verifyClaim's checks (claim-validator.ts): what it
// throws (the provider's contained PractitionerRole) first, then what it
// collects, in its order.
func facadeClaimChecks(cl *claim) *Error {
	role, err := containedRole(cl.Contained, cl.Provider.Reference, "Claim.provider")
	if err != nil {
		return err
	}
	if err := sdsIdentifiers(role, `claim.contained("PractitionerRole")`); err != nil {
		return err
	}
	if len(cl.Insurance) != 1 {
		return facadeIssue(CodeInvalidValue, "invalid", "Claim.insurance",
			"Expected 1 item(s) in Claim.insurance, but received "+strconv.Itoa(len(cl.Insurance))+".")
	}
	if !slices.Contains(claimAuthorities, cl.Insurance[0].Identifier.Value) {
		return facadeIssue(CodeInvalidValue, "value", "Claim.insurance[0].coverage.identifier.value",
			"Claim.insurance[0].coverage.identifier.value must be one of: 'T1450', 'RQFZ1'.")
	}
	if role.Practitioner.Reference != "" {
		// (sic: claim-validator.ts names the release's agent)
		return referenceNotIdentifier(exprAgentPractitioner)
	}
	if !endorsementPresent(cl.Items) {
		return facadeIssue(CodeMissingValue, "invalid", "Claim.item.detail.programCode", "The claim is missing the required endorsement code.")
	}
	return nil
}

// endorsementPresent is the facade's medicationDispenseEndorsementPresent
// (dispense-claim.ts): the first detail of the first item that has a
// programCode decides whether one of them is an endorsement.
func endorsementPresent(items []claimItem) bool {
	if len(items) == 0 {
		return false
	}
	for _, det := range items[0].Detail {
		if len(det.ProgramCode) > 0 {
			return hasCoding(det.ProgramCode, SystemEndorsement)
		}
	}
	return false
}

// readItems reads the prescription status and the line items of a claim.
func (c *ClaimRequest) readItems(items []claimItem) *Error {
	if len(items) == 0 {
		return missing("Claim.item", "Claim.item is missing: a claim claims at least one item")
	}
	for i, it := range items {
		base := "Claim.item[" + strconv.Itoa(i) + "]"
		// createPrescriptionStatus: getExtensionForUrl, exactly one; then
		// the statuses a claim may state.
		if err := onlyExtension(it.Extension, ExtTaskBusinessStatus, "Claim.item.extension"); err != nil {
			return err
		}
		f, err := extCodeIn(it.Extension, ExtTaskBusinessStatus, base, ClaimPrescriptionStatuses, "prescription status")
		if err != nil {
			return err
		}
		if i == 0 {
			c.PrescriptionStatus = f.v
		} else if f.v != c.PrescriptionStatus {
			return inconsistent(f.expr, "%s %s differs from %s in Claim.item[0]: a claim states one prescription status", f.expr, quote(f.v), quote(c.PrescriptionStatus))
		}
		if len(it.Detail) == 0 {
			return missing(base+".detail", "%s.detail is missing: it lists the line items claimed", base)
		}
		for d, det := range it.Detail {
			dbase := base + ".detail[" + strconv.Itoa(d) + "]"
			// createSuppliedLineItem: the claim sequence identifier, then
			// the line item status (modifier), then the line item.
			if err := onlyExtension(det.Extension, ExtClaimSequenceID, "Claim.item.detail.extension"); err != nil {
				return err
			}
			if err := onlyCoding(det.Modifier, SystemDispenseType, "Claim.item.detail.modifier"); err != nil {
				return err
			}
			// The line item: getExtensionForUrl, exactly one; its
			// valueReference.identifier.value, whatever its system; a
			// UUID (Spine).
			if err := onlyExtension(det.Extension, ExtClaimLineItemRef, "Claim.item.detail.extension"); err != nil {
				return err
			}
			k := findExtensionIndex(det.Extension, ExtClaimLineItemRef)
			var id identifier
			if e := det.Extension[k]; e.ValueReference != nil {
				id = e.ValueReference.Identifier
			}
			expr := dbase + ".extension[" + strconv.Itoa(k) + "].valueReference.identifier"
			if err := requireUUID(id.Value, pathOf(expr+".value")); err != nil {
				return err
			}
			status, err := checkConcepts(det.Modifier, dbase+".modifier", SystemDispenseType, DispensedItemStatuses, "line item status")
			if err != nil {
				return err
			}
			c.Items = append(c.Items, ClaimItem{LineItemID: id.Value, Status: status.Code})
		}
	}
	return nil
}

// readIssue reads the repeat dispensing issue a claim names as the
// facade's translation does (dispense-claim.ts): the
// Extension-EPS-RepeatInformation of the (first) item, or else, the
// deprecated place, of its first detail; counted from 0.
func (c *ClaimRequest) readIssue(items []claimItem) *Error {
	if len(items) == 0 {
		return nil
	}
	n, ok, err := repeatIssue(items[0].Extension, "Claim.item[0].extension", ExtRepeatInformation, RepeatPartIssued, countFrom0)
	if err != nil {
		return err
	}
	if !ok && len(items[0].Detail) > 0 {
		n, _, err = repeatIssue(items[0].Detail[0].Extension, "Claim.item[0].detail[0].extension", ExtRepeatInformation, RepeatPartIssued, countFrom0)
		if err != nil {
			return err
		}
	}
	c.Issue = n
	return nil
}

// ---------------------------------------------------------------------------
// Helpers

// presentList makes ids, about to be read at the cursor, an empty list
// rather than nil when the member is present (not null), so that
// identifierForSystem tells an empty list (too few) from an absent one.
func presentList(r *reader, ids []identifier) []identifier {
	if ids == nil && r.peek() != 'n' {
		return []identifier{}
	}
	return ids
}

// onlyExtension is the facade's getExtensionForUrl: exactly one of exts has
// url, else TooFewValuesError or TooManyValuesError at expr.
func onlyExtension(exts []extension, url, expr string) *Error {
	n := 0
	for _, e := range exts {
		if e.URL == url {
			n++
		}
	}
	switch {
	case n == 0:
		return tooFewValues(expr, "url == '"+url+"'")
	case n > 1:
		return tooManyValues(expr, "url == '"+url+"'")
	}
	return nil
}

// onlyCoding is the facade's getCodeableConceptCodingForSystem over the
// concepts cc at expr: present, and exactly one coding of system among
// them (TooFewValuesError / TooManyValuesError at expr.coding).
func onlyCoding(cc []Concept, system, expr string) *Error {
	if cc == nil {
		return processingError(expr, "Required field missing.")
	}
	n := 0
	for _, c := range cc {
		n += len(codingsIn(c.Coding, system))
	}
	switch {
	case n == 0:
		return tooFewValues(expr+".coding", "system == '"+system+"'")
	case n > 1:
		return tooManyValues(expr+".coding", "system == '"+system+"'")
	}
	return nil
}

// facadeDateTime is dateTime.ts convertIsoDateTimeStringToHl7V3DateTime:
// v (nil when absent: the facade tests the text "undefined") must be a
// FHIR dateTime, else InvalidValueError at expr.
func facadeDateTime(v *string, expr string) *Error {
	text := "undefined"
	if v != nil {
		text = *v
	}
	if fhirDateTime.MatchString(text) {
		return nil
	}
	return processingError(expr, "Incorrect format for date time string '"+text+"'.")
}

// containedOrganization checks the organization of a contained
// PractitionerRole as the facade's translations do: when it is a reference
// it must name an Organization contained in the same resource
// (getContainedOrganizationViaReference); when required, it must be a
// reference (InvalidValueError at expr with the words given).
func containedOrganization(cs []rawResource, org reference, required bool, expr, words string) *Error {
	if org.Reference == "" {
		if required {
			return processingError(expr, words)
		}
		return nil
	}
	c := findContained(cs, org.Reference)
	if c == nil {
		return processingError(expr, "Contained resource with reference "+org.Reference+" not found")
	}
	if c.typ != "Organization" {
		return processingError(expr, "Contained resource with reference "+org.Reference+" is not of type Organization")
	}
	return nil
}

// firstError returns the first of errs that is not nil.
func firstError(errs ...*Error) *Error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// pathOf is the fieldPath of the FHIRPath expr.
func pathOf(expr string) fieldPath { return under(expr, "") }

// found is a value read from a request and the FHIRPath where it was found.
type found struct{ v, expr string }

// rawResource is a resource inside a request (a contained resource, a
// Parameters resource) kept as its raw JSON, with its FHIRPath, type and id.
type rawResource struct {
	typ, id string
	b       []byte
	root    string
}

// resource reads the resource at the cursor, whose FHIRPath is root: its
// resourceType and id, and its raw JSON for later reading.
func (r *reader) resource(root string) rawResource {
	switch r.peek() {
	case '{':
	case 'n':
		r.skip()
		return rawResource{}
	default:
		r.mismatch("an object")
		return rawResource{}
	}
	res := rawResource{b: r.raw(), root: root}
	sub := newReader(res.b, root)
	sub.object(func(key []byte) {
		switch string(key) {
		case "resourceType":
			res.typ = sub.str()
		case "id":
			res.id = sub.str()
		}
	})
	r.fail(sub.err)
	return res
}

// containedList reads the array of contained resources at the cursor, whose
// FHIRPath is base.
func (r *reader) containedList(base string) []rawResource {
	var out []rawResource
	r.array(func(i int) {
		out = append(out, r.resource(base+"["+strconv.Itoa(i)+"]"))
	})
	return out
}

// findContained returns the contained resource that the local reference ref
// ("#id") names, or nil.
func findContained(cs []rawResource, ref string) *rawResource {
	if len(ref) < 2 || ref[0] != '#' {
		return nil
	}
	for i := range cs {
		if cs[i].b != nil && cs[i].id == ref[1:] {
			return &cs[i]
		}
	}
	return nil
}

// readRaw reads res with read.
func readRaw(res *rawResource, read func(r *reader)) *Error {
	r := newReader(res.b, res.root)
	read(&r)
	return r.err
}

// practitionerRole holds what the broker reads of a PractitionerRole: what
// the facade's validators check and its translations read (e.g.
// cancellation.ts convertPractitionerRole).
type practitionerRole struct {
	Identifier        []identifier
	HasIdentifier     bool
	Practitioner      reference
	HasPractitioner   bool
	Organization      reference
	HealthcareService []reference
	Location          []reference
	Telecom           int // how many telecom entries it has
}

func (r *reader) practitionerRole(p *practitionerRole) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			p.HasIdentifier = r.peek() != 'n'
			list(r, &p.Identifier, r.identifier)
		case "practitioner":
			p.HasPractitioner = r.peek() != 'n'
			r.reference(&p.Practitioner)
		case "organization":
			r.reference(&p.Organization)
		case "healthcareService":
			list(r, &p.HealthcareService, r.reference)
		case "location":
			list(r, &p.Location, r.reference)
		case "telecom":
			p.Telecom = 0
			r.array(func(int) { r.skip(); p.Telecom++ })
		}
	})
}

// containedODS reads the ODS code of the Organization res.
func containedODS(res *rawResource) (found, *Error) {
	var org organization
	if err := readRaw(res, func(r *reader) { r.organization(&org) }); err != nil {
		return found{}, err
	}
	j := findIdentifier(org.Identifier, SystemODSCode)
	if j < 0 {
		expr := res.root + ".identifier"
		return found{}, missing(expr, "%s has no identifier with system %s (the ODS code)", expr, SystemODSCode)
	}
	return found{org.Identifier[j].Value, res.root + ".identifier[" + strconv.Itoa(j) + "].value"}, nil
}

// sdsIdentifiers are what the facade's validators throw on the SDS
// identifiers of the PractitionerRole of a release, Task or Claim, which
// they compare with the caller's (parameters-validator.ts verifyParameters,
// task-validator.ts verifyTask, claim-validator.ts verifyClaim): a
// practitioner given as an identifier must be of the sds-user-id system,
// and a role with identifiers must have one sds-role-profile-id
// (getIdentifierValueForSystem: TooFewValuesError, TooManyValuesError at
// the FHIRPath they give, under base). A mismatch with the caller is only
// logged.
func sdsIdentifiers(role *practitionerRole, base string) *Error {
	if role.HasPractitioner && role.Practitioner.Reference == "" {
		if _, err := identifierForSystem([]identifier{role.Practitioner.Identifier}, SystemSDSUserID, base+".practitioner.identifier"); err != nil {
			return err
		}
	}
	if role.HasIdentifier {
		if _, err := identifierForSystem(presentIDs(role.Identifier), SystemSDSRoleProfileID, base+".identifier"); err != nil {
			return err
		}
	}
	return nil
}

// namedRef is a reference and its FHIRPath.
type namedRef struct {
	expr string
	ref  reference
}

func refAt(expr string, r reference) namedRef { return namedRef{expr, r} }

// dispenserODS finds the ODS code of the dispensing organisation of a Task
// or Claim (root) with contained resources cs: that of the first of refs
// that names one, by an ODS identifier, a contained Organization or a
// contained PractitionerRole's organization; or else that of the only
// contained Organization. It is recorded as sent: its format is not checked.
func dispenserODS(cs []rawResource, root string, refs ...namedRef) (string, *Error) {
	for _, nr := range refs {
		f, err := refODS(nr.ref, nr.expr, cs, true)
		if err != nil {
			return "", err
		}
		if f.expr != "" {
			return f.v, nil
		}
	}
	var only *rawResource
	for i := range cs {
		if cs[i].b == nil || cs[i].typ != "Organization" {
			continue
		}
		if only != nil {
			only = nil
			break
		}
		only = &cs[i]
	}
	if only != nil {
		f, err := containedODS(only)
		return f.v, err
	}
	names := make([]string, len(refs))
	for i, nr := range refs {
		names[i] = nr.expr
	}
	return "", missing(refs[0].expr, "the %s names no dispensing organisation: %s must name it by ODS code or contained Organization",
		root, strings.Join(names, " or "))
}

// refODS reads the ODS code that ref, at expr, names: its ODS identifier,
// the contained Organization it references, or (when viaRole) the
// organization of the contained PractitionerRole it references. f.expr is
// empty when ref names none.
func refODS(ref reference, expr string, cs []rawResource, viaRole bool) (f found, err *Error) {
	if id := ref.Identifier; id.Value != "" && (id.System == "" || id.System == SystemODSCode) {
		return found{id.Value, expr + ".identifier.value"}, nil
	}
	c := findContained(cs, ref.Reference)
	if c == nil {
		return found{}, nil
	}
	switch c.typ {
	case "Organization":
		return containedODS(c)
	case "PractitionerRole":
		if !viaRole {
			return found{}, nil
		}
		var role practitionerRole
		if err := readRaw(c, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return found{}, err
		}
		return refODS(role.Organization, c.root+".organization", cs, false)
	}
	return found{}, nil
}

// findExtensionIndex returns the index of the first of exts with the given
// url, or -1.
func findExtensionIndex(exts []extension, url string) int {
	for i := range exts {
		if exts[i].URL == url {
			return i
		}
	}
	return -1
}

// extCode returns valueCoding.code of the first extension with the given
// url ("" when absent).
func extCode(exts []extension, url string) string {
	if k := findExtensionIndex(exts, url); k >= 0 && exts[k].ValueCoding != nil {
		return exts[k].ValueCoding.Code
	}
	return ""
}

// extCodeIn reads the code of the extension url of the element at base: it
// must be present and one of allowed.
func extCodeIn(exts []extension, url, base string, allowed []string, what string) (found, *Error) {
	k := findExtensionIndex(exts, url)
	if k < 0 || exts[k].ValueCoding == nil || exts[k].ValueCoding.Code == "" {
		expr := base + ".extension('" + url + "').valueCoding.code"
		return found{}, missing(expr, "%s is missing: the %s (one of %s)", expr, what, strings.Join(allowed, ", "))
	}
	expr := base + ".extension[" + strconv.Itoa(k) + "].valueCoding.code"
	code := exts[k].ValueCoding.Code
	if !slices.Contains(allowed, code) {
		return found{}, badValue(expr, "%s %s is not a %s this message may state (%s)", expr, quote(code), what, strings.Join(allowed, ", "))
	}
	return found{code, expr}, nil
}

// groupIdentifierExt reads the Extension-DM-GroupIdentifier of the element
// at base: its shortForm (a valid short-form ID) and its UUID (not checked
// here).
func groupIdentifierExt(exts []extension, base string) (short, long found, err *Error) {
	k := findExtensionIndex(exts, ExtGroupIdentifier)
	if k < 0 {
		expr := base + ".extension('" + ExtGroupIdentifier + "')"
		return short, long, missing(expr, "%s is missing: it names the prescription by its short-form and long-form IDs", expr)
	}
	gbase := base + ".extension[" + strconv.Itoa(k) + "]"
	subs := exts[k].Extension
	s := findExtensionIndex(subs, extGroupIDShortForm)
	if s < 0 || subs[s].ValueIdentifier == nil {
		expr := gbase + ".extension('" + extGroupIDShortForm + "').valueIdentifier.value"
		return short, long, missing(expr, "%s is missing: it must be the short-form prescription ID", expr)
	}
	sexpr := gbase + ".extension[" + strconv.Itoa(s) + "].valueIdentifier"
	if err := checkShortID(*subs[s].ValueIdentifier, sexpr); err != nil {
		return short, long, err
	}
	short = found{subs[s].ValueIdentifier.Value, sexpr + ".value"}
	long.expr = gbase + ".extension('" + extGroupIDUUID + "').valueIdentifier.value"
	if u := findExtensionIndex(subs, extGroupIDUUID); u >= 0 {
		long.expr = gbase + ".extension[" + strconv.Itoa(u) + "].valueIdentifier.value"
		if subs[u].ValueIdentifier != nil {
			long.v = subs[u].ValueIdentifier.Value
		}
	}
	return short, long, nil
}

// checkShortID checks the value of the identifier id, at expr, of a
// short-form prescription ID as Spine does (eps-spine-shared
// validation/common.py check_prescription_id): its form and its check
// character. Its system is not checked: the facade reads the value alone
// (dispense-notification.ts createPrescriptionId, cancellation.ts
// pertinentInformation2, release.ts, dispense-claim.ts createPrescriptionId);
// a Task checks it before (taskGroupIdentifier).
func checkShortID(id identifier, expr string) *Error {
	switch {
	case id.Value == "":
		return missing(expr+".value", "%s.value is missing: it must be the short-form prescription ID", expr)
	case !ShortIDWellFormed(id.Value):
		return badValue(expr+".value",
			"%s.value %s is not a short-form prescription ID (6 hexadecimal characters, the prescriber's ODS code padded to 6, 5 hexadecimal characters and a check character, separated by dashes)",
			expr, quote(id.Value))
	case !ValidShortID(id.Value):
		return checksumError(expr+".value", id.Value)
	}
	return nil
}

// pickCoding returns the index of the coding of cs in system, or else of
// the first coding, or -1 when there is none.
func pickCoding(cs []Coding, system string) int {
	for j, c := range cs {
		if c.System == system {
			return j
		}
	}
	if len(cs) > 0 {
		return 0
	}
	return -1
}

// checkCoding checks the codings cs of the CodeableConcept at base: one, in
// system (or without a system), must have a code among allowed.
func checkCoding(cs []Coding, base, system string, allowed []string, what string) (Coding, *Error) {
	j := pickCoding(cs, system)
	if j < 0 || cs[j].Code == "" {
		expr := base + ".coding"
		return Coding{}, missing(expr, "%s is missing: the %s, a code of %s (%s)", expr, what, system, strings.Join(allowed, ", "))
	}
	c := cs[j]
	expr := base + ".coding[" + strconv.Itoa(j) + "]"
	if c.System != "" && c.System != system {
		return Coding{}, badValue(expr+".system", "%s.system must be %s (the %s), found %s", expr, system, what, quote(c.System))
	}
	if !slices.Contains(allowed, c.Code) {
		return Coding{}, badValue(expr+".code", "%s.code %s is not a %s (%s)", expr, quote(c.Code), what, strings.Join(allowed, ", "))
	}
	return c, nil
}

// checkConcepts is checkCoding over the first of a list of CodeableConcepts
// (at base) that has a coding in system, or else the first.
func checkConcepts(cc []Concept, base, system string, allowed []string, what string) (Coding, *Error) {
	i := 0
	for n, c := range cc {
		if slices.ContainsFunc(c.Coding, func(c Coding) bool { return c.System == system }) {
			i = n
			break
		}
	}
	if len(cc) == 0 {
		return Coding{}, missing(base, "%s is missing: the %s, a code of %s (%s)", base, what, system, strings.Join(allowed, ", "))
	}
	return checkCoding(cc[i].Coding, base+"["+strconv.Itoa(i)+"]", system, allowed, what)
}

// hasCoding reports whether one of cc has a coding in system with a code.
func hasCoding(cc []Concept, system string) bool {
	for _, c := range cc {
		for _, cd := range c.Coding {
			if cd.System == system && cd.Code != "" {
				return true
			}
		}
	}
	return false
}
