package rx

import "time"

// Course of therapy codes (TherapyType).
const (
	TherapyAcute            = "acute"
	TherapyContinuous       = "continuous"
	TherapyRepeatDispensing = "continuous-repeat-dispensing"
)

// Order is what the creation transition (Create) reads of an accepted
// prescription-order. The fhir package fills it from a decoded order
// (fhir.Order.RxOrder). Dates are in UTC.
type Order struct {
	BundleID         string
	PrescriptionID   string // short form, e.g. 24F5DA-A83008-7EFE6Z
	LongID           string // long form UUID
	NHSNumber        string
	Sender           string // the sending organisation (ODS)
	PrescriberOrg    string // the requester's organisation (ODS), may be empty
	Performer        string // the dispenser the order names (ODS), may be empty
	SiteType         string // performer site type: P1, P2, P3, 0004 (may be empty)
	PrescriptionType string
	TherapyType      string // one of the Therapy constants
	// SignedAt is the time of the requester's signature, zero when the
	// order is not signed; ValidityStart is dispenseRequest.validityPeriod
	// .start, zero when absent. PrescriptionDate reads them.
	SignedAt       time.Time
	ValidityStart  time.Time
	RepeatsAllowed int    // numberOfRepeatsAllowed (0 when absent)
	SupplyDays     int    // expected supply duration in days (0 when absent)
	ControlledDrug string // highest controlled drug schedule (CD1..CD5...), empty when none
	Items          []OrderItem
}

// OrderItem is one line item of an order.
type OrderItem struct {
	ID             string // line item id (UUID)
	MedicationCode string // dm+d code
}

// Nominated reports whether the order names a nominated site type (P1, P2
// or P3) rather than non-nominated (0004).
func (o *Order) Nominated() bool { return NominatedSite(o.SiteType) }

// NominatedSite reports whether performer site type code is a nominated
// one: P1, P2 or P3 (0004 is non-nominated).
func NominatedSite(siteType string) bool {
	switch siteType {
	case "P1", "P2", "P3":
		return true
	}
	return false
}

// ShortValidity reports whether controlled drug schedule cd (CD1..CD5, e.g.
// "CD4-1") is Schedule 2, 3 or 4: legally valid for 28 days only.
func ShortValidity(cd string) bool {
	return len(cd) >= 3 && cd[:2] == "CD" && cd[2] >= '2' && cd[2] <= '4'
}
