package fhirgen

import (
	"bytes"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

func TestShiftDates(t *testing.T) {
	in := []byte(`{"a":"2022-10-21","b":"2022-10-21T13:47:00+00:00","c":"2020-02-28T23:59:59.123Z","d":"2022-10-21x","e":"2022-13-40","f":"ab2022-10-21"}`)
	got := ShiftDates(in, 2)
	want := `{"a":"2022-10-23","b":"2022-10-23T13:47:00+00:00","c":"2020-03-01T23:59:59.123Z","d":"2022-10-21x","e":"2022-13-40","f":"ab2022-10-21"}`
	if string(got) != want {
		t.Errorf("ShiftDates(+2)\n got %s\nwant %s", got, want)
	}
	if back := ShiftDates(got, -2); string(back) != string(in) {
		t.Errorf("ShiftDates(-2) of that: %s", back)
	}
}

// A generated order is dated on the day it is made: the NHS example's
// validity starts today and its signature time moves by the same days.
func TestOrderIsDatedToday(t *testing.T) {
	tmpl, err := NewTemplate(Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 5, 6, 1, 2, 3, 0, time.UTC)
	g, err := tmpl.Order(Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(g.Body, []byte(`"start": "2030-05-06"`)) || !bytes.Contains(g.Body, []byte(`"recorded": "2030-05-06T13:47:00+00:00"`)) {
		t.Errorf("order not dated 2030-05-06: %s", g.Body)
	}
	m, err := fhir.DecodeMessage(g.Body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Order(time.Date(2030, 5, 6, 12, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	old, _ := tmpl.Order(Options{KeepDates: true})
	if !bytes.Contains(old.Body, []byte(`"start": "2022-10-21"`)) {
		t.Errorf("KeepDates changed the dates")
	}
	if d, ok := MessageDate(g.Body); !ok || !d.Equal(time.Date(2030, 5, 6, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("MessageDate = %v %v", d, ok)
	}
}
