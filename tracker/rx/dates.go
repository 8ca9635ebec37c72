package rx

import "time"

// This file holds the prescription's dates, each rule once: the
// prescription date, the post-dated window, the validity periods and
// expiry of each issue, the repeat dispensing download dates and the
// 180-day timers of the next activities.

// PrescriptionDate is the prescription date as Spine takes it: its
// prescriptionTime, the HL7 ParentPrescription effectiveTime, which the FHIR
// facade sets from dispenseRequest.validityPeriod.start and, when the order
// has no validity period, from the requester's signature time
// (nhs-eps-api translation/request/prescribe/parent-prescription.ts
// convertParentPrescription; practitioner.ts setSignatureTimeAndText:
// Order.SignedAt); an order with neither is dated by its arrival, as the
// facade dates an unsigned one.
func PrescriptionDate(o *Order, now time.Time) time.Time {
	switch {
	case !o.ValidityStart.IsZero():
		return o.ValidityStart.UTC()
	case !o.SignedAt.IsZero():
		return o.SignedAt.UTC()
	}
	return now.UTC()
}

// PostDatedWindow is how far after its arrival an order may be dated and
// still be dispensable at once: Spine's future threshold (record.py
// set_initial_prescription_status: handle time + 1 day).
const PostDatedWindow = 24 * time.Hour

// PostDated reports whether an order of prescription date date arriving at
// now is post-dated (Prescription future instance, 9001, until its date):
// dated more than PostDatedWindow after now.
func PostDated(date, now time.Time) bool { return date.Sub(now) > PostDatedWindow }

// Validity periods of next_activity_generator.py (its prescriptionExpiryPeriod,
// repeatDispenseExpiryPeriod, withDispenserActiveExpiryPeriod and
// notificationDelayPeriod, whose values are Spine's configuration: those of
// EPS-DOMAIN.md).
const (
	ExpiryMonths          = 6   // issue 1 of any prescription
	RepeatExpiryMonths    = 12  // repeat dispensing issues 2..N
	ControlledDrugDays    = 28  // Schedule 2-4 controlled drugs (see IssueExpiresAt)
	WithDispenserDays     = 180 // a part-dispensed issue's last dispense to its no-claim
	NotificationDelayDays = 180 // a dispensed issue's completion to its no-claim
)

// IssueExpiresAt is when issue n expires (next_activity_generator.py
// _calculate_expiry_date): the prescription date (a date: Spine keeps the
// first 8 characters of prescriptionTime, record.py set_nad_status) + 6
// months for issue 1, + 12 months for later repeat dispensing issues; and
// an activity falls due on its date. A Schedule 2, 3 or 4 controlled drug
// expires 28 days after the prescription date: a deliberate rule stricter
// than Spine, which has no controlled drug period, because the Misuse of
// Drugs Regulations 2001 make such a prescription valid for 28 days only.
func (p *Prescription) IssueExpiresAt(n int) time.Time {
	d := Day(p.StartDate)
	switch {
	case n > 1:
		return addMonths(d, RepeatExpiryMonths)
	case ShortValidity(p.ControlledDrug):
		return d.AddDate(0, 0, ControlledDrugDays)
	}
	return addMonths(d, ExpiryMonths)
}

// Day is the start of t's day (UTC): Spine's next activity dates are dates.
func Day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// addMonths adds months to a date as dateutil's relativedelta does: the day
// is kept, or becomes the last day of a shorter month (31 August + 6 months
// is 28 or 29 February).
func addMonths(d time.Time, months int) time.Time {
	first := time.Date(d.Year(), d.Month(), 1, 0, 0, 0, 0, time.UTC).AddDate(0, months, 0)
	last := first.AddDate(0, 1, -1).Day()
	return first.AddDate(0, 0, min(d.Day(), last)-1)
}

// DefaultSupplyDays is the days supply of a repeat dispensing issue when the
// order states none (Spine's DEFAULT_DAYSSUPPLY).
const DefaultSupplyDays = 28

// DownloadLeadDays is how many days before its supply is due a later repeat
// dispensing issue may be downloaded (fields.py NOMINATED_DOWNLOAD_LEAD_DAYS).
const DownloadLeadDays = 7

// IssueAvailableAt is when issue n of a repeat dispensing prescription
// becomes downloadable by its date, its nominated download date (record.py
// _calculate_nominated_download_date): the prescription date + days supply x
// (n - 1) - 7 days (issue 1: the prescription date).
func (p *Prescription) IssueAvailableAt(n int) time.Time {
	if n <= 1 {
		return p.StartDate
	}
	days := p.SupplyDays
	if days <= 0 {
		days = DefaultSupplyDays
	}
	return Day(p.StartDate).AddDate(0, 0, days*(n-1)-DownloadLeadDays)
}

// WithDispenserLimit is when an issue with a dispenser (0003) whose last
// dispense, or else release, was at t reaches its limit: its no-claim when
// it has a dispense notification, else its expiry (when earlier than its
// own): the day of t + WithDispenserDays (next_activity_generator.py
// part_dispensed).
func WithDispenserLimit(t time.Time) time.Time { return Day(t).AddDate(0, 0, WithDispenserDays) }

// NoClaimAt is when a dispensed issue (0006) completed at t is no-claimed
// (0009) unless claimed: the day of t + NotificationDelayDays
// (next_activity_generator.py dispensed).
func NoClaimAt(t time.Time) time.Time { return Day(t).AddDate(0, 0, NotificationDelayDays) }
