package fhir

import (
	"slices"
	"strconv"
)

// This file holds the Claim message (DecodeClaim).

// Code systems, identifiers and extensions of the claim.
const (
	SystemEndorsement   = "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement"
	ExtClaimLineItemRef = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference"
	ExtClaimSequenceID  = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier"
	ODSNHSBSA           = "T1450" // NHS Business Services Authority: a claim's insurer (or RQFZ1)
)

// Codes a claim may state.
var (
	// ClaimPrescriptionStatuses are the prescription statuses a claim may
	// state: dispensed, not dispensed.
	ClaimPrescriptionStatuses = []string{"0006", "0007"}
)

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
