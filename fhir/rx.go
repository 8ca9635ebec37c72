package fhir

import "github.com/nhs-eps/epsbroker/tracker/rx"

// This file fills the domain core's input types (package tracker/rx) from
// decoded messages: rx never reads the wire types.

// DefaultSupplyDays is Spine's DEFAULT_DAYSSUPPLY, the days supply of an
// order that states none: the domain core's.
const DefaultSupplyDays = rx.DefaultSupplyDays

// RxOrder is what the creation transition (rx.Create) reads of the order.
func (o *Order) RxOrder() *rx.Order {
	r := &rx.Order{BundleID: o.BundleID, PrescriptionID: o.PrescriptionID, LongID: o.LongID, NHSNumber: o.NHSNumber,
		Sender: o.Sender, PrescriberOrg: o.PrescriberOrg, Performer: o.Performer, SiteType: o.SiteType,
		PrescriptionType: o.PrescriptionType, TherapyType: o.TherapyType, SignedAt: o.SignedAt,
		ValidityStart: o.ValidityStart, RepeatsAllowed: o.RepeatsAllowed, SupplyDays: o.SupplyDays,
		ControlledDrug: o.ControlledDrug, Items: make([]rx.OrderItem, len(o.Items))}
	for i, it := range o.Items {
		r.Items[i] = rx.OrderItem{ID: it.ID, MedicationCode: it.MedicationCode}
	}
	return r
}

// DispensedLines are the lines of a dispense notification, in message
// order: what the prescription record keeps of each MedicationDispense.
func (n *DispenseNotification) DispensedLines() []rx.DispensedLine {
	out := make([]rx.DispensedLine, 0, len(n.Items))
	for _, it := range n.Items {
		out = append(out, rx.DispensedLine{LineItem: it.LineItemID, Status: rx.ItemStatus(it.Status), Reason: it.NonDispensingReason,
			Code: it.MedicationCode, Medication: it.MedicationDisplay, Quantity: it.Quantity, Unit: it.QuantityUnit})
	}
	return out
}

// LineItemIDs are the line items the notification names, in message order.
func (n *DispenseNotification) LineItemIDs() []string {
	out := make([]string, len(n.Items))
	for i, it := range n.Items {
		out[i] = it.LineItemID
	}
	return out
}
