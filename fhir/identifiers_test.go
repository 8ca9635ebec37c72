package fhir

import "testing"

func TestValidNHSNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"9449305552", true}, {"5839945242", true}, {"9990548609", true}, {"9449304130", true},
		{"9449305553", false}, {"944930555", false}, {"94493055522", false}, {"94493O5552", false},
		{"", false}, {"0000000000", true}, {"1234567890", false},
	} {
		if got := ValidNHSNumber(tc.in); got != tc.want {
			t.Errorf("ValidNHSNumber(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestValidShortID(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"24F5DA-A83008-7EFE6Z", true}, {"315A44-A83008-4C9BB1", true}, {"507FE8-A83008-4A859+", true},
		{"998244-A83008-238DCD", true}, {"E3E6FA-A83008-41F09Y", true},
		{"269CA9-A99968-4577BP", false}, // the NHS INVALID_CHECKSUM example
		{"24F5DA-A83008-7EFE6Y", false}, {"24f5da-A83008-7EFE6Z", false}, {"24F5DAA83008-7EFE6Z", false},
		{"", false}, {"24F5DA-A83008-7EFE6Z ", false}, {"G4F5DA-A83008-7EFE6Z", false},
	} {
		if got := ValidShortID(tc.in); got != tc.want {
			t.Errorf("ValidShortID(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	// The check character computed over a body must make the whole ID valid.
	for _, body := range []string{"24F5DA-A83008-7EFE6", "507FE8-A83008-4A859", "000000-000000-00000"} {
		id := body + string(ShortIDCheckChar(body))
		if !ValidShortID(id) {
			t.Errorf("ShortIDCheckChar(%q) gave %q, which does not validate", body, id)
		}
	}
	if c := ShortIDCheckChar("24F5DA-A83008-7EFE6"); c != 'Z' {
		t.Errorf("check char = %c, want Z", c)
	}
}

func TestValidODSCodeAndUUID(t *testing.T) {
	// Spine's REGEX_ALPHANUMERIC8 (eps-spine-shared validation/constants.py):
	// 1 to 8 letters, digits and '-'.
	for _, s := range []string{"FA565", "A83008", "84H", "T1450", "VNE51", "RBA", "fa565", "FA-565", "X", "AB", "12345678"} {
		if !ValidODSCode(s) {
			t.Errorf("ValidODSCode(%q) = false", s)
		}
	}
	for _, s := range []string{"", "FA 565", "ABCDEFGHI", "FA.565", "FA*", "A>", "FA_565", "Ä1"} {
		if ValidODSCode(s) {
			t.Errorf("ValidODSCode(%q) = true", s)
		}
	}
	if !ValidUUID("46183abc-9fad-4673-85db-ce2cb6614732") || !ValidUUID("46183ABC-9FAD-4673-85DB-CE2CB6614732") {
		t.Error("canonical UUIDs rejected")
	}
	for _, s := range []string{"46183abc9fad467385dbce2cb6614732", "urn:uuid:46183abc-9fad-4673-85db-ce2cb6614732", "46183abc-9fad-4673-85db-ce2cb661473g", ""} {
		if ValidUUID(s) {
			t.Errorf("ValidUUID(%q) = true", s)
		}
	}
}
