package httpapi

import (
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// A prescriber reads the prescriptions its organisation sent (Prescriber:
// the sending token's organisation), never those whose message merely
// names it as the requester's organisation (PrescriberOrg), in search
// (the index entry) and detail (the record) alike.
func TestMayReadPrescriberBySender(t *testing.T) {
	rec := &rx.Prescription{ID: "24F5DA-A83008-7EFE6Z", Prescriber: "Y90001", PrescriberOrg: "A83008",
		Issue: rx.Issue{Nominated: "FA565", Dispenser: "FCG71"}}
	entry := tracker.Entry{ID: rec.ID, Prescriber: rec.Prescriber, PrescOrg: rec.PrescriberOrg, Nominated: "FA565", Dispenser: "FCG71"}
	cases := []struct {
		role auth.Role
		ods  string
		want bool
	}{
		{auth.RolePrescriber, "Y90001", true},
		{auth.RolePrescriber, "A83008", false}, // named by the message only
		{auth.RolePrescriber, "B81001", false},
		{auth.RoleDispenser, "FA565", true},
		{auth.RoleDispenser, "FCG71", true},
		{auth.RoleDispenser, "A83008", false},
		{auth.RoleTracker, "X26", true},
		{auth.RoleAdmin, "X26", true},
	}
	for _, c := range cases {
		p := auth.Principal{Subject: "u", ODS: c.ods, Role: c.role}
		if got := mayRead(p, rec); got != c.want {
			t.Errorf("mayRead %s %s = %v, want %v", c.role, c.ods, got, c.want)
		}
		if got := mayReadEntry(p, entry); got != c.want {
			t.Errorf("mayReadEntry %s %s = %v, want %v", c.role, c.ods, got, c.want)
		}
	}
}

// A record of early cancellations only is shown to no prescriber, not even
// the one that cancelled: otherwise it would see the ID turn into another
// organisation's prescription (403) when that order arrived.
func TestMayReadEarlyCancellation(t *testing.T) {
	early := rx.EarlyCancellation("24F5DA-A83008-7EFE6Z", rx.Actor{User: "u", Org: "B81001"},
		rx.CancelInput{MessageID: "m", NHSNumber: "9449305552", LineItemID: "i1"}, time.Now())
	entry := tracker.Entry{ID: early.ID, NHSNumber: early.NHSNumber, Status: early.Status, Prescriber: early.Prescriber}
	for _, c := range []struct {
		role auth.Role
		want bool
	}{{auth.RolePrescriber, false}, {auth.RoleDispenser, false}, {auth.RoleTracker, true}, {auth.RoleAdmin, true}} {
		p := auth.Principal{Subject: "u", ODS: "B81001", Role: c.role}
		if got := mayRead(p, early); got != c.want {
			t.Errorf("mayRead %s = %v, want %v", c.role, got, c.want)
		}
		if got := mayReadEntry(p, entry); got != c.want {
			t.Errorf("mayReadEntry %s = %v, want %v", c.role, got, c.want)
		}
	}
}
