// Package fhir decodes, validates and encodes the EPS FHIR R4 messages the
// broker handles. It does no I/O: it turns bytes into domain values or into
// typed errors that know their EPS code, FHIR issue type and FHIRPath.
package fhir

import (
	"strings"
)

// ValidNHSNumber reports whether s is a 10-digit NHS number whose modulus 11
// check digit is right: weights 10..2 over the first nine digits, check =
// 11 - (sum mod 11), 11 means 0 and 10 means the number is invalid.
func ValidNHSNumber(s string) bool {
	if len(s) != 10 {
		return false
	}
	sum := 0
	for i := 0; i < 10; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return false
		}
		if i < 9 {
			sum += int(c-'0') * (10 - i)
		}
	}
	check := 11 - sum%11
	switch check {
	case 11:
		check = 0
	case 10:
		return false
	}
	return int(s[9]-'0') == check
}

const mod37Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+"

func mod37Value(c byte) int {
	return strings.IndexByte(mod37Alphabet, c)
}

// ShortIDWellFormed reports whether s has the form of a short-form
// prescription ID: ^[A-F0-9]{6}-[A-Z0-9]{6}-[A-F0-9]{5}[A-Z0-9+]$.
// It does not look at the check character.
func ShortIDWellFormed(s string) bool {
	if len(s) != 20 || s[6] != '-' || s[13] != '-' {
		return false
	}
	for i := 0; i < 20; i++ {
		c := s[i]
		hex := c >= '0' && c <= '9' || c >= 'A' && c <= 'F'
		alnum := c >= '0' && c <= '9' || c >= 'A' && c <= 'Z'
		switch {
		case i == 6 || i == 13:
		case i < 6, i > 13 && i < 19:
			if !hex {
				return false
			}
		case i > 6 && i < 13:
			if !alnum {
				return false
			}
		case i == 19:
			if !alnum && c != '+' {
				return false
			}
		}
	}
	return true
}

// ShortIDCheckChar computes the ISO 7064 MOD 37-2 check character over the
// 17 characters of a short-form prescription ID without its dashes and check
// character. body must hold only characters of the MOD 37-2 alphabet.
func ShortIDCheckChar(body string) byte {
	t := 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '-' {
			continue
		}
		t = ((t + mod37Value(c)) * 2) % 37
	}
	return mod37Alphabet[(38-t)%37]
}

// ValidShortID reports whether s is a well-formed short-form prescription ID
// whose MOD 37-2 check character is right.
func ValidShortID(s string) bool {
	if !ShortIDWellFormed(s) {
		return false
	}
	t := 0
	for i := 0; i < 19; i++ {
		if s[i] == '-' {
			continue
		}
		t = ((t + mod37Value(s[i])) * 2) % 37
	}
	return (t+mod37Value(s[19]))%37 == 1
}

// ValidODSCode reports whether s is an ODS organisation code as Spine
// accepts it: 1 to 8 letters (either case), digits and '-'
// (eps-spine-shared validation/constants.py REGEX_ALPHANUMERIC8), e.g.
// FA565, A83008, 84H, T1450. Codes are used as they are sent; anything that
// builds NATS subjects from them encodes them (broker.SubjectToken).
func ValidODSCode(s string) bool {
	if len(s) < 1 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '-') {
			return false
		}
	}
	return true
}

// ValidUUID reports whether s is a UUID in its canonical 36-character
// hyphenated form (either case), as Bundle.identifier, line item ids and
// long-form prescription IDs must be.
func ValidUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
