package fhir

import (
	"encoding/json"
	"errors"
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

	ExtTaskBusinessStatus   = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	ExtNonDispensingReason  = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason"
	ExtGroupIdentifier      = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-GroupIdentifier"
	ExtClaimLineItemRef     = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference"
	ODSNHSBSA               = "T1450" // NHS Business Services Authority: the insurer of every claim
	TaskKindReturn          = "return"
	TaskKindWithdraw        = "withdraw"
	ReleaseStatusAccepted   = "accepted"
	MessageReasonCancel     = "cancel"
	extGroupIDShortForm     = "shortForm"
	extGroupIDUUID          = "UUID"
	paramOwner              = "owner"
	paramStatus             = "status"
	paramGroupIdentifier    = "group-identifier"
	paramAgent              = "agent"
	withdrawTaskCode        = "abort"
	returnTaskCode          = "fulfill"
	taskStatusReturn        = "rejected"
	taskStatusWithdraw      = "in-progress"
	cancelledStatus         = "cancelled"
	whereMedicationDispense = "Bundle.entry.resource.ofType(MedicationDispense)"
	whereMedicationRequest  = "Bundle.entry.resource.ofType(MedicationRequest)"
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
	Owner          string // dispenser ODS code: Task.owner identifier, or the contained Organization's
	FocusID        string // focus.identifier.value: for a withdraw, the dispense notification's Bundle.identifier
	Reason         string // statusReason code: ReturnReasons or WithdrawReasons
	ReasonDisplay  string
	// Issue is the repeat dispensing issue returned or withdrawn (Task
	// Extension-EPS-RepeatInformation numberOfRepeatsIssued, 1 to
	// MaxRepeatIssues); 0 when the Task names none.
	Issue int
}

// DispenseNotification is a $process-message dispense-notification.
type DispenseNotification struct {
	BundleID            string
	ReplacementOf       string // MessageHeader replacementOf extension: the notification it amends
	Sender              string // MessageHeader.sender ODS (the dispenser)
	PrescriptionID      string // the MedicationDispenses' authorizingPrescription groupIdentifier (short form)
	NHSNumber           string // MedicationDispense.subject identifier (nhs-number)
	PrescriptionStatus  string // Extension-EPS-TaskBusinessStatus: 0003, 0006 or 0007
	Items               []DispensedItem
	NonDispensingReason string // Extension-DM-PrescriptionNonDispensingReason code, if present
	// Issue is the repeat dispensing issue dispensed: the
	// Extension-EPS-RepeatInformation numberOfRepeatsIssued (1 to
	// MaxRepeatIssues) of the MedicationDispenses and their contained
	// MedicationRequests (its extension or basedOn), the same wherever
	// stated; 0 when none names one.
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
	Provider           string // the dispenser's ODS (provider, or else payee.party, organisation)
	ReplacementOf      string // a claim amendment: the claim it replaces (Extension-replacementOf), if present
	PrescriptionStatus string // item Extension-EPS-TaskBusinessStatus: 0006 or 0007
	Items              []ClaimItem
	// Issue is the repeat dispensing issue claimed: the
	// Extension-EPS-RepeatInformation numberOfRepeatsIssued (1 to
	// MaxRepeatIssues) of Claim.item, item.detail and item.detail.subDetail,
	// the same wherever stated; 0 when none names one.
	Issue int
}

// ClaimItem is one line item claimed (Claim.item.detail): its id and the
// status the dispenser gives it (detail.modifier, medicationdispense-type).
type ClaimItem struct{ LineItemID, Status string }

// ---------------------------------------------------------------------------
// Release

// DecodeReleaseRequest decodes and validates a Task/$release Parameters
// body. The checks, in order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Parameters                       MISSING_VALUE required, INVALID_VALUE value
//	parameter present, each named, no name twice  MISSING_VALUE required, INVALID_VALUE invalid
//	status parameter, valueCode accepted          MISSING_VALUE required, INVALID_VALUE value
//	owner parameter: an Organization (or an
//	  identifier) with a valid ODS code           MISSING_VALUE required, INVALID_VALUE value
//	group-identifier (when present): system
//	  prescription-order-number, a short ID       MISSING_VALUE required, INVALID_VALUE value
//	  with a right check character                INVALID_CHECKSUM processing
//	agent (when present): a PractitionerRole      INVALID_VALUE value
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
// must be root: it checks the body, reads resourceType, refuses a member
// given twice, and hands each member named in members to read, in order.
func readBody(body []byte, root string, members []string, read func(r *reader, key string)) *Error {
	if err := checkBody(body, root); err != nil {
		return err
	}
	var resourceType string
	var rtErr *Error
	seen := map[string]bool{}
	r := newReader(body, root)
	r.object(func(key []byte) {
		k := string(key)
		switch {
		case k == "resourceType":
			rtErr = r.capture(func() { r.member(seen, k); resourceType = r.str() })
		case slices.Contains(members, k):
			r.member(seen, k)
			read(&r, k)
		}
	})
	return firstError(rtErr, requireCode(resourceType, root+".resourceType", root), r.err)
}

func decodeRelease(body []byte) (*ReleaseRequest, *Error) {
	const root = "Parameters"
	var params []parameter
	if err := readBody(body, root, []string{"parameter"}, func(r *reader, _ string) {
		params = r.parameters(root + ".parameter")
	}); err != nil {
		return nil, err
	}
	if len(params) == 0 {
		return nil, missing(root+".parameter", "%s.parameter is missing or empty: a release names at least its owner and status", root)
	}
	index := map[string]int{}
	for i, p := range params {
		expr := paramPath(i, "")
		if p.Name == "" {
			return nil, missing(expr+".name", "%s.name is missing", expr)
		}
		if first, dup := index[p.Name]; dup {
			return nil, inconsistent(expr, "%s is a second %s parameter (the first is Parameters.parameter[%d])", expr, quote(p.Name), first)
		}
		index[p.Name] = i
	}
	find := func(name string) (int, *parameter) {
		if i, ok := index[name]; ok {
			return i, &params[i]
		}
		return -1, nil
	}
	rr := &ReleaseRequest{}

	i, p := find(paramStatus)
	if p == nil {
		return nil, missing(paramWhere(paramStatus), "the status parameter is missing: it must be %q", ReleaseStatusAccepted)
	}
	if err := requireCode(p.ValueCode, paramPath(i, "valueCode"), ReleaseStatusAccepted); err != nil {
		return nil, err
	}

	i, p = find(paramOwner)
	if p == nil {
		return nil, missing(paramWhere(paramOwner), "the owner parameter is missing: it names the releasing dispenser (an Organization with an ODS code)")
	}
	owner, err := paramODS(i, p)
	if err != nil {
		return nil, err
	}
	rr.Owner = owner

	if i, p = find(paramGroupIdentifier); p != nil {
		if p.ValueIdentifier == nil {
			expr := paramPath(i, "valueIdentifier")
			return nil, missing(expr, "%s is missing: the group-identifier parameter holds the short-form prescription ID", expr)
		}
		if err := checkShortID(*p.ValueIdentifier, paramPath(i, "valueIdentifier")); err != nil {
			return nil, err
		}
		rr.PrescriptionID = p.ValueIdentifier.Value
	}

	if i, p = find(paramAgent); p != nil && p.Resource.b != nil {
		if p.Resource.typ != "PractitionerRole" {
			expr := paramPath(i, "resource.resourceType")
			return nil, badValue(expr, "%s must be PractitionerRole, found %s", expr, quote(p.Resource.typ))
		}
		var role practitionerRole
		if err := readRaw(&p.Resource, func(r *reader) { r.practitionerRole(&role) }); err != nil {
			return nil, err
		}
		if j := findIdentifier(role.Identifier, SystemSDSRoleProfileID); j >= 0 {
			rr.AgentRoleID = role.Identifier[j].Value
		}
		if id := role.Practitioner.Identifier; id.System == SystemSDSUserID {
			rr.AgentUserID = id.Value
		}
	}
	return rr, nil
}

// paramODS reads the ODS code of the owner parameter p, at index i: its
// Organization resource's, or its valueIdentifier.
func paramODS(i int, p *parameter) (string, *Error) {
	switch {
	case p.Resource.b != nil:
		if p.Resource.typ != "Organization" {
			expr := paramPath(i, "resource.resourceType")
			return "", badValue(expr, "%s must be Organization, found %s", expr, quote(p.Resource.typ))
		}
		f, err := containedODS(&p.Resource)
		if err != nil {
			return "", err
		}
		return f.v, requireODS(f.v, pathOf(f.expr))
	case p.ValueIdentifier != nil:
		id := p.ValueIdentifier
		if id.System != "" && id.System != SystemODSCode {
			expr := paramPath(i, "valueIdentifier.system")
			return "", badValue(expr, "%s must be %s, found %s", expr, SystemODSCode, quote(id.System))
		}
		return id.Value, requireODS(id.Value, pathOf(paramPath(i, "valueIdentifier.value")))
	}
	expr := paramPath(i, "resource")
	return "", missing(expr, "%s is missing: the owner parameter holds the dispensing Organization", expr)
}

func paramPath(i int, field string) string {
	p := "Parameters.parameter[" + strconv.Itoa(i) + "]"
	if field != "" {
		p += "." + field
	}
	return p
}

func paramWhere(name string) string { return "Parameters.parameter.where(name = '" + name + "')" }

// ---------------------------------------------------------------------------
// Return and withdraw

// DecodeTaskRequest decodes and validates the body of POST /Task: a return
// or a withdraw. The checks, in order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Task                             MISSING_VALUE required, INVALID_VALUE value
//	status rejected (return) or in-progress
//	  (withdraw)                                  MISSING_VALUE required, INVALID_VALUE value
//	code fulfill for a return, abort for a
//	  withdraw                                    MISSING_VALUE required, INVALID_VALUE invalid
//	intent order                                  MISSING_VALUE required, INVALID_VALUE value
//	identifier (when present) a UUID              INVALID_VALUE value
//	groupIdentifier: system, short ID, check
//	  character; its long-form extension a UUID   MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//	for (when present) a valid NHS number         INVALID_VALUE value
//	owner: Task.owner, else the requester's or
//	  the contained Organization; a valid ODS     MISSING_VALUE required, INVALID_VALUE value
//	focus.identifier a UUID (withdraw: required)  MISSING_VALUE required, INVALID_VALUE value
//	statusReason: a code of the return or
//	  withdraw reason code system                 MISSING_VALUE required, INVALID_VALUE value
//	Extension-EPS-RepeatInformation (when
//	  present) numberOfRepeatsIssued an integer
//	  1-99, the same in every one                 MISSING_VALUE, INVALID_VALUE structure / value / invalid
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
	GroupIdentifier groupIdentifier
	Focus           reference
	For             reference
	Requester       reference
	Owner           reference
}

func decodeTask(body []byte) (*TaskRequest, *Error) {
	const root = "Task"
	var t task
	if err := readBody(body, root, []string{"extension", "contained", "identifier", "status", "intent", "statusReason", "code", "groupIdentifier", "focus", "for", "requester", "owner"}, func(r *reader, key string) {
		switch key {
		case "extension":
			list(r, &t.Extension, r.extension)
		case "contained":
			t.Contained = r.containedList(root + ".contained")
		case "identifier":
			list(r, &t.Identifier, r.identifier)
		case "status":
			t.Status = r.str()
		case "intent":
			t.Intent = r.str()
		case "statusReason":
			r.concept(&t.StatusReason)
		case "code":
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
		}
	}); err != nil {
		return nil, err
	}
	tr := &TaskRequest{}

	// The kind: status and code together.
	var wantCode, reasonSystem string
	var reasons []string
	switch t.Status {
	case taskStatusReturn:
		tr.Kind, wantCode, reasonSystem, reasons = TaskKindReturn, returnTaskCode, SystemReturnReason, ReturnReasons
	case taskStatusWithdraw:
		tr.Kind, wantCode, reasonSystem, reasons = TaskKindWithdraw, withdrawTaskCode, SystemWithdrawReason, WithdrawReasons
	case "":
		return nil, missing("Task.status", "Task.status is missing: it must be rejected (a return) or in-progress (a withdraw)")
	default:
		return nil, badValue("Task.status", "Task.status %s is neither rejected (a return) nor in-progress (a withdraw)", quote(t.Status))
	}
	j := pickCoding(t.Code.Coding, SystemTaskCode)
	if j < 0 || t.Code.Coding[j].Code == "" {
		return nil, missing("Task.code.coding", "Task.code is missing: a %s (Task.status %s) has code %s", tr.Kind, t.Status, wantCode)
	}
	if c := t.Code.Coding[j]; c.Code != wantCode {
		expr := "Task.code.coding[" + strconv.Itoa(j) + "].code"
		return nil, inconsistent(expr, "%s %s does not go with Task.status %s: a return is status rejected with code fulfill, a withdraw status in-progress with code abort",
			expr, quote(c.Code), quote(t.Status))
	}
	if err := requireCode(t.Intent, "Task.intent", "order"); err != nil {
		return nil, err
	}

	if len(t.Identifier) > 0 && t.Identifier[0].Value != "" {
		if err := requireUUID(t.Identifier[0].Value, pathOf("Task.identifier[0].value")); err != nil {
			return nil, err
		}
		tr.ID = t.Identifier[0].Value
	}

	gi := &t.GroupIdentifier
	if err := checkShortID(gi.identifier, "Task.groupIdentifier"); err != nil {
		return nil, err
	}
	tr.PrescriptionID = gi.Value
	if k := slices.IndexFunc(gi.Extension, func(e extension) bool { return e.URL == ExtPrescriptionLongID }); k >= 0 {
		e := &gi.Extension[k]
		expr := "Task.groupIdentifier.extension[" + strconv.Itoa(k) + "].valueIdentifier.value"
		if e.ValueIdentifier == nil {
			return nil, missing(expr, "%s is missing: it must be the long-form prescription ID (a UUID)", expr)
		}
		if err := requireUUID(e.ValueIdentifier.Value, pathOf(expr)); err != nil {
			return nil, err
		}
		tr.LongID = e.ValueIdentifier.Value
	}

	if id := t.For.Identifier; id.Value != "" || id.System != "" {
		if id.System != SystemNHSNumber {
			return nil, badValue("Task.for.identifier.system", "Task.for.identifier.system must be %s, found %s", SystemNHSNumber, quote(id.System))
		}
		if err := requireNHSNumber(id.Value, pathOf("Task.for.identifier.value")); err != nil {
			return nil, err
		}
		tr.NHSNumber = id.Value
	}

	owner, err := dispenserODS(t.Contained, "Task", refAt("Task.owner", t.Owner), refAt("Task.requester", t.Requester))
	if err != nil {
		return nil, err
	}
	tr.Owner = owner

	tr.FocusID = t.Focus.Identifier.Value
	if tr.Kind == TaskKindWithdraw {
		if err := requireUUID(tr.FocusID, pathOf("Task.focus.identifier.value")); err != nil {
			err.Diagnostics += " (a withdraw names the dispense notification it withdraws by its Bundle.identifier)"
			return nil, err
		}
	}

	c, err := checkCoding(t.StatusReason.Coding, "Task.statusReason", reasonSystem, reasons, tr.Kind+" reason")
	if err != nil {
		return nil, err
	}
	tr.Reason, tr.ReasonDisplay = c.Code, c.Display

	var issue issueSeen
	if err := issue.add(t.Extension, "Task.extension"); err != nil {
		return nil, err
	}
	tr.Issue = issue.n
	return tr, nil
}

// ---------------------------------------------------------------------------
// Dispense notification

// DispenseNotification validates a dispense-notification message (decoded by
// DecodeMessage) and returns what it states. The checks, in order (code,
// FHIR issue type):
//
//	event dispense-notification                   INVALID_VALUE value
//	replacementOf (when present) a UUID           INVALID_VALUE value
//	at least one MedicationDispense               MISSING_VALUE required
//	the same prescriptionNonDispensingReason on
//	  every MedicationDispense (as the NHS EPS
//	  API answers)                                INVALID_VALUE invalid
//	Extension-EPS-TaskBusinessStatus 0003, 0006
//	  or 0007, the same on every one              MISSING_VALUE, INVALID_VALUE value / invalid
//	subject NHS number valid, the same            MISSING_VALUE, INVALID_VALUE value / invalid
//	authorizingPrescription: a contained
//	  MedicationRequest (or an identifier) with
//	  a line item id (UUID) and a short ID
//	  (check character), the same on every one    MISSING_VALUE, INVALID_VALUE, INVALID_CHECKSUM
//	type a medicationdispense-type code 0001-0005,
//	  the same for MedicationDispenses of one
//	  line item                                   MISSING_VALUE, INVALID_VALUE value / invalid
//	Extension-EPS-RepeatInformation (when
//	  present, on a MedicationDispense or on its
//	  contained MedicationRequest or that one's
//	  basedOn) numberOfRepeatsIssued an integer
//	  1-99, the same in every one                 MISSING_VALUE, INVALID_VALUE structure / value / invalid
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
	Subject                 reference
	AuthorizingPrescription []authorizingPrescription
	Type                    Concept
	Medication              Concept
	Quantity                quantity
	StatusReason            Concept
}

// authorizingPrescription is a MedicationDispense.authorizingPrescription:
// a reference to a contained MedicationRequest, or the line item identifier
// with the prescription's Extension-DM-GroupIdentifier.
type authorizingPrescription struct {
	Reference  string
	Identifier identifier
	Extension  []extension
}

func (r *reader) medicationDispense(md *medicationDispense, k int) {
	r.object(func(key []byte) {
		switch string(key) {
		case "extension":
			list(r, &md.Extension, r.extension)
		case "contained":
			md.Contained = r.containedList(entryPath(k, "contained"))
		case "subject":
			r.reference(&md.Subject)
		case "authorizingPrescription":
			list(r, &md.AuthorizingPrescription, func(a *authorizingPrescription) {
				r.object(func(key []byte) {
					switch string(key) {
					case "reference":
						a.Reference = r.str()
					case "identifier":
						r.identifier(&a.Identifier)
					case "extension":
						list(r, &a.Extension, r.extension)
					}
				})
			})
		case "type":
			r.concept(&md.Type)
		case "medicationCodeableConcept":
			r.concept(&md.Medication)
		case "quantity":
			r.quantity(&md.Quantity)
		case "statusReasonCodeableConcept": // what the tracker shows, not checked: a malformed one is left out
			r.capture(func() { r.concept(&md.StatusReason) })
		}
	})
}

// dispense is a decoded MedicationDispense and its entry index; request is
// the contained MedicationRequest its authorizingPrescription references
// (nil when it names the line item by identifier) and requestExt that one's
// extensions.
type dispense struct {
	k          int
	md         medicationDispense
	request    *rawResource
	requestExt []extension
}

// displayNonDispensingMix is the NHS EPS API's words when the
// MedicationDispenses disagree (3-Process-Response-Dispense-400_Invalid_Value).
const (
	displayNonDispensingMix = "Expected all MedicationDispenses to have the same value for MedicationDispense.extension:prescriptionNonDispensingReason"
	exprNonDispensingReason = "MedicationDispense.extension:prescriptionNonDispensingReason"
)

func (m *Message) dispenseNotification() (*DispenseNotification, *Error) {
	if m.Event != EventDispenseNotification {
		return nil, badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a dispense-notification message holds a dispense notification", quote(m.Event))
	}
	dn := &DispenseNotification{BundleID: m.BundleID, Sender: m.Sender, ReplacementOf: m.ReplacementOf}
	if dn.ReplacementOf != "" {
		if err := requireUUID(dn.ReplacementOf, under("MessageHeader", "extension('"+ExtReplacementOf+"').valueIdentifier.value")); err != nil {
			return nil, err
		}
	}
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

	// The non-dispensing reason, first, as the NHS EPS API checks it.
	for i, d := range mds {
		code := extCode(d.md.Extension, ExtNonDispensingReason)
		if i == 0 {
			dn.NonDispensingReason = code
		} else if code != dn.NonDispensingReason {
			return nil, &Error{Kind: KindInvalid, IssueType: "invalid", Code: CodeInvalidValue,
				Diagnostics: displayNonDispensingMix, Expression: []string{exprNonDispensingReason}}
		}
	}

	// The prescription status.
	for i, d := range mds {
		f, err := extCodeIn(d.md.Extension, ExtTaskBusinessStatus, inEntry(d.k, "").String(), DispensePrescriptionStatuses, "prescription status")
		if err != nil {
			return nil, err
		}
		if i == 0 {
			dn.PrescriptionStatus = f.v
		} else if f.v != dn.PrescriptionStatus {
			return nil, inconsistent(f.expr, "%s %s differs from %s in Bundle.entry[%d]: every MedicationDispense states the same prescription status",
				f.expr, quote(f.v), quote(dn.PrescriptionStatus), mds[0].k)
		}
	}

	// The patient.
	for i, d := range mds {
		id := d.md.Subject.Identifier
		if id.System != "" && id.System != SystemNHSNumber {
			expr := entryPath(d.k, "subject.identifier.system")
			return nil, badValue(expr, "%s must be %s, found %s", expr, SystemNHSNumber, quote(id.System))
		}
		p := inEntry(d.k, "subject.identifier.value")
		if err := requireNHSNumber(id.Value, p); err != nil {
			return nil, err
		}
		if i == 0 {
			dn.NHSNumber = id.Value
		} else if id.Value != dn.NHSNumber {
			return nil, inconsistent(p.String(), "%s %s differs from %s in Bundle.entry[%d]: every MedicationDispense names the same patient",
				p, quote(id.Value), quote(dn.NHSNumber), mds[0].k)
		}
	}

	// The line items.
	dn.Items = make([]DispensedItem, 0, len(mds))
	for i := range mds {
		d := &mds[i]
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
		item := DispensedItem{LineItemID: lineItem, Status: c.Code, QuantityUnit: d.md.Quantity.Unit, Quantity: d.md.Quantity.Value}
		if cs := d.md.Medication.Coding; len(cs) > 0 {
			item.MedicationCode, item.MedicationDisplay = cs[0].Code, cs[0].Display
		}
		if cs := d.md.StatusReason.Coding; len(cs) > 0 {
			item.NonDispensingReason = cs[0].Code
		}
		dn.Items = append(dn.Items, item)
	}

	// The repeat dispensing issue.
	var issue issueSeen
	for i := range mds {
		if err := mds[i].issue(&issue); err != nil {
			return nil, err
		}
	}
	dn.Issue = issue.n
	return dn, nil
}

// issue reads into s the repeat dispensing issue that the MedicationDispense
// names: in its extensions, and in the extensions and basedOn references of
// the contained MedicationRequest it dispenses.
func (d *dispense) issue(s *issueSeen) *Error {
	if err := s.add(d.md.Extension, entryPath(d.k, "extension")); err != nil {
		return err
	}
	c := d.request
	if c == nil {
		return nil
	}
	if err := s.add(d.requestExt, c.root+".extension"); err != nil {
		return err
	}
	var basedOn [][]extension
	if err := readRaw(c, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) != "basedOn" {
				return
			}
			r.array(func(int) {
				var exts []extension
				r.object(func(key []byte) {
					if string(key) == "extension" {
						list(r, &exts, r.extension)
					}
				})
				basedOn = append(basedOn, exts)
			})
		})
	}); err != nil {
		return err
	}
	for i, exts := range basedOn {
		if err := s.add(exts, c.root+".basedOn["+strconv.Itoa(i)+"].extension"); err != nil {
			return err
		}
	}
	return nil
}

// authorizing reads the line item id and the short-form prescription ID of
// the MedicationDispense's authorizingPrescription.
func (d *dispense) authorizing() (lineItem string, rxID found, err *Error) {
	if len(d.md.AuthorizingPrescription) == 0 {
		expr := entryPath(d.k, "authorizingPrescription")
		return "", found{}, missing(expr, "%s is missing: it names the prescription line item dispensed", expr)
	}
	a := &d.md.AuthorizingPrescription[0]
	if a.Reference != "" {
		expr := entryPath(d.k, "authorizingPrescription[0].reference")
		c := findContained(d.md.Contained, a.Reference)
		if c == nil || c.typ != "MedicationRequest" {
			return "", found{}, inconsistent(expr, "%s %s must name a MedicationRequest contained in the MedicationDispense", expr, quote(a.Reference))
		}
		var mr medicationRequest
		if err := readRaw(c, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
			return "", found{}, err
		}
		j := findIdentifier(mr.Identifier, SystemLineItemID)
		if j < 0 {
			expr := c.root + ".identifier"
			return "", found{}, missing(expr, "%s has no identifier with system %s (the line item id)", expr, SystemLineItemID)
		}
		lineItem = mr.Identifier[j].Value
		if err := requireUUID(lineItem, pathOf(c.root+".identifier["+strconv.Itoa(j)+"].value")); err != nil {
			return "", found{}, err
		}
		expr = c.root + ".groupIdentifier"
		if err := checkShortID(mr.GroupIdentifier.identifier, expr); err != nil {
			return "", found{}, err
		}
		d.request, d.requestExt = c, mr.Extension
		return lineItem, found{mr.GroupIdentifier.Value, expr + ".value"}, nil
	}
	// An identifier, with the prescription in an Extension-DM-GroupIdentifier.
	base := entryPath(d.k, "authorizingPrescription[0]")
	if a.Identifier.Value == "" {
		return "", found{}, missing(base+".reference", "%s names no line item: it must reference a contained MedicationRequest", base)
	}
	if a.Identifier.System != SystemLineItemID {
		expr := base + ".identifier.system"
		return "", found{}, badValue(expr, "%s must be %s (the line item id), found %s", expr, SystemLineItemID, quote(a.Identifier.System))
	}
	lineItem = a.Identifier.Value
	if err := requireUUID(lineItem, pathOf(base+".identifier.value")); err != nil {
		return "", found{}, err
	}
	short, _, err := groupIdentifierExt(a.Extension, base)
	if err != nil {
		return "", found{}, err
	}
	return lineItem, short, nil
}

// ---------------------------------------------------------------------------
// Cancellation

// Cancellation validates a prescription-order-update (cancel) message
// (decoded by DecodeMessage) and returns what it asks. The checks, in order
// (code, FHIR issue type):
//
//	event prescription-order-update               INVALID_VALUE value
//	MessageHeader.reason (when present) cancel    INVALID_VALUE value
//	exactly one MedicationRequest                 MISSING_VALUE required, INVALID_VALUE invalid
//	its status cancelled                          MISSING_VALUE required, INVALID_VALUE value
//	its statusReason a cancellation reason
//	  0001-0009                                   MISSING_VALUE required, INVALID_VALUE value
//	its line item id present, a UUID              MISSING_VALUE, INVALID_VALUE value
//	short prescription ID, check character        MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//	long prescription ID a UUID                   MISSING_VALUE, INVALID_VALUE value
//	subject: a Patient (or an identifier) with
//	  a valid NHS number                          MISSING_VALUE, INVALID_VALUE value / invalid
//	ODS codes well formed: performer,
//	  Organizations and their partOf              INVALID_VALUE value
//
// Most NHS example cancellations have no MessageHeader.reason: the event and
// the cancelled MedicationRequest say what the message is.
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
	var reason Concept
	if err := readEntry(m, 0, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) == "reason" {
				r.concept(&reason)
			}
		})
	}); err != nil {
		return nil, err
	}
	if j := pickCoding(reason.Coding, SystemMessageReason); j >= 0 {
		if c := reason.Coding[j]; c.Code != MessageReasonCancel {
			expr := "MessageHeader.reason.coding[" + strconv.Itoa(j) + "].code"
			return nil, badValue(expr, "%s must be cancel in a prescription-order-update, found %s", expr, quote(c.Code))
		}
	}

	k := -1
	for i, e := range m.Entries {
		if e.ResourceType != "MedicationRequest" {
			continue
		}
		if k >= 0 {
			expr := entryPath(i, "")
			return nil, inconsistent(expr, "%s is a second MedicationRequest (the first is Bundle.entry[%d]): a cancellation holds exactly one, the line item cancelled", expr, k)
		}
		k = i
	}
	if k < 0 {
		return nil, missing(whereMedicationRequest, "a cancellation needs the MedicationRequest it cancels; the Bundle has none")
	}
	var mr medicationRequest
	var extra cancelExtras
	if err := readEntry(m, k, func(r *reader) { r.medicationRequest(&mr) }); err != nil {
		return nil, err
	}
	if err := readEntry(m, k, func(r *reader) {
		r.object(func(key []byte) {
			if string(key) == "statusReason" {
				r.concept(&extra.StatusReason)
			}
		})
	}); err != nil {
		return nil, err
	}
	if err := requireCode(mr.Status, entryPath(k, "status"), cancelledStatus); err != nil {
		return nil, err
	}
	rc, err := checkCoding(extra.StatusReason.Coding, entryPath(k, "statusReason"), SystemCancellationReason, CancellationReasons, "cancellation reason")
	if err != nil {
		return nil, err
	}
	c := &Cancellation{BundleID: m.BundleID, Sender: m.Sender, Reason: rc.Code, ReasonDisplay: rc.Display}

	j := findIdentifier(mr.Identifier, SystemLineItemID)
	if j < 0 {
		expr := entryPath(k, "identifier")
		return nil, missing(expr, "%s has no identifier with system %s (the line item id)", expr, SystemLineItemID)
	}
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

	if c.NHSNumber, err = m.subjectNHSNumber(&mr, k); err != nil {
		return nil, err
	}
	if err := optionalODS(mr.DispenseRequest.Performer.Identifier.Value, inEntry(k, "dispenseRequest.performer.identifier.value")); err != nil {
		return nil, err
	}
	for i, e := range m.Entries {
		if e.ResourceType != "Organization" {
			continue
		}
		var org organization
		if err := readEntry(m, i, func(r *reader) { r.organization(&org) }); err != nil {
			return nil, err
		}
		for j, id := range org.Identifier {
			if err := checkODSIdentifier(id, inEntry(i, "identifier").at(j, ".value")); err != nil {
				return nil, err
			}
		}
		if err := checkODSIdentifier(org.PartOf.Identifier, inEntry(i, "partOf.identifier.value")); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// subjectNHSNumber reads the NHS number of the subject of mr, in entry k: an
// nhs-number identifier, or the Patient entry it references.
func (m *Message) subjectNHSNumber(mr *medicationRequest, k int) (string, *Error) {
	if id := mr.Subject.Identifier; id.Value != "" && mr.Subject.Reference == "" {
		if id.System != SystemNHSNumber {
			expr := entryPath(k, "subject.identifier.system")
			return "", badValue(expr, "%s must be %s, found %s", expr, SystemNHSNumber, quote(id.System))
		}
		return id.Value, requireNHSNumber(id.Value, inEntry(k, "subject.identifier.value"))
	}
	expr := entryPath(k, "subject.reference")
	if mr.Subject.Reference == "" {
		return "", missing(expr, "%s is missing: the cancellation must name its Patient", expr)
	}
	refs, err := newRefIndex(m.Entries)
	if err != nil {
		return "", err
	}
	p := refs.resolve([]byte(mr.Subject.Reference), k)
	switch {
	case p < 0:
		return "", inconsistent(expr, "%s %s does not resolve to a resource in the Bundle", expr, quote(mr.Subject.Reference))
	case m.Entries[p].ResourceType != "Patient":
		return "", inconsistent(expr, "%s must reference a Patient, it references a %s", expr, quote(m.Entries[p].ResourceType))
	}
	var pt patient
	if err := readEntry(m, p, func(r *reader) { r.patient(&pt) }); err != nil {
		return "", err
	}
	j := findIdentifier(pt.Identifier, SystemNHSNumber)
	if j < 0 {
		expr := entryPath(p, "identifier")
		return "", missing(expr, "%s has no identifier with system %s (the NHS number)", expr, SystemNHSNumber)
	}
	nhs := pt.Identifier[j].Value
	return nhs, requireNHSNumber(nhs, inEntry(p, "identifier").at(j, ".value"))
}

// ---------------------------------------------------------------------------
// Claim

// DecodeClaim decodes and validates the body of POST /Claim. The checks, in
// order (code, FHIR issue type):
//
//	the body is a JSON object                     INVALID_VALUE structure
//	resourceType Claim                            MISSING_VALUE required, INVALID_VALUE value
//	identifier present, a UUID                    MISSING_VALUE required, INVALID_VALUE value
//	status active                                 MISSING_VALUE required, INVALID_VALUE value
//	insurance present, every one NHSBSA (T1450)   MISSING_VALUE required, INVALID_VALUE value
//	patient a valid NHS number                    MISSING_VALUE required, INVALID_VALUE value
//	provider (or payee.party) organisation a
//	  valid ODS code                              MISSING_VALUE required, INVALID_VALUE value
//	prescription Extension-DM-GroupIdentifier
//	  shortForm: short ID and check character     MISSING_VALUE, INVALID_VALUE value, INVALID_CHECKSUM
//	Extension-replacementOf (when present) a UUID INVALID_VALUE value
//	item present; each with
//	  Extension-EPS-TaskBusinessStatus 0006 or
//	  0007, the same on every item; detail
//	  present; each detail with a line item id
//	  (UUID), a medicationdispense-type modifier
//	  0001-0005 and an endorsement programCode    MISSING_VALUE, INVALID_VALUE value / invalid
//	Extension-EPS-RepeatInformation (when
//	  present, on items, details or subDetails)
//	  numberOfRepeatsIssued an integer 1-99, the
//	  same in every one                           MISSING_VALUE, INVALID_VALUE structure / value / invalid
//	the long-form prescription ID a UUID          MISSING_VALUE, INVALID_VALUE value
//
// The long-form ID comes last so that a claim without endorsements fails
// for them, as the NHS example 2-Claim-Request-400_Missing_Endorsement_Code
// (whose UUID is an unfilled template) was refused.
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
					case "subDetail":
						list(r, &d.SubDetail, func(exts *[]extension) {
							r.object(func(key []byte) {
								if string(key) == "extension" {
									list(r, exts, r.extension)
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
	if err := readBody(body, root, []string{"extension", "contained", "identifier", "status", "patient", "provider", "insurance", "payee", "prescription", "item"}, func(r *reader, key string) {
		switch key {
		case "extension":
			list(r, &cl.Extension, r.extension)
		case "contained":
			cl.Contained = r.containedList(root + ".contained")
		case "identifier":
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
			list(r, &cl.Items, r.claimItem)
		}
	}); err != nil {
		return nil, err
	}
	c := &ClaimRequest{}

	if len(cl.Identifier) == 0 {
		return nil, missing("Claim.identifier", "Claim.identifier is missing: a claim is identified by a UUID")
	}
	c.ID = cl.Identifier[0].Value
	if err := requireUUID(c.ID, pathOf("Claim.identifier[0].value")); err != nil {
		return nil, err
	}
	if err := requireCode(cl.Status, "Claim.status", "active"); err != nil {
		return nil, err
	}

	if len(cl.Insurance) == 0 {
		return nil, missing("Claim.insurance", "Claim.insurance is missing: every claim is made to the NHS Business Services Authority (ODS %s)", ODSNHSBSA)
	}
	for i, cov := range cl.Insurance {
		base := "Claim.insurance[" + strconv.Itoa(i) + "].coverage.identifier"
		if cov.Identifier.System != SystemODSCode {
			return nil, badValue(base+".system", "%s.system must be %s, found %s: the insurer is named by its ODS code", base, SystemODSCode, quote(cov.Identifier.System))
		}
		if cov.Identifier.Value != ODSNHSBSA {
			return nil, badValue(base+".value", "%s.value must be %s (NHS Business Services Authority), found %s", base, ODSNHSBSA, quote(cov.Identifier.Value))
		}
	}

	if id := cl.Patient.Identifier; id.System != SystemNHSNumber {
		return nil, badValue("Claim.patient.identifier.system", "Claim.patient.identifier.system must be %s, found %s", SystemNHSNumber, quote(id.System))
	}
	c.NHSNumber = cl.Patient.Identifier.Value
	if err := requireNHSNumber(c.NHSNumber, pathOf("Claim.patient.identifier.value")); err != nil {
		return nil, err
	}

	provider, err := dispenserODS(cl.Contained, "Claim", refAt("Claim.provider", cl.Provider), refAt("Claim.payee.party", cl.PayeeParty))
	if err != nil {
		return nil, err
	}
	c.Provider = provider

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

// readItems reads the prescription status and the line items of a claim.
func (c *ClaimRequest) readItems(items []claimItem) *Error {
	if len(items) == 0 {
		return missing("Claim.item", "Claim.item is missing: a claim claims at least one item")
	}
	for i, it := range items {
		base := "Claim.item[" + strconv.Itoa(i) + "]"
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
			k := findExtensionIndex(det.Extension, ExtClaimLineItemRef)
			if k < 0 {
				expr := dbase + ".extension('" + ExtClaimLineItemRef + "')"
				return missing(expr, "%s is missing: it names the line item claimed", expr)
			}
			var id identifier
			if e := det.Extension[k]; e.ValueReference != nil {
				id = e.ValueReference.Identifier
			}
			expr := dbase + ".extension[" + strconv.Itoa(k) + "].valueReference.identifier"
			if id.System != SystemLineItemID {
				return badValue(expr+".system", "%s.system must be %s (the line item id), found %s", expr, SystemLineItemID, quote(id.System))
			}
			if err := requireUUID(id.Value, pathOf(expr+".value")); err != nil {
				return err
			}
			status, err := checkConcepts(det.Modifier, dbase+".modifier", SystemDispenseType, DispensedItemStatuses, "line item status")
			if err != nil {
				return err
			}
			if !hasCoding(det.ProgramCode, SystemEndorsement) {
				expr := dbase + ".programCode"
				return missing(expr, "%s has no endorsement (a coding of %s; NDEC when there is none)", expr, SystemEndorsement)
			}
			c.Items = append(c.Items, ClaimItem{LineItemID: id.Value, Status: status.Code})
		}
	}
	return nil
}

// readIssue reads the repeat dispensing issue that the items, their details
// and their subDetails name.
func (c *ClaimRequest) readIssue(items []claimItem) *Error {
	var issue issueSeen
	for i, it := range items {
		base := "Claim.item[" + strconv.Itoa(i) + "]"
		if err := issue.add(it.Extension, base+".extension"); err != nil {
			return err
		}
		for d, det := range it.Detail {
			dbase := base + ".detail[" + strconv.Itoa(d) + "]"
			if err := issue.add(det.Extension, dbase+".extension"); err != nil {
				return err
			}
			for s, exts := range det.SubDetail {
				if err := issue.add(exts, dbase+".subDetail["+strconv.Itoa(s)+"].extension"); err != nil {
					return err
				}
			}
		}
	}
	c.Issue = issue.n
	return nil
}

// ---------------------------------------------------------------------------
// Helpers

// checkBody checks that body, a request whose FHIRPath is root, is valid
// UTF-8 JSON whose top level is an object.
func checkBody(body []byte, root string) *Error {
	if validJSON(body) {
		if v := body[skipSpace(body, 0):]; v[0] != '{' {
			return Invalid(CodeInvalidValue, "structure", root, "the request must be a JSON object (a FHIR %s), found %s", root, jsonKind(v))
		}
		return nil
	}
	if json.Valid(body) {
		return Invalid(CodeInvalidValue, "structure", root, "the request is not valid UTF-8 (at byte offset %d)", invalidUTF8Offset(body))
	}
	var v struct{}
	var se *json.SyntaxError
	if err := json.Unmarshal(body, &v); errors.As(err, &se) {
		return Invalid(CodeInvalidValue, "structure", root, "the request is not valid JSON: %s (at byte offset %d)", se.Error(), se.Offset)
	}
	return Invalid(CodeInvalidValue, "structure", root, "the request is not valid JSON")
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

// member records that the member key of the object at the cursor was read,
// and an error if it was read before (see reader.once).
func (r *reader) member(seen map[string]bool, key string) {
	s := seen[key]
	r.once(&s)
	seen[key] = true
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

// practitionerRole holds what the broker reads of a PractitionerRole.
type practitionerRole struct {
	Identifier   []identifier
	Practitioner reference
	Organization reference
}

func (r *reader) practitionerRole(p *practitionerRole) {
	r.object(func(key []byte) {
		switch string(key) {
		case "identifier":
			list(r, &p.Identifier, r.identifier)
		case "practitioner":
			r.reference(&p.Practitioner)
		case "organization":
			r.reference(&p.Organization)
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
// contained Organization. It must be a valid ODS code.
func dispenserODS(cs []rawResource, root string, refs ...namedRef) (string, *Error) {
	for _, nr := range refs {
		f, err := refODS(nr.ref, nr.expr, cs, true)
		if err != nil {
			return "", err
		}
		if f.expr != "" {
			return f.v, requireODS(f.v, pathOf(f.expr))
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
		if err != nil {
			return "", err
		}
		return f.v, requireODS(f.v, pathOf(f.expr))
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

// checkShortID checks the identifier id, at expr, of a short-form
// prescription ID: its system, its form and its check character.
func checkShortID(id identifier, expr string) *Error {
	switch {
	case id.Value == "":
		return missing(expr+".value", "%s.value is missing: it must be the short-form prescription ID", expr)
	case id.System != SystemPrescriptionID:
		return badValue(expr+".system", "%s.system must be %s, found %s", expr, SystemPrescriptionID, quote(id.System))
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
