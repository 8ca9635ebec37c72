// Package nomination is the nominated-dispenser model: a patient's
// nominations (one pharmacy P1, one dispensing appliance contractor P2, one
// dispensing doctor P3), every change to them with who made it, and the
// checks on each. It does no I/O: the broker keeps the registry.
package nomination

import (
	"fmt"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Type is a nomination type: the performer site type it serves.
type Type string

const (
	Pharmacy            Type = "P1"
	ApplianceContractor Type = "P2"
	DispensingDoctor    Type = "P3"
)

// Types are the three nomination types.
var Types = []Type{Pharmacy, ApplianceContractor, DispensingDoctor}

// Valid reports whether t is P1, P2 or P3.
func (t Type) Valid() bool { return t == Pharmacy || t == ApplianceContractor || t == DispensingDoctor }

// By is who made a change: the user, their organisation and role, whether
// they acted on the patient's behalf (prescribers and dispensers do), and
// whether the change was a self-nomination: a dispenser nominating its own
// organisation, the pattern the nomination reports exist to find.
type By struct {
	User           string `json:"user"`
	Org            string `json:"org"`
	Role           string `json:"role"`
	OnBehalfOf     bool   `json:"onBehalfOfPatient"`
	SelfNomination bool   `json:"selfNomination,omitempty"`
}

// RoleDispenser is the role of a dispensing system's user (auth.RoleDispenser).
const RoleDispenser = "dispenser"

// SelfNominating reports whether by, nominating ods, is a dispenser
// nominating its own organisation.
func SelfNominating(by By, ods string) bool {
	return by.Role == RoleDispenser && ods != "" && strings.EqualFold(strings.TrimSpace(by.Org), ods)
}

// Nomination is one nominated dispenser.
type Nomination struct {
	ODS   string    `json:"ods"`
	Since time.Time `json:"since"`
	By    By        `json:"by"`
}

// Change is one change to a patient's nominations.
type Change struct {
	Type Type      `json:"type"`
	From string    `json:"from,omitempty"` // ODS code before ("" when none)
	To   string    `json:"to,omitempty"`   // ODS code after ("" when removed)
	Time time.Time `json:"time"`
	By   By        `json:"by"`
}

// IsSelfNomination reports whether the change was a dispenser nominating
// its own organisation: recorded so (By.SelfNomination), or, for a change
// recorded before the flag existed, made by a dispenser whose organisation
// is the new nominated dispenser.
func (c *Change) IsSelfNomination() bool {
	return c.To != "" && c.From != c.To && (c.By.SelfNomination || SelfNominating(c.By, c.To))
}

// Patient is a patient's nominations after a change, and that change.
type Patient struct {
	NHSNumber   string              `json:"nhsNumber"`
	Nominations map[Type]Nomination `json:"nominations"`
	Change      *Change             `json:"change,omitempty"`
}

// Of returns the nominated dispenser of a type, "" when none.
func (p *Patient) Of(t Type) string {
	if p == nil {
		return ""
	}
	return p.Nominations[t].ODS
}

// Check validates a patient's NHS number, a nomination type and (when
// setting) an ODS code, with the error a caller sees.
func Check(nhs string, t Type, ods string, setting bool) error {
	switch {
	case !fhir.ValidNHSNumber(nhs):
		return fhir.Invalid(fhir.CodeInvalidValue, "value", "nhsNumber", "%q is not a valid NHS number (10 digits, modulus 11 check)", nhs)
	case !t.Valid():
		return fhir.Invalid(fhir.CodeInvalidValue, "value", "type", "nomination type %q: want P1 (pharmacy), P2 (appliance contractor) or P3 (dispensing doctor)", t)
	case setting && !fhir.ValidODSCode(ods):
		return fhir.Invalid(fhir.CodeInvalidValue, "value", "ods", "%q is not a valid ODS code (3 to 8 capital letters and digits)", ods)
	}
	return nil
}

// Set returns the patient's nominations with type t set to ods by by at
// now; nil when nothing changes (already so). A dispenser nominating its
// own organisation is recorded as a self-nomination (By.SelfNomination).
func Set(cur *Patient, nhs string, t Type, ods string, by By, now time.Time) *Patient {
	from := cur.Of(t)
	if from == ods {
		return nil
	}
	by.SelfNomination = SelfNominating(by, ods)
	n := clone(cur, nhs)
	n.Nominations[t] = Nomination{ODS: ods, Since: now.UTC(), By: by}
	n.Change = &Change{Type: t, From: from, To: ods, Time: now.UTC(), By: by}
	return n
}

// Remove returns the patient's nominations without type t; nil when there
// was none.
func Remove(cur *Patient, nhs string, t Type, by By, now time.Time) *Patient {
	from := cur.Of(t)
	if from == "" {
		return nil
	}
	by.SelfNomination = false
	n := clone(cur, nhs)
	delete(n.Nominations, t)
	n.Change = &Change{Type: t, From: from, Time: now.UTC(), By: by}
	return n
}

func clone(cur *Patient, nhs string) *Patient {
	n := &Patient{NHSNumber: nhs, Nominations: map[Type]Nomination{}}
	if cur != nil {
		for k, v := range cur.Nominations {
			n.Nominations[k] = v
		}
	}
	return n
}

// String describes a change for logs (no patient identifiers).
func (c *Change) String() string {
	self := ""
	if c.IsSelfNomination() {
		self = " (self-nomination)"
	}
	return fmt.Sprintf("%s %s -> %s by %s/%s%s", c.Type, c.From, c.To, c.By.Org, c.By.Role, self)
}
