package fhir

import (
	"strconv"
)

// Electronic repeat dispensing: the issue a lifecycle message is about.
//
// A return or withdraw Task, a dispense notification and a claim name the
// issue of a repeat dispensing prescription they are about ("eRD 2 of 6")
// with Extension-EPS-RepeatInformation. The FHIR messages count issues as
// the EPS FHIR facade reads them (its translation to Spine adds one where
// the FHIR message counts from 0):
//
//   - a return (translation/request/return/return.ts): Task.extension,
//     numberOfRepeatsIssued counted from 0;
//   - a withdraw (translation/request/withdraw/withdraw.ts
//     createPertinentInformation1): Task.extension, numberOfRepeatsIssued
//     counted from 0 (it adds 1, as return.ts does; older versions of
//     withdraw.ts sent the number as it is);
//   - a dispense notification (dispense-notification.ts): the prescription's
//     issue in the basedOn[0] Extension-EPS-RepeatInformation of the
//     MedicationRequest contained in the first MedicationDispense, counted
//     from 0; each line item's in the contained MedicationRequest's
//     Extension-UKCore-MedicationRepeatInformation numberOfPrescriptionsIssued,
//     counted from 1 (so in a consistent message they differ by one). The
//     MedicationDispense's own Extension-EPS-RepeatInformation is not read
//     (the facade only requires it to be the same on every
//     MedicationDispense);
//   - a claim (dispense-claim.ts): Claim.item.extension, or else (the
//     deprecated place) Claim.item.detail[0].extension, counted from 0.
//
// Internally the broker numbers issues 1..N. numberOfRepeatsAllowed only
// repeats the order's and is not read. A message that names no issue is
// about the only issue of an acute or repeat prescription.

// ExtRepeatInformation is the extension of a lifecycle message naming the
// repeat dispensing issue it is about.
const ExtRepeatInformation = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"

// ExtUKCoreRepeatInformation is the UK Core repeat information of a
// MedicationRequest; its part numberOfPrescriptionsIssued is the issue of a
// line item, counted from 1.
const ExtUKCoreRepeatInformation = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-MedicationRepeatInformation"

// Parts of Extension-EPS-RepeatInformation and of the UK Core extension.
const (
	RepeatPartIssued       = "numberOfRepeatsIssued"       // the issue number (counted from 0 or 1, see above)
	RepeatPartAllowed      = "numberOfRepeatsAllowed"      // issues - 1; informational
	RepeatPartPrescriptons = "numberOfPrescriptionsIssued" // UK Core: the issue number, counted from 1
)

// Where an issue number is counted from.
const (
	countFrom0 = 0 // the FHIR messages' numberOfRepeatsIssued (EPS adds 1)
	countFrom1 = 1 // Spine's numbering, as the broker keeps it
)

// repeatIssue reads the first extension with the given url (an
// Extension-EPS-RepeatInformation, or the UK Core one with part) among
// exts, the extension element at base (e.g. "Task.extension"): the issue
// number its part names, counted from from, returned counted from 1. found
// is false when there is no such extension or it has no such part.
func repeatIssue(exts []extension, base, url, part string, from int) (n int, found bool, err *Error) {
	k := findExtensionIndex(exts, url)
	if k < 0 {
		return 0, false, nil
	}
	parts := exts[k].Extension
	j := findExtensionIndex(parts, part)
	if j < 0 {
		return 0, false, nil
	}
	at := base + "[" + strconv.Itoa(k) + "].extension[" + strconv.Itoa(j) + "]"
	n, _, err = issueNumber(parts[j].ValueInt, at, from)
	return n, err == nil, err
}

// issueNumber checks the value v of the part at part: a whole number (an
// integer, or a string of digits, as EPS reads it) naming an issue counted
// from from. It returns the issue counted from 1 and the FHIRPath of the
// value.
func issueNumber(v rawValue, part string, from int) (int, string, *Error) {
	lo, hi := from, MaxRepeatIssues-1+from
	if len(v.b) == 0 || v.b[0] == 'n' { // absent, or null
		expr := part + ".valueInteger"
		return 0, expr, missing(expr, "%s is missing: it names the issue of a repeat dispensing prescription, a whole number from %d to %d",
			expr, lo, hi)
	}
	expr := part + "." + v.key
	raw := v.b
	if raw[0] == '"' && len(raw) >= 2 && raw[len(raw)-1] == '"' {
		raw = raw[1 : len(raw)-1]
	} else if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, expr, Invalid(CodeInvalidValue, "structure", expr, "%s must be a whole number (the issue, %d to %d), found %s",
			expr, lo, hi, jsonKind(v.b))
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return 0, expr, badValue(expr, "%s %s is not a whole number: it must name the issue, %d to %d", expr, quote(string(v.b)), lo, hi)
	}
	if n < lo || n > hi {
		return 0, expr, badValue(expr, "%s %d names no issue: a repeat dispensing prescription has at most %d issues, counted here from %d (%d to %d)",
			expr, n, MaxRepeatIssues, from, lo, hi)
	}
	return n + 1 - from, expr, nil
}

// Repeat dispensing limits.
const (
	// MaxRepeatIssues is Spine's MAX_PRESCRIPTIONREPEATS: the issues of one
	// repeat dispensing prescription (eps-spine-shared validation/constants.py).
	MaxRepeatIssues = 99
	// MaxSupplyDays is Spine's MAX_DAYSSUPPLY: the days supply of one issue.
	MaxSupplyDays = 366
	// MaxFutureSupplyMonths is Spine's MAX_FUTURESUPPLYMONTHS: how far
	// ahead a repeat dispensing validity period may end.
	MaxFutureSupplyMonths = 12
)
