package fhir

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// An order not signed yet (the NHS $prepare example) is refused by Order
// (MISSING_DIGITAL_SIGNATURE) and accepted by OrderBeforeSigning, which
// $validate runs; a signature it has is still checked.
func TestOrderBeforeSigning(t *testing.T) {
	now := time.Now()
	decode := func(body []byte) *Message {
		t.Helper()
		m, err := DecodeMessage(body)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	code := func(err error) string {
		var e *Error
		if errors.As(err, &e) {
			return e.Code
		}
		return ""
	}
	unsigned := decode(readFixture(t, "primary-care/acute/nominated-pharmacy/medical-prescriber/1-Prepare-Request-200_OK.json"))
	if _, err := unsigned.Order(now); code(err) != CodeMissingDigitalSignature {
		t.Errorf("Order of an unsigned order: %v, want MISSING_DIGITAL_SIGNATURE", err)
	}
	if _, err := unsigned.OrderBeforeSigning(now); err != nil {
		t.Errorf("OrderBeforeSigning of an unsigned order: %v", err)
	}
	signed := readFixture(t, order4Items)
	i := bytes.Index(signed, []byte(`"data": "`))
	if i < 0 {
		t.Fatal("no signature data in the example")
	}
	i += len(`"data": "`)
	bad := append(append(append([]byte{}, signed[:i]...), "!!!not-a-signature!!!"...), signed[i+bytes.IndexByte(signed[i:], '"'):]...)
	if _, err := decode(bad).OrderBeforeSigning(now); err == nil || !bytes.Contains([]byte(err.Error()), []byte("Invalid signature format")) {
		t.Errorf("OrderBeforeSigning of a bad signature: %v, want Invalid signature format", err)
	}
}
