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
const dispenseNotificationExample = `{
  "resourceType": "Bundle",
  "id": "b240434e-cb85-40bb-899c-1c61410c93a7",
  "timestamp": "2022-11-27T11:45:00+00:00",
  "identifier": {
    "system": "https://tools.ietf.org/html/rfc4122",
    "value": "b240434e-cb85-40bb-899c-1c61410c93a7"
  },
  "type": "message",
  "entry": [
    {
      "fullUrl": "urn:uuid:e9a71955-53ba-b15a-d4b6-bea99d5017b3",
      "resource": {
        "resourceType": "MessageHeader",
        "eventCoding": {
          "system": "https://fhir.nhs.uk/CodeSystem/message-event",
          "code": "dispense-notification",
          "display": "Dispense Notification"
        },
        "sender": {
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": "VNE51"
          },
          "display": "The Simple Pharmacy"
        },
        "source": {
          "endpoint": "https://directory.spineservices.nhs.uk/STU3/Organization/VNE51"
        },
        "reason": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/message-reason-prescription",
              "code": "notification",
              "display": "Notification"
            }
          ]
        },
        "response": {
          "identifier": "a5d77265-8ba5-4c74-b8ce-ea0dbaafbdb8",
          "code": "ok"
        },
        "focus": [
          {
            "reference": "urn:uuid:4509b70d-d8b8-ea03-1105-64557cb54a29"
          },
          {
            "reference": "urn:uuid:06167339-9337-d030-0366-514a6a46da17"
          },
          {
            "reference": "urn:uuid:6318367c-c343-4a65-95de-69f712edfc39"
          },
          {
            "reference": "urn:uuid:9a0aa5fd-8865-42f5-ad67-6c83d0944ee0"
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:4509b70d-d8b8-ea03-1105-64557cb54a29",
      "resource": {
        "resourceType": "MedicationDispense",
        "contained": [
          {
            "resourceType": "PractitionerRole",
            "id": "performer",
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "741555508105"
              }
            ],
            "code": [
              {
                "coding": [
                  {
                    "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                    "code": "S0030:G0100:R0620"
                  }
                ]
              }
            ],
            "practitioner": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-user-id",
                "value": "7654321"
              },
              "display": "Mr Peter Potion"
            },
            "organization": {
              "reference": "urn:uuid:2bf9f37c-d88b-4f86-ad5f-373c1416e04b"
            },
            "telecom": [
              {
                "system": "phone",
                "use": "work",
                "value": "0532567890"
              }
            ]
          },
          {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "extension": [
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
                "valueCoding": {
                  "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
                  "code": "0101",
                  "display": "Primary Care Prescriber - Medical Prescriber"
                }
              },
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation",
                "extension": [
                  {
                    "url": "dispenseStatus",
                    "valueCoding": {
                      "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                      "code": "0008",
                      "display": "Item with dispenser"
                    }
                  }
                ]
              }
            ],
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                "value": "a54219b8-f741-4c47-b662-e4f8dfa49ab6"
              }
            ],
            "status": "active",
            "intent": "order",
            "category": [
              {
                "coding": [
                  {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "community",
                    "display": "Community"
                  }
                ]
              }
            ],
            "medicationCodeableConcept": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "39732311000001104",
                  "display": "Amoxicillin 250mg capsules"
                }
              ]
            },
            "subject": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": "9449304130"
              },
              "display": "Ms Marisa Stacey Twitchett"
            },
            "requester": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "200102238987"
              }
            },
            "groupIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription-order-number",
              "value": "24F5DA-A83008-7EFE6Z",
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
                  "valueIdentifier": {
                    "system": "https://fhir.nhs.uk/Id/prescription",
                    "value": "20ba5fb5-cb58-462c-923e-22d180b09356"
                  }
                }
              ]
            },
            "courseOfTherapyType": {
              "coding": [
                {
                  "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                  "code": "acute",
                  "display": "Short course (acute) therapy"
                }
              ]
            },
            "dosageInstruction": [
              {
                "text": "2 times a day for 10 days",
                "timing": {
                  "repeat": {
                    "frequency": 2,
                    "period": 1,
                    "periodUnit": "d"
                  }
                },
                "route": {
                  "coding": [
                    {
                      "system": "http://snomed.info/sct",
                      "code": "26643006",
                      "display": "Oral"
                    }
                  ]
                }
              }
            ],
            "dispenseRequest": {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
                  "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
                    "code": "P1"
                  }
                }
              ],
              "validityPeriod": {
                "start": "2022-10-21"
              },
              "quantity": {
                "value": 20,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              },
              "expectedSupplyDuration": {
                "value": 10,
                "unit": "day",
                "system": "http://unitsofmeasure.org",
                "code": "d"
              },
              "performer": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                  "value": "VNE51"
                }
              }
            },
            "substitution": {
              "allowedBoolean": false
            }
          }
        ],
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus",
            "valueCoding": {
              "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status",
              "code": "0003",
              "display": "With Dispenser - Active"
            }
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
            "value": "fd833d33-f128-4fa2-a807-1fc8a7db2658"
          }
        ],
        "status": "completed",
        "medicationCodeableConcept": {
          "coding": [
            {
              "system": "http://snomed.info/sct",
              "code": "39732311000001104",
              "display": "Amoxicillin 250mg capsules"
            }
          ]
        },
        "subject": {
          "type": "Patient",
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": "9449304130"
          },
          "display": "Ms Marisa Stacey Twitchett"
        },
        "performer": [
          {
            "actor": {
              "reference": "#performer"
            }
          }
        ],
        "authorizingPrescription": [
          {
            "reference": "#m1"
          }
        ],
        "type": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
              "code": "0001",
              "display": "Item fully dispensed"
            }
          ]
        },
        "quantity": {
          "value": 20,
          "unit": "tablet",
          "system": "http://snomed.info/sct",
          "code": "732936001"
        },
        "whenHandedOver": "2022-11-27T11:45:00+00:00",
        "dosageInstruction": [
          {
            "text": "20 tablets. One tablet to be taken two times a day",
            "timing": {
              "repeat": {
                "frequency": 2,
                "period": 1,
                "periodUnit": "d"
              }
            },
            "route": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "26643006",
                  "display": "Oral"
                }
              ]
            }
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:06167339-9337-d030-0366-514a6a46da17",
      "resource": {
        "resourceType": "MedicationDispense",
        "contained": [
          {
            "resourceType": "PractitionerRole",
            "id": "performer",
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "741555508105"
              }
            ],
            "code": [
              {
                "coding": [
                  {
                    "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                    "code": "S0030:G0100:R0620"
                  }
                ]
              }
            ],
            "practitioner": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-user-id",
                "value": "7654321"
              },
              "display": "Mr Peter Potion"
            },
            "organization": {
              "reference": "urn:uuid:2bf9f37c-d88b-4f86-ad5f-373c1416e04b"
            },
            "telecom": [
              {
                "system": "phone",
                "use": "work",
                "value": "0532567890"
              }
            ]
          },
          {
            "resourceType": "MedicationRequest",
            "id": "m2",
            "extension": [
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
                "valueCoding": {
                  "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
                  "code": "0101",
                  "display": "Primary Care Prescriber - Medical Prescriber"
                }
              },
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation",
                "extension": [
                  {
                    "url": "dispenseStatus",
                    "valueCoding": {
                      "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                      "code": "0008",
                      "display": "Item with dispenser"
                    }
                  }
                ]
              }
            ],
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                "value": "6989b7bd-8db6-428c-a593-4022e3044c00"
              }
            ],
            "status": "active",
            "intent": "order",
            "category": [
              {
                "coding": [
                  {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "community",
                    "display": "Community"
                  }
                ]
              }
            ],
            "medicationCodeableConcept": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "322341003",
                  "display": "Co-codamol 30mg/500mg tablets"
                }
              ]
            },
            "subject": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": "9449304130"
              },
              "display": "Ms Marisa Stacey Twitchett"
            },
            "requester": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "200102238987"
              }
            },
            "groupIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription-order-number",
              "value": "24F5DA-A83008-7EFE6Z",
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
                  "valueIdentifier": {
                    "system": "https://fhir.nhs.uk/Id/prescription",
                    "value": "20ba5fb5-cb58-462c-923e-22d180b09356"
                  }
                }
              ]
            },
            "courseOfTherapyType": {
              "coding": [
                {
                  "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                  "code": "acute",
                  "display": "Short course (acute) therapy"
                }
              ]
            },
            "dosageInstruction": [
              {
                "text": "2 times a day for 10 days",
                "timing": {
                  "repeat": {
                    "frequency": 2,
                    "period": 1,
                    "periodUnit": "d"
                  }
                },
                "route": {
                  "coding": [
                    {
                      "system": "http://snomed.info/sct",
                      "code": "26643006",
                      "display": "Oral"
                    }
                  ]
                }
              }
            ],
            "dispenseRequest": {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
                  "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
                    "code": "P1"
                  }
                }
              ],
              "validityPeriod": {
                "start": "2022-10-21"
              },
              "quantity": {
                "value": 20,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              },
              "expectedSupplyDuration": {
                "value": 10,
                "unit": "day",
                "system": "http://unitsofmeasure.org",
                "code": "d"
              },
              "performer": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                  "value": "VNE51"
                }
              }
            },
            "substitution": {
              "allowedBoolean": false
            }
          }
        ],
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus",
            "valueCoding": {
              "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status",
              "code": "0003",
              "display": "With Dispenser - Active"
            }
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
            "value": "06167339-9337-d030-0366-514a6a46da17"
          }
        ],
        "status": "completed",
        "medicationCodeableConcept": {
          "coding": [
            {
              "system": "http://snomed.info/sct",
              "code": "322341003",
              "display": "Co-codamol 30mg/500mg tablets"
            }
          ]
        },
        "subject": {
          "type": "Patient",
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": "9449304130"
          },
          "display": "Ms Marisa Stacey Twitchett"
        },
        "performer": [
          {
            "actor": {
              "reference": "#performer"
            }
          }
        ],
        "authorizingPrescription": [
          {
            "reference": "#m2"
          }
        ],
        "type": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
              "code": "0001",
              "display": "Item fully dispensed"
            }
          ]
        },
        "quantity": {
          "value": 20,
          "unit": "tablet",
          "system": "http://snomed.info/sct",
          "code": "732936001"
        },
        "whenHandedOver": "2022-11-27T11:45:00+00:00",
        "dosageInstruction": [
          {
            "text": "20 tablets. One tablet to be taken two times a day",
            "timing": {
              "repeat": {
                "frequency": 2,
                "period": 1,
                "periodUnit": "d"
              }
            },
            "route": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "26643006",
                  "display": "Oral"
                }
              ]
            }
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:6318367c-c343-4a65-95de-69f712edfc39",
      "resource": {
        "resourceType": "MedicationDispense",
        "contained": [
          {
            "resourceType": "PractitionerRole",
            "id": "performer",
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "741555508105"
              }
            ],
            "code": [
              {
                "coding": [
                  {
                    "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                    "code": "S0030:G0100:R0620"
                  }
                ]
              }
            ],
            "practitioner": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-user-id",
                "value": "7654321"
              },
              "display": "Mr Peter Potion"
            },
            "organization": {
              "reference": "urn:uuid:2bf9f37c-d88b-4f86-ad5f-373c1416e04b"
            },
            "telecom": [
              {
                "system": "phone",
                "use": "work",
                "value": "0532567890"
              }
            ]
          },
          {
            "resourceType": "MedicationRequest",
            "id": "m3",
            "extension": [
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
                "valueCoding": {
                  "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
                  "code": "0101",
                  "display": "Primary Care Prescriber - Medical Prescriber"
                }
              },
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation",
                "extension": [
                  {
                    "url": "dispenseStatus",
                    "valueCoding": {
                      "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                      "code": "0008",
                      "display": "Item with dispenser"
                    }
                  }
                ]
              }
            ],
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                "value": "2868554c-5565-4d31-b92a-c5b8dab8b90a"
              }
            ],
            "status": "active",
            "intent": "order",
            "category": [
              {
                "coding": [
                  {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "community",
                    "display": "Community"
                  }
                ]
              }
            ],
            "medicationCodeableConcept": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "321080004",
                  "display": "Pseudoephedrine hydrochloride 60mg tablets"
                }
              ]
            },
            "subject": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": "9449304130"
              },
              "display": "Ms Marisa Stacey Twitchett"
            },
            "requester": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "200102238987"
              }
            },
            "groupIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription-order-number",
              "value": "24F5DA-A83008-7EFE6Z",
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
                  "valueIdentifier": {
                    "system": "https://fhir.nhs.uk/Id/prescription",
                    "value": "20ba5fb5-cb58-462c-923e-22d180b09356"
                  }
                }
              ]
            },
            "courseOfTherapyType": {
              "coding": [
                {
                  "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                  "code": "acute",
                  "display": "Short course (acute) therapy"
                }
              ]
            },
            "dosageInstruction": [
              {
                "text": "3 times a day for 10 days",
                "timing": {
                  "repeat": {
                    "frequency": 3,
                    "period": 1,
                    "periodUnit": "d"
                  }
                },
                "route": {
                  "coding": [
                    {
                      "system": "http://snomed.info/sct",
                      "code": "26643006",
                      "display": "Oral"
                    }
                  ]
                }
              }
            ],
            "dispenseRequest": {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
                  "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
                    "code": "P1"
                  }
                }
              ],
              "validityPeriod": {
                "start": "2022-10-21"
              },
              "quantity": {
                "value": 30,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              },
              "expectedSupplyDuration": {
                "value": 10,
                "unit": "day",
                "system": "http://unitsofmeasure.org",
                "code": "d"
              },
              "performer": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                  "value": "VNE51"
                }
              }
            },
            "substitution": {
              "allowedBoolean": false
            }
          }
        ],
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus",
            "valueCoding": {
              "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status",
              "code": "0003",
              "display": "With Dispenser - Active"
            }
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
            "value": "6318367c-c343-4a65-95de-69f712edfc39"
          }
        ],
        "status": "completed",
        "medicationCodeableConcept": {
          "coding": [
            {
              "system": "http://snomed.info/sct",
              "code": "321080004",
              "display": "Pseudoephedrine hydrochloride 60mg tablets"
            }
          ]
        },
        "subject": {
          "type": "Patient",
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": "9449304130"
          },
          "display": "Ms Marisa Stacey Twitchett"
        },
        "performer": [
          {
            "actor": {
              "reference": "#performer"
            }
          }
        ],
        "authorizingPrescription": [
          {
            "reference": "#m3"
          }
        ],
        "type": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
              "code": "0004",
              "display": "Item fully dispensed"
            }
          ]
        },
        "quantity": {
          "value": 0,
          "unit": "tablet",
          "system": "http://snomed.info/sct",
          "code": "732936001"
        },
        "whenHandedOver": "2022-11-27T11:45:00+00:00",
        "dosageInstruction": [
          {
            "text": "20 tablets. One tablet to be taken two times a day",
            "timing": {
              "repeat": {
                "frequency": 2,
                "period": 1,
                "periodUnit": "d"
              }
            },
            "route": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "26643006",
                  "display": "Oral"
                }
              ]
            }
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:9a0aa5fd-8865-42f5-ad67-6c83d0944ee0",
      "resource": {
        "resourceType": "MedicationDispense",
        "contained": [
          {
            "resourceType": "PractitionerRole",
            "id": "performer",
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "741555508105"
              }
            ],
            "code": [
              {
                "coding": [
                  {
                    "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                    "code": "S0030:G0100:R0620"
                  }
                ]
              }
            ],
            "practitioner": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-user-id",
                "value": "7654321"
              },
              "display": "Mr Peter Potion"
            },
            "organization": {
              "reference": "urn:uuid:2bf9f37c-d88b-4f86-ad5f-373c1416e04b"
            },
            "telecom": [
              {
                "system": "phone",
                "use": "work",
                "value": "0532567890"
              }
            ]
          },
          {
            "resourceType": "MedicationRequest",
            "id": "m4",
            "extension": [
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
                "valueCoding": {
                  "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
                  "code": "0101",
                  "display": "Primary Care Prescriber - Medical Prescriber"
                }
              },
              {
                "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation",
                "extension": [
                  {
                    "url": "dispenseStatus",
                    "valueCoding": {
                      "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                      "code": "0008",
                      "display": "Item with dispenser"
                    }
                  }
                ]
              }
            ],
            "identifier": [
              {
                "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                "value": "5cb17f5a-11ac-4e18-825f-6470467238b3"
              }
            ],
            "status": "completed",
            "intent": "order",
            "category": [
              {
                "coding": [
                  {
                    "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                    "code": "community",
                    "display": "Community"
                  }
                ]
              }
            ],
            "medicationCodeableConcept": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "324252006",
                  "display": "Azithromycin 250mg capsules"
                }
              ]
            },
            "subject": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/nhs-number",
                "value": "9449304130"
              },
              "display": "Ms Marisa Stacey Twitchett"
            },
            "requester": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
                "value": "200102238987"
              }
            },
            "groupIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription-order-number",
              "value": "24F5DA-A83008-7EFE6Z",
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
                  "valueIdentifier": {
                    "system": "https://fhir.nhs.uk/Id/prescription",
                    "value": "20ba5fb5-cb58-462c-923e-22d180b09356"
                  }
                }
              ]
            },
            "courseOfTherapyType": {
              "coding": [
                {
                  "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
                  "code": "acute",
                  "display": "Short course (acute) therapy"
                }
              ]
            },
            "dosageInstruction": [
              {
                "text": "3 times a day for 10 days",
                "timing": {
                  "repeat": {
                    "frequency": 3,
                    "period": 1,
                    "periodUnit": "d"
                  }
                },
                "route": {
                  "coding": [
                    {
                      "system": "http://snomed.info/sct",
                      "code": "26643006",
                      "display": "Oral"
                    }
                  ]
                }
              }
            ],
            "dispenseRequest": {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
                  "valueCoding": {
                    "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
                    "code": "P1"
                  }
                }
              ],
              "validityPeriod": {
                "start": "2022-10-21"
              },
              "quantity": {
                "value": 30,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              },
              "expectedSupplyDuration": {
                "value": 10,
                "unit": "day",
                "system": "http://unitsofmeasure.org",
                "code": "d"
              },
              "performer": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                  "value": "VNE51"
                }
              }
            },
            "substitution": {
              "allowedBoolean": false
            }
          }
        ],
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus",
            "valueCoding": {
              "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status",
              "code": "0003",
              "display": "With Dispenser - Active"
            }
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
            "value": "9a0aa5fd-8865-42f5-ad67-6c83d0944ee0"
          }
        ],
        "status": "completed",
        "medicationCodeableConcept": {
          "coding": [
            {
              "system": "http://snomed.info/sct",
              "code": "324252006",
              "display": "Azithromycin 250mg capsules"
            }
          ]
        },
        "subject": {
          "type": "Patient",
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": "9449304130"
          },
          "display": "Ms Marisa Stacey Twitchett"
        },
        "performer": [
          {
            "actor": {
              "reference": "#performer"
            }
          }
        ],
        "authorizingPrescription": [
          {
            "reference": "#m4"
          }
        ],
        "type": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
              "code": "0005",
              "display": "Item fully dispensed"
            }
          ]
        },
        "quantity": {
          "value": 0,
          "unit": "tablet",
          "system": "http://snomed.info/sct",
          "code": "732936001"
        },
        "whenHandedOver": "2022-11-27T11:45:00+00:00",
        "dosageInstruction": [
          {
            "text": "20 tablets. One tablet to be taken two times a day",
            "timing": {
              "repeat": {
                "frequency": 2,
                "period": 1,
                "periodUnit": "d"
              }
            },
            "route": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "26643006",
                  "display": "Oral"
                }
              ]
            }
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:2bf9f37c-d88b-4f86-ad5f-373c1416e04b",
      "resource": {
        "resourceType": "Organization",
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ODS-OrganisationRelationships",
            "extension": [
              {
                "url": "reimbursementAuthority",
                "valueIdentifier": {
                  "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                  "value": "T1450"
                }
              }
            ]
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": "VNE51"
          }
        ],
        "address": [
          {
            "city": "West Yorkshire",
            "use": "work",
            "line": [ "17 Austhorpe Road", "Crossgates", "Leeds" ],
            "postalCode": "LS15 8BA"
          }
        ],
        "active": true,
        "type": [
          {
            "coding": [
              {
                "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
                "code": "182",
                "display": "PHARMACY"
              }
            ]
          }
        ],
        "name": "The Simple Pharmacy",
        "telecom": [
          {
            "system": "phone",
            "use": "work",
            "value": "0113 3180277"
          }
        ]
      }
    }
  ]
}
`

// returnExample is spec/dispensing/return/acute-primary-example-req.json: a return by pharmacy VNE51.
const returnExample = `{
  "resourceType": "Task",
  "id": "ee1b55f8-113c-4725-99a3-25fbad366dd6",
  "contained": [
    {
      "resourceType": "PractitionerRole",
      "id": "requester",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
          "value": "641555508105"
        }
      ],
      "practitioner": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/sds-user-id",
          "value": "7654321"
        },
        "display": "Ms Lottie Maifeld"
      },
      "organization": {
        "reference": "#organization"
      },
      "code": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
              "code": "S0030:G0100:R0620"
            }
          ]
        }
      ],
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "01234567890"
        }
      ]
    },
    {
      "resourceType": "Organization",
      "id": "organization",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/ods-organization-code",
          "value": "VNE51"
        }
      ],
      "address": [
        {
          "city": "West Yorkshire",
          "use": "work",
          "line": [
            "17 Austhorpe Road",
            "Crossgates",
            "Leeds"
          ],
          "postalCode": "LS15 8BA"
        }
      ],
      "active": true,
      "type": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
              "code": "182",
              "display": "PHARMACY"
            }
          ]
        }
      ],
      "name": "The Simple Pharmacy",
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "0113 3180277"
        }
      ]
    }
  ],
  "identifier": [
    {
      "system": "https://tools.ietf.org/html/rfc4122",
      "value": "ee1b55f8-113c-4725-99a3-25fbad366dd6"
    }
  ],
  "status": "rejected",
  "statusReason": {
    "coding": [
      {
        "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-return-status-reason",
        "code": "0003",
        "display": "Patient requested release"
      }
    ]
  },
  "intent": "order",
  "code": {
    "coding": [
      {
        "system": "http://hl7.org/fhir/CodeSystem/task-code",
        "code": "fulfill",
        "display": "Fulfill the focal request"
      }
    ]
  },
  "groupIdentifier": {
    "system": "https://fhir.nhs.uk/Id/prescription-order-number",
    "value": "24F5DA-A83008-7EFE6Z"
  },
  "focus": {
    "identifier": {
      "system": "https://tools.ietf.org/html/rfc4122",
      "value": "a5d77265-8ba5-4c74-b8ce-ea0dbaafbdb8"
    }
  },
  "for": {
    "identifier": {
      "system": "https://fhir.nhs.uk/Id/nhs-number",
      "value": "9449304130"
    }
  },
  "authoredOn": "2022-11-21T14:30:00+00:00",
  "requester": {
    "reference": "#requester"
  },
  "reasonCode": {
    "coding": [
      {
        "system": "http://snomed.info/sct",
        "code": "33633005",
        "display": "Prescription of drug"
      }
    ]
  }
}
`

// withdrawExample is spec/dispensing/withdraw/acute-primary-example-req.json: a withdraw by pharmacy VNE51.
const withdrawExample = `{
  "resourceType": "Task",
  "id": "6a2624a2-321b-470e-91a6-8ae7a065e2f0",
  "contained": [
    {
      "resourceType": "PractitionerRole",
      "id": "requester",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
          "value": "641555508105"
        }
      ],
      "code": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
              "code": "S0030:G0100:R0620"
            }
          ]
        }
      ],
      "practitioner": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/sds-user-id",
          "value": "7654321"
        },
        "display": "Mrs Anna Kanfeld"
      },
      "organization": {
        "reference": "#organisation"
      },
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "01234567890"
        }
      ]
    },
    {
      "resourceType": "Organization",
      "id": "organisation",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/ods-organization-code",
          "value": "VNE51"
        }
      ],
      "address": [
        {
          "city": "West Yorkshire",
          "use": "work",
          "line": [
            "17 Austhorpe Road",
            "Crossgates",
            "Leeds"
          ],
          "postalCode": "LS15 8BA"
        }
      ],
      "active": true,
      "type": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
              "code": "182",
              "display": "PHARMACY"
            }
          ]
        }
      ],
      "name": "The Simple Pharmacy",
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "0113 3180277"
        }
      ]
    }
  ],
  "extension": [
    {
      "url": "https://fhir.nhs.uk/StructureDefinition/Extension-Provenance-agent",
      "valueReference": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/sds-user-id",
          "value": "7654321"
        }
      }
    }
  ],
  "identifier": [
    {
      "system": "https://tools.ietf.org/html/rfc4122",
      "value": "5AC84C11-DB8B-44DA-8FCF-8980B3D13596"
    }
  ],
  "groupIdentifier": {
    "system": "https://fhir.nhs.uk/Id/prescription-order-number",
    "value": "24F5DA-A83008-7EFE6Z"
  },
  "status": "in-progress",
  "statusReason": {
    "coding": [
      {
        "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-dispense-withdraw-reason",
        "code": "MU",
        "display": "Medication Update"
      }
    ]
  },
  "intent": "order",
  "code": {
    "coding": [
      {
        "system": "http://hl7.org/fhir/CodeSystem/task-code",
        "code": "abort",
        "display": "Mark the focal resource as no longer active"
      }
    ]
  },
  "focus": {
    "type": "Bundle",
    "identifier": {
      "system": "https://tools.ietf.org/html/rfc4122",
      "value": "a14d4fc1-82a2-4a82-aae2-50e212e7b907"
    }
  },
  "for": {
    "identifier": {
      "system": "https://fhir.nhs.uk/Id/nhs-number",
      "value": "9449304130"
    }
  },
  "authoredOn": "2022-11-29T11:45:00+00:00",
  "requester": {
    "reference": "#requester"
  },
  "owner": {
    "identifier": {
      "system": "https://fhir.nhs.uk/Id/ods-organization-code",
      "value": "VNE51"
    }
  },
  "reasonCode": {
    "coding": [
      {
        "system": "http://snomed.info/sct",
        "code": "373784005",
        "display": "Dispensing medication"
      }
    ]
  }
}
`

// claimExample is spec/dispensing/claim/acute-primary-example-req.json: a claim by pharmacy VNE51.
const claimExample = `{
  "resourceType": "Claim",
  "id": "a76599c5-bbdd-4581-bb4d-377b348dd1e4",
  "extension": [
    {
      "url": "https://fhir.nhs.uk/StructureDefinition/Extension-Provenance-agent",
      "valueReference": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/sds-user-id",
          "value": "7654321"
        },
        "display": "Mr Peter Potion"
      }
    }
  ],
  "contained": [
    {
      "resourceType": "PractitionerRole",
      "id": "provider",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
          "value": "454567759542"
        }
      ],
      "code": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
              "code": "S0030:G0100:R0620"
            }
          ]
        }
      ],
      "practitioner": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/sds-user-id",
          "value": "7654321"
        },
        "display": "Mr Peter Potion"
      },
      "organization": {
        "reference": "#organisation"
      },
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "01234567890"
        }
      ]
    },
    {
      "resourceType": "Organization",
      "id": "organisation",
      "identifier": [
        {
          "system": "https://fhir.nhs.uk/Id/ods-organization-code",
          "value": "VNE51"
        }
      ],
      "address": [
        {
          "city": "West Yorkshire",
          "use": "work",
          "line": ["17 Austhorpe Road", "Crossgates", "Leeds"],
          "postalCode": "LS15 8BA"
        }
      ],
      "active": true,
      "type": [
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
              "code": "182",
              "display": "PHARMACY"
            }
          ]
        }
      ],
      "name": "The Simple Pharmacy",
      "telecom": [
        {
          "system": "phone",
          "use": "work",
          "value": "0113 3180277"
        }
      ]
    }
  ],
  "created": "2022-11-30T13:30:00.000Z",
  "identifier": [
    {
      "system": "https://tools.ietf.org/html/rfc4122",
      "value": "737dcf8d-fc7a-436d-b692-7d3c4f258083"
    }
  ],
  "status": "active",
  "type": {
    "coding": [
      {
        "system": "http://terminology.hl7.org/CodeSystem/claim-type",
        "code": "pharmacy",
        "display": "Pharmacy"
      }
    ]
  },
  "use": "claim",
  "patient": {
    "identifier": {
      "system": "https://fhir.nhs.uk/Id/nhs-number",
      "value": "9449304130"
    }
  },
  "provider": {
    "reference": "#provider"
  },
  "priority": {
    "coding": [
      {
        "system": "http://terminology.hl7.org/CodeSystem/processpriority",
        "code": "normal"
      }
    ]
  },
  "insurance": [
    {
      "sequence": 1,
      "focal": true,
      "coverage": {
        "identifier": {
          "system": "https://fhir.nhs.uk/Id/ods-organization-code",
          "value": "T1450"
        },
        "display": "NHS BUSINESS SERVICES AUTHORITY"
      }
    }
  ],
  "payee": {
    "type": {
      "coding": [
        {
          "system": "http://terminology.hl7.org/CodeSystem/payeetype",
          "code": "provider",
          "display": "Provider"
        }
      ]
    },
    "party": {
      "reference": "#organisation"
    }
  },
  "prescription": {
    "extension": [
      {
        "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-GroupIdentifier",
        "extension": [
          {
            "url": "shortForm",
            "valueIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription-order-number",
              "value": "24F5DA-A83008-7EFE6Z"
            }
          },
          {
            "url": "UUID",
            "valueIdentifier": {
              "system": "https://fhir.nhs.uk/Id/prescription",
              "value": "20ba5fb5-cb58-462c-923e-22d180b09356"
            }
          }
        ]
      }
    ],
    "display": "A prescription order"
  },
  "item": [
    {
      "extension": [
        {
          "url": "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus",
          "valueCoding": {
            "code": "0006",
            "system": "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status",
            "display": "Dispensed"
          }
        }
      ],
      "sequence": 1,
      "productOrService": {
        "coding": [
          {
            "system": "http://snomed.info/sct",
            "code": "16076005",
            "display": "Prescription"
          }
        ]
      },
      "programCode": [
        {
          "coding": [
            {
              "code": "0001",
              "system": "https://fhir.nhs.uk/CodeSystem/prescription-charge-exemption",
              "display": "Patient has paid appropriate charges"
            }
          ]
        },
        {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/DM-exemption-evidence",
              "code": "no-evidence-seen",
              "display": "No Evidence Seen"
            }
          ]
        }
      ],
      "detail": [
        {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier",
              "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/claim-sequence-identifier",
                "value": "be948cf8-5db1-4c39-8f9b-c7e049d55acb"
              }
            },
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference",
              "valueReference": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                  "value": "a54219b8-f741-4c47-b662-e4f8dfa49ab6"
                }
              }
            }
          ],
          "sequence": 1,
          "productOrService": {
            "coding": [
              {
                "system": "http://snomed.info/sct",
                "code": "39732311000001104",
                "display": "Amoxicillin 250mg capsules"
              }
            ]
          },
          "modifier": [
            {
              "coding": [
                {
                  "code": "0001",
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                  "display": "Item fully dispensed"
                }
              ]
            }
          ],
          "programCode": [
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/DM-prescription-charge",
                  "code": "paid-once",
                  "display": "Paid Once"
                }
              ]
            },
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement",
                  "code": "NDEC",
                  "display": "No Dispenser Endorsement Code"
                }
              ]
            }
          ],
          "quantity": {
            "value": 20,
            "unit": "tablet",
            "system": "http://snomed.info/sct",
            "code": "428673006"
          },
          "subDetail": [
            {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationDispenseReference",
                  "valueReference": {
                    "identifier": {
                      "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
                      "value": "fd833d33-f128-4fa2-a807-1fc8a7db2658"
                    }
                  }
                }
              ],
              "sequence": 1,
              "productOrService": {
                "coding": [
                  {
                    "system": "http://snomed.info/sct",
                    "code": "39732311000001104",
                    "display": "Amoxicillin 250mg capsules"
                  }
                ]
              },
              "quantity": {
                "value": 20,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              }
            }
          ]
        },
        {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier",
              "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/claim-sequence-identifier",
                "value": "b001a051-b597-4c8d-9ea5-7dc2a56861ea"
              }
            },
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference",
              "valueReference": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                  "value": "6989b7bd-8db6-428c-a593-4022e3044c00"
                }
              }
            }
          ],
          "sequence": 2,
          "productOrService": {
            "coding": [
              {
                "system": "http://snomed.info/sct",
                "code": "322341003",
                "display": "Co-codamol 30mg/500mg tablets"
              }
            ]
          },
          "modifier": [
            {
              "coding": [
                {
                  "code": "0001",
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                  "display": "Item fully dispensed"
                }
              ]
            }
          ],
          "programCode": [
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/DM-prescription-charge",
                  "code": "paid-once",
                  "display": "Paid Once"
                }
              ]
            },
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement",
                  "code": "NDEC",
                  "display": "No Dispenser Endorsement Code"
                }
              ]
            }
          ],
          "quantity": {
            "value": 20,
            "unit": "tablet",
            "system": "http://snomed.info/sct",
            "code": "428673006"
          },
          "subDetail": [
            {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationDispenseReference",
                  "valueReference": {
                    "identifier": {
                      "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
                      "value": "06167339-9337-d030-0366-514a6a46da17"
                    }
                  }
                }
              ],
              "sequence": 1,
              "productOrService": {
                "coding": [
                  {
                    "system": "http://snomed.info/sct",
                    "code": "322341003",
                    "display": "Co-codamol 30mg/500mg tablets"
                  }
                ]
              },
              "quantity": {
                "value": 20,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              }
            }
          ]
        },
        {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier",
              "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/claim-sequence-identifier",
                "value": "3131f904-5436-4365-a23d-510d079d5efb"
              }
            },
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference",
              "valueReference": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                  "value": "2868554c-5565-4d31-b92a-c5b8dab8b90a"
                }
              }
            }
          ],
          "sequence": 3,
          "productOrService": {
            "coding": [
              {
                "system": "http://snomed.info/sct",
                "code": "321080004",
                "display": "Pseudoephedrine hydrochloride 60mg tablets"
              }
            ]
          },
          "modifier": [
            {
              "coding": [
                {
                  "code": "0001",
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                  "display": "Item fully dispensed"
                }
              ]
            }
          ],
          "programCode": [
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/DM-prescription-charge",
                  "code": "paid-once",
                  "display": "Paid Once"
                }
              ]
            },
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement",
                  "code": "BB",
                  "display": "Broken Bulk"
                }
              ]
            }
          ],
          "quantity": {
            "value": 30,
            "unit": "tablet",
            "system": "http://snomed.info/sct",
            "code": "428673006"
          },
          "subDetail": [
            {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationDispenseReference",
                  "valueReference": {
                    "identifier": {
                      "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
                      "value": "496f4a02-a845-4f19-934e-ae1a7e12a193"
                    }
                  }
                }
              ],
              "sequence": 1,
              "productOrService": {
                "coding": [
                  {
                    "system": "http://snomed.info/sct",
                    "code": "321080004",
                    "display": "Pseudoephedrine hydrochloride 60mg tablets"
                  }
                ]
              },
              "quantity": {
                "value": 15,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              }
            },
            {
              "extension": [
                {
                  "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationDispenseReference",
                  "valueReference": {
                    "identifier": {
                      "system": "https://fhir.nhs.uk/Id/prescription-dispense-item-number",
                      "value": "95c42b8b-a13d-4227-bce6-f31dad456eda"
                    }
                  }
                }
              ],
              "sequence": 2,
              "productOrService": {
                "coding": [
                  {
                    "system": "http://snomed.info/sct",
                    "code": "381511000001101",
                    "display": "Sudafed Decongestant 60mg tablets (McNeil Products Ltd)"
                  }
                ]
              },
              "quantity": {
                "value": 15,
                "unit": "tablet",
                "system": "http://snomed.info/sct",
                "code": "428673006"
              }
            }
          ]
        },
        {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimSequenceIdentifier",
              "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/claim-sequence-identifier",
                "value": "56d2a705-784c-493b-81b6-25c977383d17"
              }
            },
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-ClaimMedicationRequestReference",
              "valueReference": {
                "identifier": {
                  "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
                  "value": "5cb17f5a-11ac-4e18-825f-6470467238b3"
                }
              }
            }
          ],
          "sequence": 4,
          "productOrService": {
            "coding": [
              {
                "system": "http://snomed.info/sct",
                "code": "324252006",
                "display": "Azithromycin 250mg capsules"
              }
            ]
          },
          "modifier": [
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-type",
                  "code": "0005",
                  "display": "Item cancelled"
                }
              ]
            }
          ],
          "programCode": [
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/DM-prescription-charge",
                  "code": "not-paid",
                  "display": "Not Paid"
                }
              ]
            },
            {
              "coding": [
                {
                  "system": "https://fhir.nhs.uk/CodeSystem/medicationdispense-endorsement",
                  "code": "NDEC",
                  "display": "No Dispenser Endorsement Code"
                }
              ]
            }
          ],
          "quantity": {
            "value": 30,
            "unit": "tablet",
            "system": "http://snomed.info/sct",
            "code": "428673006"
          }
        }
      ]
    }
  ]
}
`

// cancellationExample is primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Cancel-200_OK.json: a cancellation of one line item by GP practice A83008.
const cancellationExample = `{
  "resourceType": "Bundle",
  "id": "0cb82cfa-76c8-4fb2-a08e-bf0e326e5487",
  "identifier": {
    "system": "https://tools.ietf.org/html/rfc4122",
    "value": "22d28bbf-e9ed-4c77-8374-3aaf88596109"
  },
  "type": "message",
  "entry": [
    {
      "fullUrl": "urn:uuid:17773b27-427e-4940-8c16-64cdac715001",
      "resource": {
        "resourceType": "MessageHeader",
        "eventCoding": {
          "system": "https://fhir.nhs.uk/CodeSystem/message-event",
          "code": "prescription-order-update",
          "display": "Prescription Order Update"
        },
        "sender": {
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": "A83008"
          },
          "display": "HALLGARTH SURGERY"
        },
        "source": {
          "endpoint": "https://directory.spineservices.nhs.uk/STU3/Organization/A83008"
        },
        "destination": [
          {
            "endpoint": "https://sandbox.api.service.nhs.uk/fhir-prescribing/$post-message",
            "receiver": {
              "identifier": {
                "system": "https://fhir.nhs.uk/Id/ods-organization-code",
                "value": "FCG71"
              }
            }
          }
        ],
        "focus": [
          {
            "reference": "urn:uuid:56166769-c1c4-4d07-afa8-132b5dfca666"
          },
          {
            "reference": "urn:uuid:a54219b8-f741-4c47-b662-e4f8dfa49ab6"
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:a54219b8-f741-4c47-b662-e4f8dfa49ab6",
      "resource": {
        "resourceType": "MedicationRequest",
        "extension": [
          {
            "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionType",
            "valueCoding": {
              "system": "https://fhir.nhs.uk/CodeSystem/prescription-type",
              "code": "0101",
              "display": "Primary Care Prescriber - Medical Prescriber"
            }
          }
        ],
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/prescription-order-item-number",
            "value": "299c610b-f4f1-4eac-a7d7-4fb6b0556e11"
          }
        ],
        "status": "cancelled",
        "statusReason": {
          "coding": [
            {
              "system": "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason",
              "code": "0001",
              "display": "Prescribing Error"
            }
          ]
        },
        "intent": "order",
        "category": [
          {
            "coding": [
              {
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                "code": "community",
                "display": "Community"
              }
            ]
          }
        ],
        "medicationCodeableConcept": {
          "coding": [
            {
              "system": "http://snomed.info/sct",
              "code": "322237000",
              "display": "Paracetamol 500mg soluble tablets"
            }
          ]
        },
        "subject": {
          "reference": "urn:uuid:78d3c2eb-009e-4ec8-a358-b042954aa9b2"
        },
        "requester": {
          "reference": "urn:uuid:56166769-c1c4-4d07-afa8-132b5dfca666"
        },
        "groupIdentifier": {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionId",
              "valueIdentifier": {
                "system": "https://fhir.nhs.uk/Id/prescription",
                "value": "942fd768-d9a6-4062-8768-6e2faa486c38"
              }
            }
          ],
          "system": "https://fhir.nhs.uk/Id/prescription-order-number",
          "value": "58E241-A83008-4E2F8R"
        },
        "courseOfTherapyType": {
          "coding": [
            {
              "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-course-of-therapy",
              "code": "acute",
              "display": "Short course (acute) therapy"
            }
          ]
        },
        "dosageInstruction": [
          {
            "text": "4 times a day - Oral",
            "timing": {
              "repeat": {
                "frequency": 4,
                "period": 1,
                "periodUnit": "d"
              }
            },
            "route": {
              "coding": [
                {
                  "system": "http://snomed.info/sct",
                  "code": "26643006",
                  "display": "Oral"
                }
              ]
            }
          }
        ],
        "dispenseRequest": {
          "extension": [
            {
              "url": "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PerformerSiteType",
              "valueCoding": {
                "system": "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference",
                "code": "P1"
              }
            }
          ],
          "validityPeriod": {
            "start": "2021-04-20",
            "end": "2021-05-18T23:59:59Z"
          },
          "expectedSupplyDuration": {
            "value": 30,
            "unit": "day",
            "system": "http://unitsofmeasure.org",
            "code": "d"
          },
          "performer": {
            "identifier": {
              "system": "https://fhir.nhs.uk/Id/ods-organization-code",
              "value": "FCG71"
            }
          },
          "quantity": {
            "value": 100,
            "unit": "tablet",
            "system": "http://snomed.info/sct",
            "code": "428673006"
          }
        },
        "substitution": {
          "allowedBoolean": false
        }
      }
    },
    {
      "fullUrl": "urn:uuid:78d3c2eb-009e-4ec8-a358-b042954aa9b2",
      "resource": {
        "resourceType": "Patient",
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/nhs-number",
            "value": "9990548609"
          }
        ],
        "name": [
          {
            "use": "usual",
            "family": "XXTESTPATIENT-TGNP",
            "given": [
              "DONOTUSE"
            ],
            "prefix": [
              "MR"
            ]
          }
        ],
        "gender": "male",
        "birthDate": "1932-01-06",
        "address": [
          {
            "use": "home",
            "line": [
              "1 Trevelyan Square",
              "Boar Lane",
              "Leeds",
              "West Yorkshire"
            ],
            "postalCode": "LS1 6AE"
          }
        ],
        "generalPractitioner": [
          {
            "identifier": {
              "system": "https://fhir.nhs.uk/Id/ods-organization-code",
              "value": "A83008"
            }
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:56166769-c1c4-4d07-afa8-132b5dfca666",
      "resource": {
        "resourceType": "PractitionerRole",
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/sds-role-profile-id",
            "value": "200102238987"
          }
        ],
        "practitioner": {
          "reference": "urn:uuid:a8c85454-f8cb-498d-9629-78e2cb5fa47a"
        },
        "organization": {
          "reference": "urn:uuid:3b4b03a5-52ba-4ba6-9b82-70350aa109d8"
        },
        "code": [
          {
            "coding": [
              {
                "system": "https://fhir.nhs.uk/CodeSystem/NHSDigital-SDS-JobRoleCode",
                "code": "S8006:G8006:R8006",
                "display": "Medical Secetary Access Role"
              }
            ]
          }
        ],
        "telecom": [
          {
            "system": "phone",
            "value": "01234567890",
            "use": "work"
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:a8c85454-f8cb-498d-9629-78e2cb5fa47a",
      "resource": {
        "resourceType": "Practitioner",
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/sds-user-id",
            "value": "555086718101"
          },
          {
            "system": "https://fhir.hl7.org.uk/Id/professional-code",
            "value": "unknown"
          }
        ],
        "name": [
          {
            "family": "Secetary",
            "given": [
              "Medical"
            ],
            "prefix": [
              "MS"
            ]
          }
        ]
      }
    },
    {
      "fullUrl": "urn:uuid:3b4b03a5-52ba-4ba6-9b82-70350aa109d8",
      "resource": {
        "resourceType": "Organization",
        "identifier": [
          {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": "A83008"
          }
        ],
        "type": [
          {
            "coding": [
              {
                "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
                "code": "76",
                "display": "GP PRACTICE"
              }
            ]
          }
        ],
        "name": "HALLGARTH SURGERY",
        "address": [
          {
            "use": "work",
            "type": "both",
            "line": [
              "HALLGARTH SURGERY",
              "CHEAPSIDE"
            ],
            "city": "SHILDON",
            "district": "COUNTY DURHAM",
            "postalCode": "DL4 2HP"
          }
        ],
        "telecom": [
          {
            "system": "phone",
            "value": "0115 9737320",
            "use": "work"
          }
        ],
        "partOf": {
          "identifier": {
            "system": "https://fhir.nhs.uk/Id/ods-organization-code",
            "value": "84H"
          },
          "display": "NHS COUNTY DURHAM CCG"
        }
      }
    },
    {
      "fullUrl": "urn:uuid:28828c55-8fa7-42d7-916f-fcf076e0c10e",
      "resource": {
        "resourceType": "Provenance",
        "id": "28828c55-8fa7-42d7-916f-fcf076e0c10e",
        "target": [
          {
            "reference": "urn:uuid:a54219b8-f741-4c47-b662-e4f8dfa49ab6"
          }
        ],
        "recorded": "2021-02-11T16:35:38+00:00",
        "agent": [
          {
            "who": {
              "reference": "urn:uuid:56166769-c1c4-4d07-afa8-132b5dfca666"
            }
          }
        ],
        "signature": [
          {
            "type": [
              {
                "system": "urn:iso-astm:E1762-95:2013",
                "code": "1.2.840.10065.1.12.1.1"
              }
            ],
            "when": "2021-04-20T05:45:31+00:00",
            "who": {
              "reference": "urn:uuid:56166769-c1c4-4d07-afa8-132b5dfca666"
            },
            "data": "DQo8U2lnbmF0dXJlIHhtbG5zPSJodHRwOi8vd3d3LnczLm9yZy8yMDAwLzA5L3htbGRzaWcjIj4NCiAgICA8U2lnbmVkSW5mbz48Q2Fub25pY2FsaXphdGlvbk1ldGhvZCBBbGdvcml0aG09Imh0dHA6Ly93d3cudzMub3JnLzIwMDEvMTAveG1sLWV4Yy1jMTRuIyI+PC9DYW5vbmljYWxpemF0aW9uTWV0aG9kPjxTaWduYXR1cmVNZXRob2QgQWxnb3JpdGhtPSJodHRwOi8vd3d3LnczLm9yZy8yMDAwLzA5L3htbGRzaWcjcnNhLXNoYTEiPjwvU2lnbmF0dXJlTWV0aG9kPjxSZWZlcmVuY2U+PFRyYW5zZm9ybXM+PFRyYW5zZm9ybSBBbGdvcml0aG09Imh0dHA6Ly93d3cudzMub3JnLzIwMDEvMTAveG1sLWV4Yy1jMTRuIyI+PC9UcmFuc2Zvcm0+PC9UcmFuc2Zvcm1zPjxEaWdlc3RNZXRob2QgQWxnb3JpdGhtPSJodHRwOi8vd3d3LnczLm9yZy8yMDAwLzA5L3htbGRzaWcjc2hhMSI+PC9EaWdlc3RNZXRob2Q+PERpZ2VzdFZhbHVlPjVWem5UWG9FUmpDamRGQ3NTaUljcHIvNDJDUT08L0RpZ2VzdFZhbHVlPjwvUmVmZXJlbmNlPjwvU2lnbmVkSW5mbz4NCiAgICA8U2lnbmF0dXJlVmFsdWU+ZjFsSHpFSzRMazRNQUR2UVhOSEdhaUVlYkdtM3BXeFl5MzR3dE5kYzZ2Lzd2QnNTdXMvcUhqU3Q3YkFHMVpCa2JidTVsZjRFN2tvbHBCVDBUMFVKK3RUQ1hxaWxleVRRanNEMG9iQ1QwZ0xPYk9uL2VXZk11REQ5MUI3WExvdmVONzlzK3VtVXI5Y0JCTVdlNWIxQnZpWjUyaGVhNlJnU3hXR3NGMVJ0NXFFPTwvU2lnbmF0dXJlVmFsdWU+DQogICAgPEtleUluZm8+DQogICAgICAgIDxYNTA5RGF0YT4NCiAgICAgICAgICAgIDxYNTA5Q2VydGlmaWNhdGU+TUlJRHVEQ0NBcUNnQXdJQkFnSUVYY210SHpBTkJna3Foa2lHOXcwQkFRc0ZBREEyTVF3d0NnWURWUVFLRXdOdWFITXhDekFKQmdOVkJBc1RBa05CTVJrd0Z3WURWUVFERXhCT1NGTWdTVTVVSUV4bGRtVnNJREZFTUI0WERUSXdNVEF5TWpFd01qRTFOVm9YRFRJeU1UQXlNakV3TlRFMU5Wb3dRekVNTUFvR0ExVUVDaE1EYm1oek1ROHdEUVlEVlFRTEV3WlFaVzl3YkdVeElqQWdCZ05WQkFNTUdUVTFOVEkxTXpVeU1URXdPRjlTUVU1RVQwMWZWVk5GVWxFd2daOHdEUVlKS29aSWh2Y05BUUVCQlFBRGdZMEFNSUdKQW9HQkFLdDRzek53N09BSDdBUVJyRGUveEJJbXNNbU1pUzlFc3JUM2EzcC9MaDNicmR6STlhYWpUVVoyYi9jdmJPYTdQZVlkN3UrSzRhMlpkMFhrKzBHRm1ZR3pTVlg2aVlqYmx3cjB2YWkzMXpWN0crbEd2SHhINnBTb0xDd0lDYVpBRndhYmVENU96OTQreUEzYVdOV3RHVjBEZmg5cXdIM1pGQ0lNUnN2ZXJOMXBBZ01CQUFHamdnRkRNSUlCUHpBT0JnTlZIUThCQWY4RUJBTUNCa0F3WlFZRFZSMGdBUUgvQkZzd1dUQlhCZ3NxaGpvQWlYdG1BQU1DQURCSU1FWUdDQ3NHQVFVRkJ3SUJGanBvZEhSd2N6b3ZMM0JyYVM1dWFITXVkV3N2WTJWeWRHbG1hV05oZEdWZmNHOXNhV05wWlhNdlkyOXVkR1Z1ZEY5amIyMXRhWFJ0Wlc1ME1ETUdBMVVkSHdRc01Db3dLS0Ftb0NTR0ltaDBkSEE2THk5amNtd3VibWh6TG5WckwybHVkQzh4WkM5amNteGpNeTVqY213d0t3WURWUjBRQkNRd0lvQVBNakF5TURFd01qSXhNREl4TlRWYWdROHlNREl5TURNeE56RXdOVEUxTlZvd0h3WURWUjBqQkJnd0ZvQVVvSllmZ1lUTlBkNkVVS0w2UUxJekh4WTVQRkl3SFFZRFZSME9CQllFRkx0eXZZU3lhcWc2MEFFVVpneGswd3JqUkpjK01Ba0dBMVVkRXdRQ01BQXdHUVlKS29aSWh2WjlCMEVBQkF3d0Noc0VWamd1TXdNQ0JMQXdEUVlKS29aSWh2Y05BUUVMQlFBRGdnRUJBQmN6eThCOGp1UHBJZmFUTkZjeHJDMjJhQ1gveFlabWhyTC9OdklCQWFYMUc1aGppd21rR0tFMmhSVElyNjdQeFp4bVhzSnhpZ1JCTUhQbEkrbFkvK29rekgwR2k3YjVicWx3N3B4R0lnSk8wMDB3OHBGc3ZvOXc0MklZaEhvZHN2bkRWU3hoTVQwSjQ2UWhrOXNvRTBMam9FVUxLUVBQbFlHa2UvR2wzbTE3SXRGWXdPYlFIMGZNRXdtaXFCeWVJZno3Z1NjY096TDVjSXA2UGNaVE9qbzJJcVFwZ0VtaGpPY1JJbkVxQU5pdFNkam9pSkFKenBhYVpqWVRSZEhVWDdpN2FqRWlING05MW5GVys0QXFrTnR0bGI0V2NHS3NTbVdnZktLaGVGNElvWktNRTgweGVyU2dNeTh2dGpMT0JKQ0dYejB3TEdtUXVSbXhNVHE4OHE0PTwvWDUwOUNlcnRpZmljYXRlPg0KICAgICAgICA8L1g1MDlEYXRhPg0KICAgIDwvS2V5SW5mbz4NCjwvU2lnbmF0dXJlPg0K"
          }
        ]
      }
    }
  ]
}
`
