package fhir

import (
	"strconv"
)

// Electronic repeat dispensing: the issue a lifecycle message is about.
//
// A return or withdraw Task, a dispense notification and a claim name the
// issue of a repeat dispensing prescription they are about ("eRD 2 of 6")
// with Extension-EPS-RepeatInformation, whose part numberOfRepeatsIssued is
// the issue number, counted from 1 (as the NHS examples and the NHS
// prescription tracker use it; its part numberOfRepeatsAllowed only repeats
// the order's and is not read). A message that names no issue is about the
// only issue of an acute or repeat prescription.

// ExtRepeatInformation is the extension of a lifecycle message naming the
// repeat dispensing issue it is about.
const ExtRepeatInformation = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"

// Parts of Extension-EPS-RepeatInformation.
const (
	RepeatPartIssued  = "numberOfRepeatsIssued"  // the issue number, 1 to MaxRepeatIssues
	RepeatPartAllowed = "numberOfRepeatsAllowed" // issues - 1; informational
)

// issueSeen is the issue number a message names and the FHIRPath of its
// value where it first names it ("" when it names none yet).
type issueSeen struct {
	n    int
	expr string
}

// add reads the issue numbers that the Extension-EPS-RepeatInformation
// extensions among exts (the extension element at base, e.g.
// "Task.extension") name: each must be an integer from 1 to MaxRepeatIssues
// and the same as every one read before.
func (s *issueSeen) add(exts []extension, base string) *Error {
	for k := range exts {
		if exts[k].URL != ExtRepeatInformation {
			continue
		}
		parts := exts[k].Extension
		for j := range parts {
			if parts[j].URL != RepeatPartIssued {
				continue
			}
			part := base + "[" + strconv.Itoa(k) + "].extension[" + strconv.Itoa(j) + "]"
			n, expr, err := issueNumber(parts[j].ValueInt, part)
			if err != nil {
				return err
			}
			switch {
			case s.expr == "":
				s.n, s.expr = n, expr
			case n != s.n:
				return inconsistent(expr, "%s names issue %d, but %s names issue %d: a message is about one issue of a repeat dispensing prescription",
					expr, n, s.expr, s.n)
			}
		}
	}
	return nil
}

// issueNumber checks the value v of the numberOfRepeatsIssued part at
// part: an integer from 1 to MaxRepeatIssues. It returns the number and the
// FHIRPath of the value.
func issueNumber(v rawValue, part string) (int, string, *Error) {
	if len(v.b) == 0 || v.b[0] == 'n' { // absent, or null
		expr := part + ".valueInteger"
		return 0, expr, missing(expr, "%s is missing: %s.url %s names the issue of a repeat dispensing prescription, an integer from 1 to %d",
			expr, part, RepeatPartIssued, MaxRepeatIssues)
	}
	expr := part + "." + v.key
	if c := v.b[0]; c != '-' && (c < '0' || c > '9') {
		return 0, expr, Invalid(CodeInvalidValue, "structure", expr, "%s must be an integer (the issue number, 1 to %d), found %s",
			expr, MaxRepeatIssues, jsonKind(v.b))
	}
	n, err := strconv.Atoi(string(v.b))
	if err != nil {
		return 0, expr, badValue(expr, "%s %s is not an integer: it must be the issue number, 1 to %d", expr, quote(string(v.b)), MaxRepeatIssues)
	}
	if n < 1 || n > MaxRepeatIssues {
		return 0, expr, badValue(expr, "%s %d is not an issue number: issues of a repeat dispensing prescription are numbered from 1 to at most %d",
			expr, n, MaxRepeatIssues)
	}
	return n, expr, nil
}
