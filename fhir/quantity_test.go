package fhir

import (
	"bytes"
	"strings"
	"testing"
)

// erdOrder is a signed repeat dispensing order of the NHS examples.
const erdOrder = "primary-care/repeat-dispensing/nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/medication-list/din/1-Process-Request-Send-200_OK.json"

// qSentinel stands for a number literal in an edited message: the edit
// sets it as a string, and withLiteral writes the literal in its place, as
// sent (json.Marshal would rewrite -0, 1e3 or 19 digits).
const qSentinel = "@@quantity@@"

func withLiteral(body []byte, lit string) []byte {
	return bytes.ReplaceAll(body, []byte(`"`+qSentinel+`"`), []byte(lit))
}

// Negative, absurdly large and over-precise quantities are refused at the
// FHIRPath of the value (INVALID_VALUE, issue type value); what real
// systems send is accepted: 0 (a dispensing system's quantity for an item
// not dispensed), fractions, exponents, a float artefact, a million.
func TestQuantityBounds(t *testing.T) {
	order := readFixture(t, order4Items)
	erd := readFixture(t, erdOrder)
	dn := readFixture(t, dnFixture)
	claim := readFixture(t, claimFixture)

	const (
		mr1Quantity = "Bundle.entry[1].resource.dispenseRequest.quantity.value"
		mr1Dose     = "Bundle.entry[1].resource.dosageInstruction[0].doseAndRate[0].doseQuantity.value"
		mr1Supply   = "Bundle.entry[1].resource.dispenseRequest.expectedSupplyDuration.value"
		mr3Repeats  = "Bundle.entry[3].resource.dispenseRequest.numberOfRepeatsAllowed"
	)
	quantityOfMR1 := func(b bundle) { set(res(b, 1), qSentinel, "dispenseRequest", "quantity", "value") }
	doseOfMR1 := func(b bundle) {
		set(res(b, 1), []any{map[string]any{"doseQuantity": map[string]any{"value": qSentinel, "unit": "tablet"}}}, "dosageInstruction", 0, "doseAndRate")
	}
	// The facade requires the same supply duration on every item.
	supplyOfItems := eachItem(func(r map[string]any) {
		r["dispenseRequest"].(map[string]any)["expectedSupplyDuration"] = map[string]any{"value": qSentinel, "unit": "day", "system": "http://unitsofmeasure.org", "code": "d"}
	})
	repeatsOfMR3 := func(b bundle) { res(b, 3)["dispenseRequest"].(map[string]any)["numberOfRepeatsAllowed"] = qSentinel }
	erdSupply := func(b bundle) {
		eachItem(func(r map[string]any) { set(r, qSentinel, "dispenseRequest", "expectedSupplyDuration", "value") })(b)
	}

	for _, tc := range []struct {
		name  string
		kind  string // asOrder, asDN or asClaim
		base  []byte
		edit  func(b bundle)
		lit   string
		code  string // "" when accepted
		expr  string
		words string // a part of the diagnostics
	}{
		// Accepted.
		{"order quantity 0", asOrder, order, quantityOfMR1, "0", "", "", ""},
		{"order quantity a fraction", asOrder, order, quantityOfMR1, "0.5", "", "", ""},
		{"order quantity with an exponent", asOrder, order, quantityOfMR1, "2.8e1", "", "", ""},
		{"order quantity a float artefact (17 digits)", asOrder, order, quantityOfMR1, "0.30000000000000004", "", "", ""},
		{"order quantity a million", asOrder, order, quantityOfMR1, "1000000", "", "", ""},
		{"order dose 2.5", asOrder, order, doseOfMR1, "2.5", "", "", ""},
		{"acute supply of 400 days (EPS does not read it)", asOrder, order, supplyOfItems, "400", "", "", ""},
		{"acute repeats as a string of digits", asOrder, order, repeatsOfMR3, `"6"`, "", "", ""},
		{"acute repeats as words (EPS does not read it)", asOrder, order, repeatsOfMR3, `"six"`, "", "", ""},
		{"dispensed quantity 0 (not dispensed)", asDN, dn, func(b bundle) { set(res(b, 1), qSentinel, "quantity", "value") }, "0", "", "", ""},
		{"claimed quantity 0", asClaim, claim, func(b bundle) { set(b, qSentinel, "item", 0, "detail", 0, "quantity", "value") }, "0", "", "", ""},

		// Refused: orders.
		{"order quantity -1", asOrder, order, quantityOfMR1, "-1", CodeInvalidValue, mr1Quantity, "-1 is negative"},
		{"order quantity -0", asOrder, order, quantityOfMR1, "-0", CodeInvalidValue, mr1Quantity, "negative"},
		{"order quantity -0.5", asOrder, order, quantityOfMR1, "-0.5", CodeInvalidValue, mr1Quantity, "negative"},
		{"order quantity over a million", asOrder, order, quantityOfMR1, "1000000.5", CodeInvalidValue, mr1Quantity, "out of range"},
		{"order quantity 1e7", asOrder, order, quantityOfMR1, "1e7", CodeInvalidValue, mr1Quantity, "out of range"},
		{"order quantity 1e400 (no float64)", asOrder, order, quantityOfMR1, "1e400", CodeInvalidValue, mr1Quantity, "out of range"},
		{"order quantity of 19 significant digits", asOrder, order, quantityOfMR1, "1.234567890123456789", CodeInvalidValue, mr1Quantity, "19 significant digits"},
		{"order dose -2", asOrder, order, doseOfMR1, "-2", CodeInvalidValue, mr1Dose, "negative"},
		{"acute supply -7 days", asOrder, order, supplyOfItems, "-7", CodeInvalidValue, mr1Supply, "negative"},
		{"acute supply 1e9 days", asOrder, order, supplyOfItems, "1e9", CodeInvalidValue, mr1Supply, "out of range"},
		{"acute repeats -1", asOrder, order, repeatsOfMR3, "-1", CodeInvalidValue, mr3Repeats, "negative"},
		{"acute repeats \"-3\"", asOrder, order, repeatsOfMR3, `"-3"`, CodeInvalidValue, mr3Repeats, "negative"},
		{"acute repeats \"NaN\"", asOrder, order, repeatsOfMR3, `"NaN"`, CodeInvalidValue, mr3Repeats, "out of range"},
		{"acute repeats \"Infinity\"", asOrder, order, repeatsOfMR3, `"Infinity"`, CodeInvalidValue, mr3Repeats, "out of range"},
		{"acute repeats 2000000", asOrder, order, repeatsOfMR3, "2000000", CodeInvalidValue, mr3Repeats, "out of range"},
		{"acute repeats 1.5", asOrder, order, repeatsOfMR3, "1.5", CodeInvalidValue, mr3Repeats, "not a whole number"},
		// Repeat dispensing keeps Spine's answers (check_days_supply).
		{"eRD supply -1: Spine's error", asOrder, erd, erdSupply, "-1", CodeFailureToProcessMessage, "", "daysSupply is not an integer"},
		{"eRD supply 367: Spine's error", asOrder, erd, erdSupply, "367", CodeFailureToProcessMessage, "", "daysSupply cannot exceed 366"},

		// Refused: dispense notifications and claims.
		{"dispensed quantity -1", asDN, dn, func(b bundle) { set(res(b, 1), qSentinel, "quantity", "value") }, "-1",
			CodeInvalidValue, "Bundle.entry[1].resource.quantity.value", "negative"},
		{"dispensed quantity 1e12", asDN, dn, func(b bundle) { set(res(b, 2), qSentinel, "quantity", "value") }, "1e12",
			CodeInvalidValue, "Bundle.entry[2].resource.quantity.value", "out of range"},
		{"prescribed quantity in a dispense notification -20", asDN, dn, func(b bundle) { set(res(b, 1), qSentinel, "contained", 1, "dispenseRequest", "quantity", "value") }, "-20",
			CodeInvalidValue, "Bundle.entry[1].resource.contained[1].dispenseRequest.quantity.value", "negative"},
		{"claimed quantity -20", asClaim, claim, func(b bundle) { set(b, qSentinel, "item", 0, "detail", 0, "quantity", "value") }, "-20",
			CodeInvalidValue, "Claim.item[0].detail[0].quantity.value", "negative"},
		{"claimed subDetail quantity 5e6", asClaim, claim, func(b bundle) { set(b, qSentinel, "item", 0, "detail", 0, "subDetail", 0, "quantity", "value") }, "5e6",
			CodeInvalidValue, "Claim.item[0].detail[0].subDetail[0].quantity.value", "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := withLiteral(mutate(t, tc.base, tc.edit), tc.lit)
			var err error
			switch tc.kind {
			case asOrder:
				m, derr := DecodeMessage(body)
				if derr != nil {
					t.Fatalf("DecodeMessage: %v", derr)
				}
				_, err = m.Order(written(body))
			default:
				_, err = decodeAs(t, tc.kind, body)
			}
			if tc.code == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			e := fhirErr(t, err)
			if e.Code != tc.code || !strings.Contains(e.Diagnostics, tc.words) {
				t.Errorf("got %s %q, want %s with %q", e.Code, e.Diagnostics, tc.code, tc.words)
			}
			if tc.code == CodeInvalidValue && (e.IssueType != "value" || e.Expression[0] != tc.expr) {
				t.Errorf("issue type %q at %q, want value at %q", e.IssueType, e.Expression[0], tc.expr)
			}
		})
	}
}

// amountIssue's bounds, literal by literal.
func TestAmountIssue(t *testing.T) {
	for lit, bad := range map[string]bool{
		"0": false, "0.0": false, "28": false, "0.25": false, "1e6": false, "1000000": false, "1E2": false,
		"0.000001": false, "0.123456789012345678": false, "0.30000000000000004": false,
		"-1": true, "-0": true, "-0.0": true, "1000000.1": true, "1e7": true, "1e309": true,
		"1234567890123456789": true, "0.1234567890123456789": true,
	} {
		if got := amountIssue([]byte(lit)) != ""; got != bad {
			t.Errorf("amountIssue(%s) refuses: %v, want %v", lit, got, bad)
		}
	}
}

// JSON has no NaN or Infinity: a bare one is refused before any check.
func TestQuantityNotANumber(t *testing.T) {
	order := readFixture(t, order4Items)
	for _, lit := range []string{"NaN", "Infinity", "-Infinity", "+1", "0x10", ".5"} {
		body := withLiteral(mutate(t, order, func(b bundle) { set(res(b, 1), qSentinel, "dispenseRequest", "quantity", "value") }), lit)
		if m, err := DecodeMessage(body); err == nil {
			if _, err = m.Order(written(body)); err == nil {
				t.Errorf("quantity %s accepted", lit)
			}
		}
	}
}
