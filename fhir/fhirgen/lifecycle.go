package fhirgen

// Lifecycle messages consistent with a generated order: dispense
// notifications, return and withdraw Tasks, claims and cancellations, each
// made by editing an NHS England example message (kept below, unchanged,
// from NHSDigital/electronic-prescription-service-api examples/, commit
// 77e80e11f58013e89c6b4f1c3d767373faa8c29d, MIT and Open Government Licence
// v3, Crown copyright) as generic JSON: fresh UUIDs for the message and its
// resources; the order's short and long prescription IDs, NHS number, line
// item ids, medications and dispense requests; the dispenser or prescriber
// that sends it.

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Code displays the generated messages carry (a code without a display here
// is sent without one).
var (
	itemStatusDisplays = map[string]string{
		"0001": "Item fully dispensed", "0002": "Item not dispensed", "0003": "Item dispensed - partial",
		"0004": "Item not dispensed - owing", "0005": "Item cancelled", "0007": "Item to be dispensed",
		"0008": "Item with dispenser",
	}
	prescriptionStatusDisplays = map[string]string{
		"0001": "To Be Dispensed", "0002": "With Dispenser", "0003": "With Dispenser - Active",
		"0006": "Dispensed", "0007": "Not Dispensed", "0008": "Claimed",
	}
	returnReasonDisplays   = map[string]string{"0003": "Patient requested release"}
	withdrawReasonDisplays = map[string]string{"MU": "Medication Update"}
	cancelReasonDisplays   = map[string]string{
		"0001": "Prescribing Error", "0002": "Clinical contra-indication", "0003": "Change to medication treatment regime",
		"0004": "Clinical grounds", "0005": "At the Patient's request", "0006": "At the Pharmacist's request",
		"0007": "Notification of Death", "0008": "Patient deducted - other reason",
		"0009": "Patient deducted - registered with new practice",
	}
	// dispenseStates is MedicationDispense.status for each line item status.
	dispenseStates = map[string]string{"0001": "completed", "0002": "declined", "0003": "in-progress", "0004": "in-progress", "0005": "cancelled"}
)

const (
	systemRFC4122   = "https://tools.ietf.org/html/rfc4122"
	systemLongID    = "https://fhir.nhs.uk/Id/prescription"
	odsEndpoint     = "https://directory.spineservices.nhs.uk/STU3/Organization/"
	extClaimSeqID   = "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier"
	extDispenseInfo = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation"
)

// DispenseNotification makes a dispense-notification message from the
// dispenser about g's prescription: a MedicationDispense per line item named
// in itemStatus (line item id -> medicationdispense-type 0001..0005), in the
// order of g's line items (ids g does not have come after them, sorted),
// each with a contained MedicationRequest that is the order's (line item id,
// short and long IDs, NHS number, medication, dispense request), and every
// one stating prescriptionStatus (0003, 0006 or 0007). replacementOf, when
// not empty, makes it an amendment of that notification (MessageHeader
// Extension-replacementOf). It returns the message and its
// Bundle.identifier.
func DispenseNotification(g *Generated, dispenser string, itemStatus map[string]string, prescriptionStatus string, replacementOf string) (body []byte, bundleID string) {
	bundleID = uuid.NewString()
	now := timestamp()
	ids := itemOrder(g, itemStatus)
	requests := orderRequests(g)
	body = Mutate([]byte(dispenseNotificationExample), func(b map[string]any) {
		b["id"] = bundleID
		obj(b, "identifier")["value"] = bundleID
		b["timestamp"] = now
		entries := arr(b, "entry")
		header := resourceOf(entries[0])
		var template, orgEntry map[string]any
		for _, e := range entries[1:] {
			switch r := resourceOf(e); r["resourceType"] {
			case "MedicationDispense":
				if template == nil {
					template = r
				}
			case "Organization":
				orgEntry = e.(map[string]any)
			}
		}

		// The dispensing organisation.
		setODS(arr(resourceOf(orgEntry), "identifier"), dispenser)

		// The header.
		obj(obj(header, "sender"), "identifier")["value"] = dispenser
		obj(header, "source")["endpoint"] = odsEndpoint + dispenser
		obj(header, "response")["identifier"] = g.BundleID
		delete(header, "extension")
		if replacementOf != "" {
			header["extension"] = []any{replacementOfExt(replacementOf)}
		}

		// A MedicationDispense per line item.
		out := []any{entries[0]}
		var focus []any
		for i, id := range ids {
			md := deepCopy(template).(map[string]any)
			url := "urn:uuid:" + uuid.NewString()
			focus = append(focus, map[string]any{"reference": url})
			out = append(out, map[string]any{"fullUrl": url, "resource": md})
			src := requestFor(requests, id)
			status := itemStatus[id]

			ref := "m" + strconv.Itoa(i+1)
			for _, c := range arr(md, "contained") {
				mr := c.(map[string]any)
				if mr["resourceType"] != "MedicationRequest" {
					continue
				}
				mr["id"] = ref
				setRequest(mr, g, id, src)
			}
			md["authorizingPrescription"] = []any{map[string]any{"reference": "#" + ref}}
			arr(md, "identifier")[0].(map[string]any)["value"] = uuid.NewString()
			md["extension"] = []any{map[string]any{"url": fhir.ExtTaskBusinessStatus,
				"valueCoding": coding(fhir.SystemTaskBusinessStatus, prescriptionStatus, prescriptionStatusDisplays)}}
			obj(obj(md, "subject"), "identifier")["value"] = g.NHSNumber
			md["type"] = map[string]any{"coding": []any{coding(fhir.SystemDispenseType, status, itemStatusDisplays)}}
			if s, ok := dispenseStates[status]; ok {
				md["status"] = s
			}
			md["whenHandedOver"] = now
			if src != nil {
				if v, ok := src["medicationCodeableConcept"]; ok {
					md["medicationCodeableConcept"] = deepCopy(v)
				}
				if q, ok := obj(src, "dispenseRequest")["quantity"]; ok {
					md["quantity"] = deepCopy(q)
				}
				if v, ok := src["dosageInstruction"]; ok {
					md["dosageInstruction"] = deepCopy(v)
				}
			}
		}
		header["focus"] = focus
		b["entry"] = append(out, orgEntry)
		freshFullURLs(b)
	})
	return body, bundleID
}

// Release makes a Task/$release Parameters from the dispenser owner (the
// owner Organization's ODS code): of prescription shortID
// (group-identifier), or a nominated release when shortID is "". Like the
// NHS example it is made from, it has the status parameter and an agent
// PractitionerRole with telecom whose practitioner is an identifier, as the
// EPS FHIR API requires.
func Release(owner, shortID string) []byte {
	return Mutate([]byte(releaseExample), func(m map[string]any) {
		params := arr(m, "parameter")
		for _, p := range params {
			if pm := p.(map[string]any); pm["name"] == "owner" {
				setODS(arr(obj(pm, "resource"), "identifier"), owner)
			}
		}
		if shortID != "" {
			m["parameter"] = append(params, map[string]any{"name": "group-identifier",
				"valueIdentifier": map[string]any{"system": fhir.SystemPrescriptionID, "value": shortID}})
		}
	})
}

// ReturnTask makes a return (Task status rejected, code fulfill) of g's
// prescription by the dispenser, with a return reason (0001-0008).
func ReturnTask(g *Generated, dispenser, reason string) []byte {
	id := uuid.NewString()
	return Mutate([]byte(returnExample), func(t map[string]any) {
		t["id"] = id
		arr(t, "identifier")[0].(map[string]any)["value"] = id
		setContainedOrg(t, dispenser)
		t["groupIdentifier"] = groupIdentifier(g)
		obj(obj(t, "focus"), "identifier")["value"] = g.BundleID
		obj(obj(t, "for"), "identifier")["value"] = g.NHSNumber
		t["authoredOn"] = timestamp()
		t["statusReason"] = map[string]any{"coding": []any{coding(fhir.SystemReturnReason, reason, returnReasonDisplays)}}
	})
}

// WithdrawTask makes a withdraw (Task status in-progress, code abort) of the
// dispense notification notificationID (its Bundle.identifier) of g's
// prescription by the dispenser, with a withdraw reason (QU, MU, DA, PA, OC,
// ONC).
func WithdrawTask(g *Generated, dispenser, notificationID, reason string) []byte {
	id := uuid.NewString()
	return Mutate([]byte(withdrawExample), func(t map[string]any) {
		t["id"] = id
		arr(t, "identifier")[0].(map[string]any)["value"] = id
		setContainedOrg(t, dispenser)
		obj(obj(t, "owner"), "identifier")["value"] = dispenser
		t["groupIdentifier"] = groupIdentifier(g)
		obj(obj(t, "focus"), "identifier")["value"] = notificationID
		obj(obj(t, "for"), "identifier")["value"] = g.NHSNumber
		t["authoredOn"] = timestamp()
		t["statusReason"] = map[string]any{"coding": []any{coding(fhir.SystemWithdrawReason, reason, withdrawReasonDisplays)}}
	})
}

// Claim makes a claim by the dispenser for g's prescription, Dispensed
// (0006), every line item of g fully dispensed (0001). replacementOf, when
// not empty, makes it an amendment of that claim (Extension-replacementOf).
// It returns the claim and its identifier.
func Claim(g *Generated, dispenser string, replacementOf string) (body []byte, claimID string) {
	return ClaimItems(g, dispenser, replacementOf, nil, "0006")
}

// ClaimItems is Claim with the prescription status it states (0006 or
// 0007) and the status of each line item (line item id ->
// medicationdispense-type; an item of g it does not name is 0001).
func ClaimItems(g *Generated, dispenser, replacementOf string, itemStatus map[string]string, prescriptionStatus string) (body []byte, claimID string) {
	claimID = uuid.NewString()
	requests := orderRequests(g)
	body = Mutate([]byte(claimExample), func(c map[string]any) {
		c["id"] = claimID
		arr(c, "identifier")[0].(map[string]any)["value"] = claimID
		c["created"] = timestamp()
		exts := slices.DeleteFunc(arr(c, "extension"), func(e any) bool {
			return e.(map[string]any)["url"] == fhir.ExtReplacementOf
		})
		if replacementOf != "" {
			exts = append(exts, replacementOfExt(replacementOf))
		}
		c["extension"] = exts
		setContainedOrg(c, dispenser)
		obj(obj(c, "patient"), "identifier")["value"] = g.NHSNumber
		for _, e := range arr(obj(c, "prescription"), "extension") {
			for _, sub := range arr(e.(map[string]any), "extension") {
				s := sub.(map[string]any)
				switch s["url"] {
				case "shortForm":
					obj(s, "valueIdentifier")["value"] = g.ShortID
				case "UUID":
					obj(s, "valueIdentifier")["value"] = g.LongID
				}
			}
		}
		item := arr(c, "item")[0].(map[string]any)
		for _, x := range arr(item, "extension") {
			if e := x.(map[string]any); e["url"] == fhir.ExtTaskBusinessStatus {
				e["valueCoding"] = coding(fhir.SystemTaskBusinessStatus, prescriptionStatus, prescriptionStatusDisplays)
			}
		}
		template := arr(item, "detail")[0]
		details := make([]any, 0, len(g.ItemIDs))
		for i, id := range g.ItemIDs {
			d := deepCopy(template).(map[string]any)
			delete(d, "subDetail") // it names dispense items this claim does not know
			d["sequence"] = json.Number(strconv.Itoa(i + 1))
			for _, x := range arr(d, "extension") {
				e := x.(map[string]any)
				switch e["url"] {
				case extClaimSeqID:
					obj(e, "valueIdentifier")["value"] = uuid.NewString()
				case fhir.ExtClaimLineItemRef:
					obj(obj(e, "valueReference"), "identifier")["value"] = id
				}
			}
			status := "0001"
			if st, ok := itemStatus[id]; ok {
				status = st
			}
			d["modifier"] = []any{map[string]any{"coding": []any{coding(fhir.SystemDispenseType, status, itemStatusDisplays)}}}
			if src := requestFor(requests, id); src != nil {
				if m, ok := src["medicationCodeableConcept"].(map[string]any); ok {
					d["productOrService"] = map[string]any{"coding": deepCopy(m["coding"])}
				}
				if q, ok := obj(src, "dispenseRequest")["quantity"]; ok {
					d["quantity"] = deepCopy(q)
				}
			}
			details = append(details, d)
		}
		item["detail"] = details
	})
	return body, claimID
}

// Cancellation makes a prescription-order-update from g's prescriber
// (MessageHeader.sender g.Sender) cancelling line item lineItemID of g's
// prescription with a cancellation reason (0001-0009): one MedicationRequest,
// status cancelled, otherwise the order's. It returns the message and its
// Bundle.identifier.
func Cancellation(g *Generated, lineItemID, reason string) (body []byte, bundleID string) {
	bundleID = uuid.NewString()
	requests := orderRequests(g)
	body = Mutate([]byte(cancellationExample), func(b map[string]any) {
		b["id"] = bundleID
		obj(b, "identifier")["value"] = bundleID
		entries := arr(b, "entry")
		header := resourceOf(entries[0])
		obj(obj(header, "sender"), "identifier")["value"] = g.Sender
		obj(header, "source")["endpoint"] = odsEndpoint + g.Sender
		if g.Performer == "" {
			delete(header, "destination")
		} else {
			for _, d := range arr(header, "destination") {
				obj(obj(d.(map[string]any), "receiver"), "identifier")["value"] = g.Performer
			}
		}
		for _, e := range entries[1:] {
			r := resourceOf(e)
			switch r["resourceType"] {
			case "MedicationRequest":
				src := requestFor(requests, lineItemID)
				if src != nil {
					for _, k := range []string{"extension", "medicationCodeableConcept", "courseOfTherapyType", "dispenseRequest", "dosageInstruction"} {
						if v, ok := src[k]; ok {
							r[k] = deepCopy(v)
						}
					}
				}
				setLineItem(r, lineItemID)
				r["groupIdentifier"] = groupIdentifier(g)
				r["statusReason"] = map[string]any{"coding": []any{coding(fhir.SystemCancellationReason, reason, cancelReasonDisplays)}}
			case "Patient":
				setNHSNumber(arr(r, "identifier"), g.NHSNumber)
				for _, gp := range arr(r, "generalPractitioner") {
					obj(gp.(map[string]any), "identifier")["value"] = g.Sender
				}
			case "Organization":
				setODS(arr(r, "identifier"), g.Sender)
			}
		}
		freshFullURLs(b)
	})
	return body, bundleID
}

// ---------------------------------------------------------------------------
// Helpers

func timestamp() string { return time.Now().UTC().Format(time.RFC3339) }

// itemOrder lists the line item ids of itemStatus: g's first, in order,
// then any other, sorted.
func itemOrder(g *Generated, itemStatus map[string]string) []string {
	var ids, other []string
	for _, id := range g.ItemIDs {
		if _, ok := itemStatus[id]; ok {
			ids = append(ids, id)
		}
	}
	for id := range itemStatus {
		if !slices.Contains(g.ItemIDs, id) {
			other = append(other, id)
		}
	}
	sort.Strings(other)
	return append(ids, other...)
}

// orderRequests returns the MedicationRequests of g's order, in order.
func orderRequests(g *Generated) []map[string]any {
	var b map[string]any
	d := json.NewDecoder(bytes.NewReader(g.Body))
	d.UseNumber()
	if err := d.Decode(&b); err != nil {
		panic(fmt.Sprintf("fhirgen: the generated order is not JSON: %v", err))
	}
	var out []map[string]any
	for _, e := range arr(b, "entry") {
		if r := resourceOf(e); r["resourceType"] == "MedicationRequest" {
			out = append(out, r)
		}
	}
	return out
}

// requestFor returns the MedicationRequest of line item id, or nil.
func requestFor(requests []map[string]any, id string) map[string]any {
	for _, r := range requests {
		for _, x := range arr(r, "identifier") {
			i := x.(map[string]any)
			if i["system"] == fhir.SystemLineItemID && strings.EqualFold(fmt.Sprint(i["value"]), id) {
				return r
			}
		}
	}
	return nil
}

// setRequest makes the contained MedicationRequest mr of a dispense
// notification the order's line item id: its identifier, prescription IDs,
// patient, and (from src, the order's MedicationRequest, when not nil) its
// medication, course of therapy, dosage and dispense request.
func setRequest(mr map[string]any, g *Generated, id string, src map[string]any) {
	setLineItem(mr, id)
	mr["groupIdentifier"] = groupIdentifier(g)
	obj(obj(mr, "subject"), "identifier")["value"] = g.NHSNumber
	if src == nil {
		return
	}
	for _, k := range []string{"medicationCodeableConcept", "courseOfTherapyType", "dispenseRequest", "dosageInstruction"} {
		if v, ok := src[k]; ok {
			mr[k] = deepCopy(v)
		}
	}
	// The prescription type as the order says, and the dispensing
	// information of a released item.
	exts := []any{}
	for _, e := range arr(src, "extension") {
		if e.(map[string]any)["url"] == fhir.ExtPrescriptionType {
			exts = append(exts, deepCopy(e))
		}
	}
	mr["extension"] = append(exts, map[string]any{"url": extDispenseInfo, "extension": []any{
		map[string]any{"url": "dispenseStatus", "valueCoding": coding(fhir.SystemDispenseType, "0008", itemStatusDisplays)}}})
}

// setLineItem sets the line item id of a MedicationRequest.
func setLineItem(mr map[string]any, id string) {
	for _, x := range arr(mr, "identifier") {
		if i := x.(map[string]any); i["system"] == fhir.SystemLineItemID {
			i["value"] = id
			return
		}
	}
	mr["identifier"] = append(arr(mr, "identifier"), map[string]any{"system": fhir.SystemLineItemID, "value": id})
}

// groupIdentifier is g's prescription as a MedicationRequest or Task
// groupIdentifier: the short-form ID with the long-form one in its
// extension.
func groupIdentifier(g *Generated) map[string]any {
	return map[string]any{
		"system": fhir.SystemPrescriptionID,
		"value":  g.ShortID,
		"extension": []any{map[string]any{
			"url":             fhir.ExtPrescriptionLongID,
			"valueIdentifier": map[string]any{"system": systemLongID, "value": g.LongID},
		}},
	}
}

func replacementOfExt(id string) map[string]any {
	return map[string]any{"url": fhir.ExtReplacementOf, "valueIdentifier": map[string]any{"system": systemRFC4122, "value": id}}
}

func coding(system, code string, displays map[string]string) map[string]any {
	c := map[string]any{"system": system, "code": code}
	if d, ok := displays[code]; ok {
		c["display"] = d
	}
	return c
}

// setContainedOrg sets the ODS code of the contained Organizations of r.
func setContainedOrg(r map[string]any, ods string) {
	for _, c := range arr(r, "contained") {
		if cm := c.(map[string]any); cm["resourceType"] == "Organization" {
			setODS(arr(cm, "identifier"), ods)
		}
	}
}

// setODS sets the ODS code among identifiers.
func setODS(ids []any, ods string) {
	for _, x := range ids {
		if i := x.(map[string]any); i["system"] == fhir.SystemODSCode {
			i["value"] = ods
		}
	}
}

// setNHSNumber sets the NHS number among identifiers.
func setNHSNumber(ids []any, nhs string) {
	for _, x := range ids {
		if i := x.(map[string]any); i["system"] == fhir.SystemNHSNumber {
			i["value"] = nhs
		}
	}
}

// freshFullURLs gives every entry of the Bundle b whose fullUrl is a
// urn:uuid a new one, and every reference to it the new fullUrl.
func freshFullURLs(b map[string]any) {
	for _, e := range arr(b, "entry") {
		if old, _ := e.(map[string]any)["fullUrl"].(string); strings.HasPrefix(old, "urn:uuid:") {
			replaceStrings(b, old, "urn:uuid:"+uuid.NewString())
		}
	}
}

// resourceOf is the resource of a Bundle entry.
func resourceOf(entry any) map[string]any {
	return obj(entry.(map[string]any), "resource")
}

// obj returns the object m[key], creating it when absent.
func obj(m map[string]any, key string) map[string]any {
	if v, ok := m[key].(map[string]any); ok {
		return v
	}
	v := map[string]any{}
	m[key] = v
	return v
}

// arr returns the array m[key] (nil when absent).
func arr(m map[string]any, key string) []any {
	v, _ := m[key].([]any)
	return v
}

// deepCopy copies decoded JSON.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		c := make(map[string]any, len(x))
		for k, e := range x {
			c[k] = deepCopy(e)
		}
		return c
	case []any:
		c := make([]any, len(x))
		for i, e := range x {
			c[i] = deepCopy(e)
		}
		return c
	}
	return v
}

// replaceStrings replaces every string value old in decoded JSON v by new.
func replaceStrings(v any, old, new string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && s == old {
				x[k] = new
			} else {
				replaceStrings(e, old, new)
			}
		}
	case []any:
		for i, e := range x {
			if s, ok := e.(string); ok && s == old {
				x[i] = new
			} else {
				replaceStrings(e, old, new)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The NHS England example messages the lifecycle messages are made from
// (examples/ of NHSDigital/electronic-prescription-service-api, commit
// 77e80e11f58013e89c6b4f1c3d767373faa8c29d), unchanged.

// dispenseNotificationExample is spec/dispensing/dispense-notification/acute-primary-example-01-req.json: a dispense notification of four line items (three dispensed, one cancelled) by pharmacy VNE51.
//
//go:embed nhs/dispense-notification.json
var dispenseNotificationExample string

// returnExample is spec/dispensing/return/acute-primary-example-req.json: a return by pharmacy VNE51.
//
//go:embed nhs/return.json
var returnExample string

// withdrawExample is spec/dispensing/withdraw/acute-primary-example-req.json: a withdraw by pharmacy VNE51.
//
//go:embed nhs/withdraw.json
var withdrawExample string

// releaseExample is spec/dispense/Nominated-Pharmacy-Request-Release-200_OK.json: a nominated release by pharmacy VNE51.
//
//go:embed nhs/release.json
var releaseExample string

// claimExample is spec/dispensing/claim/acute-primary-example-req.json: a claim by pharmacy VNE51.
//
//go:embed nhs/claim.json
var claimExample string

// cancellationExample is primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Cancel-200_OK.json: a cancellation of one line item by GP practice A83008.
//
//go:embed nhs/cancellation.json
var cancellationExample string
