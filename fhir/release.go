package fhir

import (
	"bytes"
	"encoding/json"
	"strconv"

	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhs-eps/epsbroker/fhir/internal/ojson"
)

// This file holds the release message: the Task/$release Parameters
// request (DecodeReleaseRequest) and its answer (ReleaseResponse).

// Values of the release request's parameters.
const (
	ReleaseStatusAccepted = "accepted"
	paramOwner            = "owner"
	paramGroupIdentifier  = "group-identifier"
	paramAgent            = "agent"
)

// ReleaseRequest is a Task/$release Parameters body.
type ReleaseRequest struct {
	Owner          string // owner Organization ODS code (parameter "owner", resource Organization identifier ods-organization-code)
	PrescriptionID string // "group-identifier" valueIdentifier value (short form); empty for a nominated release
	AgentUserID    string // agent PractitionerRole -> practitioner identifier (sds-user-id) if present
	AgentRoleID    string // agent PractitionerRole identifier (sds-role-profile-id) if present
}

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

// ReleasedOrder is one prescription handed to a dispenser: its original
// order message, byte for byte, and that message's Bundle.identifier. For
// a repeat dispensing prescription, Issue is the issue released (1..Issues).
type ReleasedOrder struct {
	BundleID string
	Raw      []byte
	Issue    int
	Issues   int
}

// ReleaseResponse is the answer to Task/$release: a Parameters resource
// whose passedPrescriptions is a searchset Bundle of the released
// prescription-order Bundles as they were posted (their bytes are copied
// in, never decoded and encoded again), and whose failedPrescriptions is an
// empty searchset Bundle.
//
// The order's bytes cannot say which issue of a repeat dispensing
// prescription is released. For one, as EPS's release answer says it
// (translation/response/release/release-medication-request.ts:
// createBasedOn, createRepeatInformationExtension), every MedicationRequest
// of the released Bundle gets basedOn[0] Extension-EPS-RepeatInformation
// with numberOfRepeatsIssued the issue counted from 0 (0 for issue 1) and
// numberOfRepeatsAllowed issues - 1, and Extension-UKCore-
// MedicationRepeatInformation numberOfPrescriptionsIssued the issue (from
// 1): that Bundle is the order re-encoded with those elements set (see
// forIssue); its entry also carries the Extension-EPS-RepeatInformation.
func ReleaseResponse(orders []ReleasedOrder) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resourceType":"Parameters","parameter":[{"name":"passedPrescriptions","resource":{"resourceType":"Bundle","type":"searchset","total":`)
	b.WriteString(strconv.Itoa(len(orders)))
	b.WriteString(`,"entry":[`)
	for i, o := range orders {
		if i > 0 {
			b.WriteByte(',')
		}
		url, _ := json.Marshal("urn:uuid:" + o.BundleID)
		b.WriteString(`{"fullUrl":`)
		b.Write(url)
		if o.Issues > 1 && o.Issue > 0 {
			// Counted from 0, as EPS's release answer counts
			// (release-medication-request.ts: Spine's issue - 1).
			ext, _ := json.Marshal([]fm.Extension{repeatInformation(
				repeatPart(RepeatPartIssued, o.Issue-1), repeatPart(RepeatPartAllowed, o.Issues-1))})
			b.WriteString(`,"extension":`)
			b.Write(ext)
		}
		b.WriteString(`,"resource":`)
		raw := bytes.TrimSpace(o.Raw)
		if o.Issues > 1 && o.Issue > 0 {
			if rb, err := forIssue(raw, o.Issue, o.Issues); err == nil {
				raw = rb
			}
		}
		b.Write(raw)
		b.WriteString(`,"search":{"mode":"match"}}`)
	}
	b.WriteString(`]}},{"name":"failedPrescriptions","resource":{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}}]}`)
	return b.Bytes()
}

// forIssue is the order Bundle raw with each MedicationRequest naming issue
// (of issues) as EPS's release answer names it: basedOn[0]
// Extension-EPS-RepeatInformation numberOfRepeatsAllowed issues - 1 and
// numberOfRepeatsIssued issue - 1 (a basedOn is added when there is none;
// the reference it has is kept), and Extension-UKCore-
// MedicationRepeatInformation numberOfPrescriptionsIssued issue (its other
// parts kept). Everything else keeps its place and its text: members stay
// in their order and strings and numbers as written (only insignificant
// white space goes).
func forIssue(raw []byte, issue, issues int) ([]byte, error) {
	bundle, err := ojson.Parse(raw)
	if err != nil {
		return nil, err
	}
	for _, e := range bundle.Get("entry").Items() {
		mr := e.Get("resource")
		if mr.Get("resourceType").Str() != "MedicationRequest" {
			continue
		}
		repeat := ojson.Of(repeatInformation(repeatPart(RepeatPartAllowed, issues-1), repeatPart(RepeatPartIssued, issue-1)))
		basedOn := mr.Get("basedOn")
		if basedOn == nil || basedOn.Kind != '[' {
			basedOn = &ojson.Node{Kind: '['}
			mr.Set("basedOn", basedOn)
		}
		if len(basedOn.Elems) == 0 || basedOn.Elems[0].Kind != '{' {
			basedOn.Elems = append([]*ojson.Node{{Kind: '{'}}, basedOn.Elems...)
		}
		setExtension(basedOn.Elems[0], ExtRepeatInformation, repeat)

		uk := findExtensionNode(mr, ExtUKCoreRepeatInformation)
		if uk == nil {
			uk = ojson.Of(fm.Extension{Url: ExtUKCoreRepeatInformation})
			setExtension(mr, ExtUKCoreRepeatInformation, uk)
		}
		setExtension(uk, RepeatPartPrescriptons, ojson.Of(fm.Extension{Url: RepeatPartPrescriptons, ValueUnsignedInt: &issue}))
	}
	return bundle.Encode(""), nil
}

// repeatInformation is an Extension-EPS-RepeatInformation of the given
// parts (repeatPart), in their order.
func repeatInformation(parts ...fm.Extension) fm.Extension {
	return fm.Extension{Url: ExtRepeatInformation, Extension: parts}
}

// repeatPart is a part of Extension-EPS-RepeatInformation: its url
// (RepeatPartIssued, RepeatPartAllowed) and whole number.
func repeatPart(url string, n int) fm.Extension { return fm.Extension{Url: url, ValueInteger: &n} }

// findExtensionNode is the first extension of n whose url is url, or nil.
func findExtensionNode(n *ojson.Node, url string) *ojson.Node {
	for _, x := range n.Get("extension").Items() {
		if x.Get("url").Str() == url {
			return x
		}
	}
	return nil
}

// setExtension puts ext in n's extension list in place of those whose url
// is url (where the first of them stood), or last when there is none.
func setExtension(n *ojson.Node, url string, ext *ojson.Node) {
	list := n.Get("extension")
	if list == nil || list.Kind != '[' {
		list = &ojson.Node{Kind: '['}
		n.Set("extension", list)
	}
	out := make([]*ojson.Node, 0, len(list.Elems)+1)
	placed := false
	for _, x := range list.Elems {
		if x.Get("url").Str() != url {
			out = append(out, x)
		} else if !placed {
			out, placed = append(out, ext), true
		}
	}
	if !placed {
		out = append(out, ext)
	}
	list.Elems = out
}
