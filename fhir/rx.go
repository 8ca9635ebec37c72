package fhir

import "github.com/nhs-eps/epsbroker/tracker/rx"

// This file fills the domain core's input types (package tracker/rx) from
// decoded messages: rx never reads the wire types.

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

// RxCancel is what the cancellation transitions (rx.Cancel,
// rx.KeepCancellation) read of a cancellation.
func (c *Cancellation) RxCancel() rx.CancelInput {
	return rx.CancelInput{MessageID: c.BundleID, NHSNumber: c.NHSNumber, LineItemID: c.LineItemID, Reason: c.Reason}
}

// RxDispense is what the dispense transition (rx.Dispense) reads of a
// dispense notification: the status it states of each line item and of the
// prescription, and what the tracker shows of it (its lines and its
// non-dispensing reason).
func (n *DispenseNotification) RxDispense() rx.DispenseInput {
	in := rx.DispenseInput{ID: n.BundleID, ReplacementOf: n.ReplacementOf, Items: make(map[string]rx.ItemStatus, len(n.Items)),
		Status: rx.Status(n.PrescriptionStatus), Lines: n.dispensedLines(), NonDispensingReason: n.NonDispensingReason}
	for _, it := range n.Items {
		in.Items[it.LineItemID] = rx.ItemStatus(it.Status)
	}
	return in
}

// dispensedLines are the lines of a dispense notification, in message
// order: what the prescription record keeps of each MedicationDispense.
func (n *DispenseNotification) dispensedLines() []rx.DispensedLine {
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
