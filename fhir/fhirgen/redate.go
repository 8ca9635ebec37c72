package fhirgen

import (
	"regexp"
	"time"
)

// The NHS example messages were written in 2020-2022. EPS counts a
// prescription's validity from its own date (never from its arrival), so an
// example order posted as it is has long expired. Tests give the examples
// current dates instead of bending that rule: Redate moves every date in a
// message by the same whole number of days, so that the dates keep their
// order and their distances (validity period, days supply, signature time,
// repeat dispensing dates) and every time of day and time zone stays as
// written.

// dateValue matches a JSON string holding a FHIR date (YYYY-MM-DD) or
// dateTime (YYYY-MM-DDThh:mm[:ss[.fff]] with Z or an offset), in the quotes.
var dateValue = regexp.MustCompile(`"(\d{4}-\d{2}-\d{2})((?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))?)"`)

// anchorMembers match the members that date a message, in the order Redate
// prefers them: first the prescription date as Spine takes it (the
// validity period's start, else the signature's time), then the authoring
// date, the Provenance's recorded time and the Bundle's timestamp.
var anchorMembers = []*regexp.Regexp{
	regexp.MustCompile(`"validityPeriod"\s*:\s*\{[^{}]*?"start"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"when"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"authoredOn"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"recorded"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
	regexp.MustCompile(`"timestamp"\s*:\s*"(\d{4}-\d{2}-\d{2})`),
}

// MessageDate is the date that dates a message: the first validity period
// start (an order's prescription date, as Spine takes it), else the first
// signature time, authoredOn, Provenance recorded, or the Bundle timestamp.
// ok is false when the message has none of them.
func MessageDate(body []byte) (date time.Time, ok bool) {
	for _, re := range anchorMembers {
		if m := re.FindSubmatch(body); m != nil {
			if d, err := time.Parse(time.DateOnly, string(m[1])); err == nil {
				return d, true
			}
		}
	}
	return time.Time{}, false
}

// Redate returns body with every date and dateTime moved by the whole number
// of days that takes MessageDate(body) to now's date (in UTC). A message with
// no such date is returned as it is.
func Redate(body []byte, now time.Time) []byte {
	from, ok := MessageDate(body)
	if !ok {
		return body
	}
	return ShiftDates(body, DaysBetween(from, now))
}

// ShiftDates returns body with every date and dateTime moved by days (which
// may be negative). Only the date part of each value changes.
func ShiftDates(body []byte, days int) []byte {
	if days == 0 {
		return body
	}
	return dateValue.ReplaceAllFunc(body, func(v []byte) []byte {
		sub := dateValue.FindSubmatch(v)
		d, err := time.Parse(time.DateOnly, string(sub[1]))
		if err != nil { // e.g. month 13: not a date, leave it
			return v
		}
		out := make([]byte, 0, len(v))
		out = append(out, '"')
		out = d.AddDate(0, 0, days).AppendFormat(out, time.DateOnly)
		out = append(out, sub[2]...)
		return append(out, '"')
	})
}

// DaysBetween is the number of whole days from the date of a to that of b.
func DaysBetween(a, b time.Time) int {
	ay, am, ad := a.UTC().Date()
	by, bm, bd := b.UTC().Date()
	return int(time.Date(by, bm, bd, 0, 0, 0, 0, time.UTC).Sub(time.Date(ay, am, ad, 0, 0, 0, 0, time.UTC)).Hours() / 24)
}
