package fhirgen

// Electronic repeat dispensing (eRD): orders whose every line item is
// continuous-repeat-dispensing, and lifecycle messages that name the issue
// they are about.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

const (
	systemNHSCourseOfTherapy = "https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy"
	displayRepeatDispensing  = "Continuous long term (repeat dispensing)"
	systemUCUM               = "http://unitsofmeasure.org"
	// extUKCoreRepeatInfo is the order's repeat information; its part
	// authorisationExpiryDate ends the authorisation (the NHS eRD examples
	// give it).
	extUKCoreRepeatInfo = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"
)

// RepeatDispensing turns a generated order (Generated.Body) into an
// electronic repeat dispensing order of repeatsAllowed+1 issues of
// supplyDays days each, starting on start. Every MedicationRequest gets:
//
//   - courseOfTherapyType continuous-repeat-dispensing (system
//     https://fhir.nhs.uk/CodeSystem/medicationrequest-course-of-therapy, as
//     the NHS eRD examples have it);
//   - dispenseRequest.numberOfRepeatsAllowed repeatsAllowed, and
//     expectedSupplyDuration supplyDays (UCUM d);
//   - dispenseRequest.validityPeriod from start's date (in start's location)
//     to the day before its first anniversary (Spine requires both for eRD,
//     the end at most 12 months ahead);
//   - authoredOn start (RFC 3339);
//   - Extension-UKCore-MedicationRepeatInformation with the
//     authorisationExpiryDate one year after start, as in the NHS eRD
//     examples (replacing any the order had);
//   - in any Extension-EPS-RepeatInformation of its basedOn (the NHS repeat
//     prescribing examples have one), numberOfRepeatsAllowed repeatsAllowed.
//
// The identifiers are the order's: a Generated whose Body is the result
// still describes it. The arguments are not checked, so that bad orders can
// be made too (fhir.Message.Order refuses more than 99 issues, a days supply
// over 366 days, a validity period ended or ending more than 12 months ahead
// and Schedule 2 or 3 controlled drugs).
func RepeatDispensing(order []byte, repeatsAllowed, supplyDays int, start time.Time) []byte {
	return Mutate(order, func(b map[string]any) {
		for _, e := range arr(b, "entry") {
			r := resourceOf(e)
			if r["resourceType"] != "MedicationRequest" {
				continue
			}
			r["courseOfTherapyType"] = map[string]any{"coding": []any{map[string]any{
				"system": systemNHSCourseOfTherapy, "code": fhir.TherapyRepeatDispensing, "display": displayRepeatDispensing}}}
			dr := obj(r, "dispenseRequest")
			dr["numberOfRepeatsAllowed"] = repeatsAllowed
			dr["expectedSupplyDuration"] = map[string]any{"value": supplyDays, "unit": "day", "system": systemUCUM, "code": "d"}
			dr["validityPeriod"] = map[string]any{"start": start.Format(time.DateOnly), "end": start.AddDate(1, 0, -1).Format(time.DateOnly)}
			r["authoredOn"] = start.Format(time.RFC3339)
			exts := slices.DeleteFunc(arr(r, "extension"), func(x any) bool { return urlOf(x) == extUKCoreRepeatInfo })
			r["extension"] = append(exts, map[string]any{"url": extUKCoreRepeatInfo, "extension": []any{
				map[string]any{"url": "authorisationExpiryDate", "valueDateTime": start.AddDate(1, 0, 0).Format(time.DateOnly)}}})
			for _, x := range arr(r, "basedOn") {
				bo, _ := x.(map[string]any)
				for _, ext := range arr(bo, "extension") {
					if urlOf(ext) != fhir.ExtRepeatInformation {
						continue
					}
					for _, part := range arr(ext.(map[string]any), "extension") {
						if p := part.(map[string]any); p["url"] == fhir.RepeatPartAllowed {
							delete(p, "valueUnsignedInt")
							p["valueInteger"] = repeatsAllowed
						}
					}
				}
			}
		}
	})
}

// ForIssue makes a lifecycle message made by this package (ReturnTask,
// WithdrawTask, DispenseNotification, Claim, ClaimItems) about issue issue
// (counted from 1, as the broker and Spine count) of a repeat dispensing
// prescription of issues issues, written as dispensing systems write it for
// the EPS FHIR API, which reads each place as its translation does
// (fhir/repeat.go): Extension-EPS-RepeatInformation with
// numberOfRepeatsAllowed issues-1 and numberOfRepeatsIssued (valueInteger),
// replacing any there was:
//
//   - a return or withdraw Task: in Task.extension, numberOfRepeatsIssued
//     issue-1 (return.ts and withdraw.ts add 1);
//   - a dispense notification: in basedOn[0] of the MedicationRequest each
//     MedicationDispense contains (a basedOn naming the line item is added
//     when it has none), numberOfRepeatsIssued issue-1; that
//     MedicationRequest's Extension-UKCore-MedicationRepeatInformation
//     numberOfPrescriptionsIssued issue (from 1); and, as NHS England's
//     regression suite sends it, each MedicationDispense's own extension
//     with numberOfRepeatsIssued issue (EPS does not read it);
//   - a Claim: in item.extension and every item.detail, numberOfRepeatsIssued
//     issue-1 (dispense-claim.ts adds 1); any in a subDetail is removed.
//
// The values are not checked, so that bad messages can be made too. It
// panics on a message that is none of those.
func ForIssue(body []byte, issue, issues int) []byte {
	ri := func(issued int) map[string]any {
		return map[string]any{"url": fhir.ExtRepeatInformation, "extension": []any{
			map[string]any{"url": fhir.RepeatPartAllowed, "valueInteger": json.Number(strconv.Itoa(issues - 1))},
			map[string]any{"url": fhir.RepeatPartIssued, "valueInteger": json.Number(strconv.Itoa(issued))},
		}}
	}
	fromZero, fromOne := ri(issue-1), ri(issue)
	return Mutate(body, func(m map[string]any) {
		switch m["resourceType"] {
		case "Task":
			setRepeatInfo(m, fromZero)
		case "Bundle":
			n := 0
			for _, e := range arr(m, "entry") {
				md := resourceOf(e)
				if md["resourceType"] != "MedicationDispense" {
					continue
				}
				n++
				setRepeatInfo(md, fromOne)
				for _, c := range arr(md, "contained") {
					if mr := c.(map[string]any); mr["resourceType"] == "MedicationRequest" {
						requestForIssue(mr, fromZero, issue)
					}
				}
			}
			if n == 0 {
				panic("fhirgen.ForIssue: the Bundle holds no MedicationDispense: it is not a dispense notification")
			}
		case "Claim":
			for _, x := range arr(m, "item") {
				item := x.(map[string]any)
				setRepeatInfo(item, fromZero)
				for _, y := range arr(item, "detail") {
					d := y.(map[string]any)
					setRepeatInfo(d, fromZero)
					for _, z := range arr(d, "subDetail") {
						dropRepeatInfo(z.(map[string]any))
					}
				}
			}
		default:
			panic(fmt.Sprintf("fhirgen.ForIssue: a %v names no repeat dispensing issue", m["resourceType"]))
		}
	})
}

// requestForIssue sets the repeat information ri in basedOn[0] of the
// MedicationRequest mr contained in a MedicationDispense (adding a basedOn
// naming mr's line item when it has none), removes it from mr's other
// elements, and sets mr's UK Core numberOfPrescriptionsIssued to issue.
func requestForIssue(mr, ri map[string]any, issue int) {
	dropRepeatInfo(mr)
	exts := slices.DeleteFunc(arr(mr, "extension"), func(x any) bool { return urlOf(x) == extUKCoreRepeatInfo })
	mr["extension"] = append(exts, map[string]any{"url": extUKCoreRepeatInfo, "extension": []any{
		map[string]any{"url": fhir.RepeatPartPrescriptons, "valueUnsignedInt": json.Number(strconv.Itoa(issue))}}})
	basedOn := arr(mr, "basedOn")
	if len(basedOn) == 0 {
		ref := map[string]any{}
		for _, x := range arr(mr, "identifier") {
			if id := x.(map[string]any); id["system"] == fhir.SystemLineItemID {
				ref["identifier"] = deepCopy(id)
			}
		}
		basedOn = []any{ref}
		mr["basedOn"] = basedOn
	}
	for i, x := range basedOn {
		if i == 0 {
			setRepeatInfo(x.(map[string]any), ri)
		} else {
			dropRepeatInfo(x.(map[string]any))
		}
	}
}

// setRepeatInfo replaces the Extension-EPS-RepeatInformation among the
// extensions of the element e by (a copy of) ri.
func setRepeatInfo(e, ri map[string]any) {
	dropRepeatInfo(e)
	e["extension"] = append(arr(e, "extension"), deepCopy(ri))
}

// dropRepeatInfo removes every Extension-EPS-RepeatInformation from the
// extensions of the element e.
func dropRepeatInfo(e map[string]any) {
	exts, ok := e["extension"].([]any)
	if !ok {
		return
	}
	if exts = slices.DeleteFunc(exts, func(x any) bool { return urlOf(x) == fhir.ExtRepeatInformation }); len(exts) == 0 {
		delete(e, "extension")
	} else {
		e["extension"] = exts
	}
}

// urlOf is the url of the extension x ("" when x is not an object).
func urlOf(x any) string {
	if e, ok := x.(map[string]any); ok {
		s, _ := e["url"].(string)
		return s
	}
	return ""
}
