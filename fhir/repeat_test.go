package fhir

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
)

// Fixtures naming a repeat dispensing issue. Where the examples carry
// Extension-EPS-RepeatInformation (numberOfRepeatsIssued is its part [1]):
//
//	return:   Task.extension[0] (valueInteger)
//	withdraw: Task.extension[2] (valueUnsignedInt)
//	dispense notification: each MedicationDispense's extension[1] and its
//	  contained[1] MedicationRequest's basedOn[0].extension[0]
//	claim: item[0].extension[1], each item[0].detail[n].extension[2]; the
//	  repeat example also detail[1].subDetail[0] and detail[2].subDetail[1]
//	  .extension[1]
const (
	erdReturn   = "spec/dispensing/return/eRD-primary-example-req.json"
	erdWithdraw = "spec/dispensing/withdraw/eRD-primary-example-req.json"
	erdDN       = "spec/dispensing/dispense-notification/eRD-primary-example-req.json"
	erdClaim    = "spec/dispensing/claim/eRD-primary-example-req.json"
	repeatClaim = "spec/dispensing/claim/repeat-primary-example-req.json"
)

// repeatInfo is an Extension-EPS-RepeatInformation whose
// numberOfRepeatsIssued is issued (any JSON value).
func repeatInfo(issued any) map[string]any {
	return map[string]any{"url": ExtRepeatInformation, "extension": []any{
		map[string]any{"url": RepeatPartAllowed, "valueInteger": 5},
		map[string]any{"url": RepeatPartIssued, "valueInteger": issued},
	}}
}

// appendExt appends ext to the extensions of the element at path under v.
func appendExt(v any, ext any, path ...any) {
	e := at(v, path...).(map[string]any)
	exts, _ := e["extension"].([]any)
	e["extension"] = append(exts, ext)
}

// issueNamed decodes body with the decoder kind and returns the issue it
// names.
func issueNamed(t *testing.T, kind string, body []byte) (int, error) {
	t.Helper()
	v, err := decodeAs(t, kind, body)
	if err != nil {
		return 0, err
	}
	return int(reflect.ValueOf(v).Elem().FieldByName("Issue").Int()), nil
}

// The NHS examples give numberOfRepeatsIssued 2 (of numberOfRepeatsAllowed
// 6 in the Tasks, 5 in the dispense notifications and claims), acute ones
// none. Read as EPS reads each place: a return, dispense notification
// (basedOn), claim and withdraw count from 0 (issue 3): withdraw.ts (as of
// the reference's commit) adds 1 as return.ts does, so the withdraw and the
// return examples, both 2, name the same issue.
func TestRepeatIssueFixtures(t *testing.T) {
	for _, tc := range []struct {
		kind, rel string
		want      int
	}{
		{asTask, "spec/dispensing/return/acute-primary-example-req.json", 0},
		{asTask, erdReturn, 3},
		{asTask, "spec/dispensing/return/repeat-primary-example-req.json", 3},
		{asTask, "spec/dispensing/withdraw/acute-primary-example-req.json", 0},
		{asTask, erdWithdraw, 3},
		{asTask, "spec/dispensing/withdraw/repeat-primary-example-req.json", 3},
		{asDN, "spec/dispensing/dispense-notification/acute-primary-example-01-req.json", 0},
		{asDN, "spec/dispensing/dispense-notification/acute-primary-example-02-req.json", 0},
		{asDN, "spec/dispensing/dispense-notification/acute-primary-example-03-req.json", 0},
		{asDN, "spec/dispensing/dispense-notification/acute-primary-example-04-req.json", 0},
		{asDN, erdDN, 3},
		{asDN, "spec/dispensing/dispense-notification/repeat-primary-example-req.json", 3},
		{asClaim, "spec/dispensing/claim/acute-primary-example-req.json", 0},
		{asClaim, erdClaim, 3},
		{asClaim, repeatClaim, 3},
	} {
		got, err := issueNamed(t, tc.kind, readFixture(t, tc.rel))
		if err != nil || got != tc.want {
			t.Errorf("%s: issue %d %v, want %d", tc.rel, got, err, tc.want)
		}
	}
}

// ukCoreRepeat is an Extension-UKCore-MedicationRepeatInformation whose
// numberOfPrescriptionsIssued is issued.
func ukCoreRepeat(issued any) map[string]any {
	return map[string]any{"url": ExtUKCoreRepeatInformation, "extension": []any{
		map[string]any{"url": RepeatPartPrescriptons, "valueUnsignedInt": issued},
	}}
}

// Forms of the repeat information the examples do not show, each read where
// and as EPS reads it (return.ts, withdraw.ts, dispense-notification.ts,
// dispense-claim.ts).
func TestRepeatIssueVariants(t *testing.T) {
	for _, tc := range []struct {
		name, kind, base string
		edit             func(b bundle)
		want             int
	}{
		{"return: 0 is issue 1", asTask, erdReturn, func(b bundle) { set(b, 0, "extension", 0, "extension", 1, "valueInteger") }, 1},
		{"return: 98 is issue 99", asTask, erdReturn, func(b bundle) { set(b, 98, "extension", 0, "extension", 1, "valueInteger") }, 99},
		{"return: a string of digits", asTask, erdReturn, func(b bundle) { set(b, "4", "extension", 0, "extension", 1, "valueInteger") }, 5},
		{"return: valueUnsignedInt", asTask, erdReturn, func(b bundle) {
			set(b, map[string]any{"url": RepeatPartIssued, "valueUnsignedInt": 7}, "extension", 0, "extension", 1)
		}, 8},
		{"return: numberOfRepeatsAllowed only", asTask, erdReturn, func(b bundle) {
			set(b, []any{at(b, "extension", 0, "extension", 0)}, "extension", 0, "extension")
		}, 0},
		{"return: numberOfRepeatsAllowed is not read", asTask, erdReturn, func(b bundle) { set(b, "x", "extension", 0, "extension", 0, "valueInteger") }, 3},
		{"return: only the first repeat information counts", asTask, erdReturn, func(b bundle) { appendExt(b, repeatInfo(7)) }, 3},
		{"return: added to an acute return", asTask, returnFixture, func(b bundle) { appendExt(b, repeatInfo(4)) }, 5},
		{"withdraw: 0 is issue 1", asTask, erdWithdraw, func(b bundle) { set(b, 0, "extension", 2, "extension", 1, "valueUnsignedInt") }, 1},
		{"dispense: basedOn 0 is issue 1", asDN, erdDN, eachMD(func(r map[string]any) {
			set(r, 0, "contained", 1, "basedOn", 0, "extension", 0, "extension", 1, "valueInteger")
		}), 1},
		{"dispense: the MedicationDispenses' own repeat information is not read", asDN, erdDN, eachMD(func(r map[string]any) {
			lcDelete(r, "contained", 1, "basedOn")
		}), 0},
		{"dispense: the MedicationDispenses' own repeat information may count from 1", asDN, erdDN, eachMD(func(r map[string]any) {
			set(r, 3, "extension", 1, "extension", 1, "valueInteger")
		}), 3},
		{"dispense: only the first MedicationDispense's basedOn is read", asDN, erdDN, func(b bundle) {
			set(res(b, 2), 7, "contained", 1, "basedOn", 0, "extension", 0, "extension", 1, "valueInteger")
		}, 3},
		{"dispense: an item's UK Core numberOfPrescriptionsIssued counts from 1", asDN, dnFixture, eachMD(func(r map[string]any) {
			appendExt(r, ukCoreRepeat(1), "contained", 1)
		}), 1},
		{"dispense: basedOn from 0 and UK Core from 1 in one message", asDN, erdDN, eachMD(func(r map[string]any) {
			set(r, 0, "contained", 1, "basedOn", 0, "extension", 0, "extension", 1, "valueInteger")
			appendExt(r, ukCoreRepeat(1), "contained", 1)
		}), 1},
		{"dispense: numberOfRepeatsAllowed a string in the contained MedicationRequest", asDN, erdDN, eachMD(func(r map[string]any) {
			set(r, "5", "contained", 1, "dispenseRequest", "numberOfRepeatsAllowed")
		}), 3},
		{"claim: on the details only (the deprecated place)", asClaim, claimFixture, func(b bundle) {
			for d := range 4 {
				appendExt(b, repeatInfo(12), "item", 0, "detail", d)
			}
		}, 13},
		{"claim: the item's wins over the details'", asClaim, erdClaim, func(b bundle) {
			set(b, 5, "item", 0, "detail", 0, "extension", 2, "extension", 1, "valueInteger")
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := issueNamed(t, tc.kind, mutate(t, readFixture(t, tc.base), tc.edit))
			if err != nil || got != tc.want {
				t.Errorf("issue %d %v, want %d", got, err, tc.want)
			}
		})
	}
}

// An issue number that is not a whole number naming one of at most 99
// issues (0 to 98 where the message counts from 0, 1 to 99 where it counts
// from 1) is refused where it is found.
func TestRepeatIssueBad(t *testing.T) {
	const (
		taskIssued = "Task.extension[0].extension[1].valueInteger"
		dn1Basis   = "Bundle.entry[1].resource.contained[1].basedOn[0].extension[0].extension[1].valueInteger"
	)
	taskIssue := func(v any) func(b bundle) {
		return func(b bundle) { set(b, v, "extension", 0, "extension", 1, "valueInteger") }
	}
	for _, tc := range []struct {
		name, kind, base            string
		edit                        func(b bundle)
		code, issueType, expression string
	}{
		{"return: 99", asTask, erdReturn, taskIssue(99), CodeInvalidValue, "value", taskIssued},
		{"return: -1", asTask, erdReturn, taskIssue(-1), CodeInvalidValue, "value", taskIssued},
		{"return: a string", asTask, erdReturn, taskIssue("x"), CodeInvalidValue, "value", taskIssued},
		{"return: an object", asTask, erdReturn, taskIssue(map[string]any{}), CodeInvalidValue, "structure", taskIssued},
		{"return: a fraction", asTask, erdReturn, taskIssue(2.5), CodeInvalidValue, "value", taskIssued},
		{"return: beyond int64", asTask, erdReturn, taskIssue(1e30), CodeInvalidValue, "value", taskIssued},
		{"return: null", asTask, erdReturn, taskIssue(nil), CodeMissingValue, "required", taskIssued},
		{"return: without a value", asTask, erdReturn, func(b bundle) { lcDelete(b, "extension", 0, "extension", 1, "valueInteger") },
			CodeMissingValue, "required", taskIssued},
		{"withdraw: -1 (it counts from 0)", asTask, erdWithdraw, func(b bundle) { set(b, -1, "extension", 2, "extension", 1, "valueUnsignedInt") },
			CodeInvalidValue, "value", "Task.extension[2].extension[1].valueUnsignedInt"},
		{"withdraw: 100", asTask, erdWithdraw, func(b bundle) { set(b, 100, "extension", 2, "extension", 1, "valueUnsignedInt") },
			CodeInvalidValue, "value", "Task.extension[2].extension[1].valueUnsignedInt"},
		{"dispense: basedOn 99", asDN, erdDN, eachMD(func(r map[string]any) {
			set(r, 99, "contained", 1, "basedOn", 0, "extension", 0, "extension", 1, "valueInteger")
		}), CodeInvalidValue, "value", dn1Basis},
		{"dispense: basedOn an object", asDN, erdDN, func(b bundle) {
			set(res(b, 1), map[string]any{}, "contained", 1, "basedOn")
		}, CodeInvalidValue, "structure", "Bundle.entry[1].resource.contained[1].basedOn"},
		{"dispense: UK Core 0 (it counts from 1)", asDN, dnFixture, func(b bundle) {
			appendExt(res(b, 1), ukCoreRepeat(0), "contained", 1)
		}, CodeInvalidValue, "value", "Bundle.entry[1].resource.contained[1].extension[2].extension[0].valueUnsignedInt"},
		{"claim: 99 on the item", asClaim, erdClaim, func(b bundle) { set(b, 99, "item", 0, "extension", 1, "extension", 1, "valueInteger") },
			CodeInvalidValue, "value", "Claim.item[0].extension[1].extension[1].valueInteger"},
		{"claim: a string on the first detail (no item repeat information)", asClaim, claimFixture, func(b bundle) {
			appendExt(b, repeatInfo("x"), "item", 0, "detail", 0)
		}, CodeInvalidValue, "value", "Claim.item[0].detail[0].extension[2].extension[1].valueInteger"},
		{"claim: subDetail an object", asClaim, repeatClaim, func(b bundle) { set(b, map[string]any{}, "item", 0, "detail", 1, "subDetail") },
			CodeInvalidValue, "structure", "Claim.item[0].detail[1].subDetail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeAs(t, tc.kind, mutate(t, readFixture(t, tc.base), tc.edit))
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			e := fhirErr(t, err)
			if e.Code != tc.code || e.IssueType != tc.issueType || e.Expression[0] != tc.expression || e.Op != opOf[tc.kind] {
				t.Errorf("got %s %s %q (%s: %s), want %s %s %q", e.Code, e.IssueType, e.Expression, e.Op, e.Diagnostics, tc.code, tc.issueType, tc.expression)
			}
			if !strings.Contains(e.Diagnostics, tc.expression) {
				t.Errorf("the diagnostics do not name %s: %s", tc.expression, e.Diagnostics)
			}
			if !reflect.ValueOf(got).IsNil() {
				t.Errorf("a value with the error: %+v", got)
			}
		})
	}
}

// validIssue reports whether n is an issue a decoder may return: 0 (none)
// or 1 to MaxRepeatIssues.
func validIssue(n int) bool { return n >= 0 && n <= MaxRepeatIssues }

// repeatSeeds are FuzzLifecycle seeds that replace a value of the repeat
// information of an eRD example (rel, the path of the value, the new value
// as JSON).
var repeatSeeds = []struct {
	rel  string
	path []any
	v    string
}{
	{erdReturn, []any{"extension", 0, "extension", 1, "valueInteger"}, `0`},
	{erdReturn, []any{"extension", 0, "extension", 1, "valueInteger"}, `"x"`},
	{erdReturn, []any{"extension", 0, "extension", 1}, `{"url":"numberOfRepeatsIssued","valueUnsignedInt":100}`},
	{erdWithdraw, []any{"extension", 2, "extension", 1, "valueUnsignedInt"}, `99`},
	{erdDN, []any{"entry", 2, "resource", "extension", 1, "extension", 1, "valueInteger"}, `3`},
	{erdDN, []any{"entry", 1, "resource", "contained", 1, "basedOn", 0, "extension", 0, "extension", 1, "valueInteger"}, `2.5`},
	{erdDN, []any{"entry", 1, "resource", "contained", 1, "basedOn"}, `{}`},
	{erdClaim, []any{"item", 0, "extension", 1, "extension", 1, "valueInteger"}, `1`},
	{repeatClaim, []any{"item", 0, "extension", 1, "extension", 1, "valueInteger"}, `null`},
}

// pathIndex is the index, among the jsonPaths of the fixture rel, of path
// (FuzzLifecycle's p).
func pathIndex(t testing.TB, rel string, path ...any) uint16 {
	t.Helper()
	var doc any
	if err := json.Unmarshal(readFixture(t, rel), &doc); err != nil {
		t.Fatal(err)
	}
	for i, p := range jsonPaths(doc, nil) {
		if reflect.DeepEqual(p, path) && i > 0 && i <= math.MaxUint16 {
			return uint16(i)
		}
	}
	t.Fatalf("%s has no %v", rel, path)
	return 0
}

// The seeds reach what they mean to: each edit changes the issue named or
// is refused.
func TestRepeatSeeds(t *testing.T) {
	for _, s := range repeatSeeds {
		var doc any
		if err := json.Unmarshal(readFixture(t, s.rel), &doc); err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal([]byte(s.v), &v); err != nil {
			t.Fatal(err)
		}
		paths := jsonPaths(doc, nil)
		set(doc, v, paths[pathIndex(t, s.rel, s.path...)]...)
		body, _ := json.Marshal(doc)
		kind := asTask
		switch {
		case strings.Contains(s.rel, "claim"):
			kind = asClaim
		case strings.Contains(s.rel, "dispense-notification"):
			kind = asDN
		}
		base, _ := issueNamed(t, kind, readFixture(t, s.rel))
		n, err := issueNamed(t, kind, body)
		if err == nil && n == base {
			t.Errorf("%s %v = %s: still issue %d", s.rel, s.path, s.v, base)
		}
	}
}
