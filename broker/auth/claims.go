package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Bounds of the claims and header values Verify reads.
const (
	// maxSubLen bounds the sub claim, in bytes. CIS2 user IDs are 12
	// digits; an e-mail address or a UUID fits easily.
	maxSubLen = 256
	// maxKIDLen bounds the kid header, in bytes. An RFC 7638 thumbprint is
	// 43 characters.
	maxKIDLen = 256
)

// errDuplicate is returned by checkSegments for a header or payload with a
// member given twice: JSON parsers differ in the copy they keep (Go's keeps
// the last), so such a token means different things to different readers.
var errDuplicate = errors.New("duplicate member")

// readNames are the header parameters and claims the broker (or the JWT
// library for it) reads. Go's encoding/json matches member names without
// regard to case (under Unicode folding: "SUB", "Sub" and "ſub" all fill
// sub), while the JWT specifications and most other parsers match them
// exactly: {"sub":"alice","SUB":"admin"} would name two users. A top-level
// name that folds to one of these but is spelled otherwise is refused.
var readNames = []string{"alg", "kid", "typ", "cty", "crit", "jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256",
	"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "ods", "role"}

// errNameCase is returned by checkSegments for a header parameter or claim
// spelled in another case than the one the broker reads.
var errNameCase = errors.New("a header parameter or claim name is spelled in another case")

// checkSegments checks the JOSE header and the claims set of a compact JWS
// before the JWT parser reads them: each must be one JSON object with no
// member name given twice at any depth (names compared after unescaping),
// in valid UTF-8. It returns errDuplicate for a repeated name, another
// error for text that is not such JSON, and nil when the token does not
// have the form header.payload.signature with base64url segments (the JWT
// parser then refuses it as malformed).
func checkSegments(token string) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	for _, part := range parts[:2] {
		seg, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil {
			return nil
		}
		// jsontext's decoder refuses duplicate names and invalid UTF-8 by
		// default, in time linear in the segment.
		d := jsontext.NewDecoder(bytes.NewReader(seg))
		if _, err := d.ReadValue(); err != nil {
			if errors.Is(err, jsontext.ErrDuplicateName) {
				return errDuplicate
			}
			return err
		}
		if err := checkNameCase(seg); err != nil {
			return err
		}
	}
	return nil
}

// checkNameCase returns errNameCase when a top-level member name of the
// object seg (valid JSON, checked already) folds to one of readNames
// without being spelled as it.
func checkNameCase(seg []byte) error {
	d := jsontext.NewDecoder(bytes.NewReader(seg))
	if t, err := d.ReadToken(); err != nil || t.Kind() != '{' {
		return err
	}
	for d.PeekKind() == '"' {
		t, err := d.ReadToken()
		if err != nil {
			return err
		}
		name := t.String()
		for _, want := range readNames {
			if name != want && strings.EqualFold(name, want) {
				return errNameCase
			}
		}
		if err := d.SkipValue(); err != nil {
			return err
		}
	}
	return nil
}

// validSubject reports whether sub is an acceptable sub claim: 1 to
// maxSubLen bytes of UTF-8 printable characters (letters, marks, numbers,
// punctuation, symbols and the ASCII space), neither starting nor ending
// with a space. Control characters (line breaks that forge log lines, NUL),
// bidirectional overrides and other invisible format characters are
// refused: the subject is written to logs and to the audit trail, and
// shown to people.
func validSubject(sub string) bool {
	if sub == "" || len(sub) > maxSubLen || !utf8.ValidString(sub) {
		return false
	}
	if sub[0] == ' ' || sub[len(sub)-1] == ' ' {
		return false
	}
	for _, r := range sub {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// validKID reports whether kid is an acceptable kid header: 1 to maxKIDLen
// bytes of visible ASCII (RFC 7515 leaves it a case-sensitive string; the
// key ids issuers publish are thumbprints, UUIDs or short names).
func validKID(kid string) bool {
	if kid == "" || len(kid) > maxKIDLen {
		return false
	}
	for i := 0; i < len(kid); i++ {
		if kid[i] < 0x21 || kid[i] > 0x7e {
			return false
		}
	}
	return true
}
