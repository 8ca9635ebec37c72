package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Identifier systems read by DecodeOrderDetails.
const (
	SystemSDSUserID        = "https://fhir.nhs.uk/Id/sds-user-id"
	SystemSDSRoleProfileID = "https://fhir.nhs.uk/Id/sds-role-profile-id"
)

// OrderDetails is what the clinical prescription tracker shows of an
// accepted prescription-order beyond the prescription record: the patient's
// demographics, the prescriber and the line items as the order named them.
type OrderDetails struct {
	Patient    PatientDetails
	Prescriber PrescriberDetails // from the requester PractitionerRole -> Practitioner and Organization
	Items      []ItemDetails     // in MedicationRequest order
	AuthoredOn string            // the first MedicationRequest's authoredOn, as in the message; may be empty
	// PrescriptionTypeDisplay is the display of the Extension-DM-PrescriptionType
	// coding, as in the message; may be empty.
	PrescriptionTypeDisplay string
}

// PatientDetails is the order's Patient.
type PatientDetails struct {
	NHSNumber  string
	Prefix     string   // the name's prefixes, space separated (e.g. MS)
	Family     string   // family name
	Gender     string   // FHIR administrative gender (male, female, other, unknown)
	BirthDate  string   // FHIR date, as in the message
	Given      []string // given names, in order
	Address    []string // the home (or else first) address: its lines, then city, district and state
	PostalCode string
}

// PrescriberDetails is the order's requester: the PractitionerRole, its
// Practitioner and its Organization.
type PrescriberDetails struct {
	PractitionerName string // e.g. DR C BOIN: the name's text, or prefix, given and family names
	SDSUserID        string // Practitioner identifier https://fhir.nhs.uk/Id/sds-user-id
	RoleProfileID    string // PractitionerRole identifier https://fhir.nhs.uk/Id/sds-role-profile-id
	OrgODS           string // the organisation's ODS code
	OrgName          string // the Organization's name (or the organization reference's display)
	Telecom          string // the PractitionerRole's first telecom value, or else the Organization's
}

// ItemDetails is one MedicationRequest (line item) of the order.
type ItemDetails struct {
	ID                string // line item id (identifier system .../prescription-order-item-number)
	MedicationCode    string // medicationCodeableConcept.coding[0].code (dm+d)
	MedicationDisplay string // its display, or else medicationCodeableConcept.text
	Dosage            string // the dosageInstruction texts, joined by "; "
	Quantity          float64
	QuantityUnit      string
	RepeatsAllowed    int // dispenseRequest.numberOfRepeatsAllowed
}

// DecodeOrderDetails reads the tracker's OrderDetails from the original
// bytes of an accepted prescription-order message. It resolves references as
// Order does. The message has been validated when it was accepted, so the
// reading is lenient: an element of an unexpected JSON type is left empty
// rather than failing the whole view. It fails only when order is not a
// prescription-order message with at least one MedicationRequest.
func DecodeOrderDetails(order []byte) (*OrderDetails, error) {
	const op = "decode order details"
	m, err := decodeMessage(order)
	if err != nil {
		err.Op = op
		return nil, err
	}
	if m.Event != EventPrescriptionOrder {
		err := badValue("MessageHeader.eventCoding.code",
			"MessageHeader.eventCoding.code is %s: only a prescription-order message holds an order", quote(m.Event))
		err.Op = op
		return nil, err
	}
	refs, err := newRefIndex(m.Entries)
	if err != nil {
		err.Op = op
		return nil, err
	}
	x := &detailsReader{m: m, refs: refs}
	d := &OrderDetails{}
	first := -1
	var firstMR detMedicationRequest
	for k, e := range m.Entries {
		if e.ResourceType != "MedicationRequest" {
			continue
		}
		var mr detMedicationRequest
		if err := decodeLenient(e.Resource, &mr); err != nil {
			return nil, &Error{Kind: KindInvalid, Op: op, IssueType: "structure", Code: CodeInvalidValue,
				Diagnostics: "Bundle.entry[" + strconv.Itoa(k) + "].resource is not a MedicationRequest object", Err: err}
		}
		if first < 0 {
			first, firstMR = k, mr
		}
		d.Items = append(d.Items, mr.item(x, k))
	}
	if first < 0 {
		err := missing("Bundle.entry.resource.ofType(MedicationRequest)", "the prescription-order has no MedicationRequest")
		err.Op = op
		return nil, err
	}
	d.AuthoredOn = firstMR.AuthoredOn
	for _, ext := range firstMR.Extension {
		if ext.URL == ExtPrescriptionType && ext.ValueCoding != nil {
			d.PrescriptionTypeDisplay = ext.ValueCoding.Display
		}
	}
	d.Patient = x.patient(firstMR.Subject.Reference, first)
	d.Prescriber = x.prescriber(firstMR.Requester.Reference, first)
	return d, nil
}

// detailsReader finds the resources of one message by reference.
type detailsReader struct {
	m    *Message
	refs *refIndex
}

// resolve returns the resource that ref, held by the resource of entry
// holder, designates (a Bundle entry's or a contained resource), the entry
// index where it is, and its resourceType; nil when ref does not resolve.
func (x *detailsReader) resolve(ref string, holder int) (res []byte, k int, typ string) {
	k = x.refs.resolve([]byte(ref), holder)
	if k < 0 {
		return nil, -1, ""
	}
	if len(ref) > 1 && ref[0] == '#' {
		var h struct {
			Contained []json.RawMessage `json:"contained"`
		}
		_ = decodeLenient(x.m.Entries[k].Resource, &h)
		for _, c := range h.Contained {
			var head struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if decodeLenient(c, &head) == nil && head.ID == ref[1:] {
				return c, k, head.ResourceType
			}
		}
		return nil, -1, ""
	}
	return x.m.Entries[k].Resource, k, x.m.Entries[k].ResourceType
}

// patient reads the Patient that ref (the first MedicationRequest's subject,
// in entry holder) designates, or else the Bundle's first Patient.
func (x *detailsReader) patient(ref string, holder int) PatientDetails {
	res, _, typ := x.resolve(ref, holder)
	if typ != "Patient" {
		res = nil
		for _, e := range x.m.Entries {
			if e.ResourceType == "Patient" {
				res = e.Resource
				break
			}
		}
	}
	var p detPatient
	if res == nil || decodeLenient(res, &p) != nil {
		return PatientDetails{}
	}
	out := PatientDetails{NHSNumber: identifierValue(p.Identifier, SystemNHSNumber), Gender: p.Gender, BirthDate: p.BirthDate}
	if len(p.Name) > 0 {
		n := p.Name[0]
		out.Prefix, out.Family = strings.Join(n.Prefix, " "), n.Family
		out.Given = append([]string(nil), n.Given...)
	}
	if len(p.Address) > 0 {
		a := p.Address[0]
		for _, cand := range p.Address {
			if cand.Use == "home" {
				a = cand
				break
			}
		}
		out.Address = append(out.Address, a.Line...)
		for _, s := range []string{a.City, a.District, a.State} {
			if s != "" {
				out.Address = append(out.Address, s)
			}
		}
		out.PostalCode = a.PostalCode
	}
	return out
}

// prescriber reads the requester that ref (in entry holder) designates: a
// PractitionerRole with its Practitioner and Organization, or a
// Practitioner.
func (x *detailsReader) prescriber(ref string, holder int) PrescriberDetails {
	var out PrescriberDetails
	res, k, typ := x.resolve(ref, holder)
	switch typ {
	case "Practitioner":
		x.practitioner(res, &out)
		return out
	case "PractitionerRole":
	default:
		return out
	}
	var role detPractitionerRole
	if decodeLenient(res, &role) != nil {
		return out
	}
	out.RoleProfileID = identifierValue(role.Identifier, SystemSDSRoleProfileID)
	out.Telecom = firstTelecom(role.Telecom)
	if res, _, typ := x.resolve(role.Practitioner.Reference, k); typ == "Practitioner" {
		x.practitioner(res, &out)
	}
	out.OrgODS, out.OrgName = role.Organization.Identifier.Value, role.Organization.Display
	if res, _, typ := x.resolve(role.Organization.Reference, k); typ == "Organization" {
		var org detOrganization
		if decodeLenient(res, &org) == nil {
			if ods := identifierValue(org.Identifier, SystemODSCode); ods != "" {
				out.OrgODS = ods
			}
			if org.Name != "" {
				out.OrgName = org.Name
			}
			if out.Telecom == "" {
				out.Telecom = firstTelecom(org.Telecom)
			}
		}
	}
	return out
}

// practitioner reads a Practitioner's name and SDS user ID into out.
func (x *detailsReader) practitioner(res []byte, out *PrescriberDetails) {
	var p detPractitioner
	if decodeLenient(res, &p) != nil {
		return
	}
	out.SDSUserID = identifierValue(p.Identifier, SystemSDSUserID)
	if len(p.Name) > 0 {
		out.PractitionerName = p.Name[0].String()
	}
}

// decodeLenient unmarshals a resource into v. An element whose JSON type
// does not fit v is left empty (encoding/json then goes on with the rest):
// only malformed JSON is an error.
func decodeLenient(res []byte, v any) error {
	err := json.Unmarshal(res, v)
	if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return nil
	}
	return err
}

func identifierValue(ids []detIdentifier, system string) string {
	for _, id := range ids {
		if id.System == system {
			return id.Value
		}
	}
	return ""
}

func firstTelecom(ts []detContactPoint) string {
	for _, t := range ts {
		if t.Value != "" {
			return t.Value
		}
	}
	return ""
}

// The det* types hold, for encoding/json, the elements of the order's
// resources that OrderDetails shows.

type detIdentifier struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type detReference struct {
	Reference  string        `json:"reference"`
	Identifier detIdentifier `json:"identifier"`
	Display    string        `json:"display"`
}

type detContactPoint struct {
	System string `json:"system"`
	Value  string `json:"value"`
}

type detHumanName struct {
	Text   string   `json:"text"`
	Family string   `json:"family"`
	Given  []string `json:"given"`
	Prefix []string `json:"prefix"`
}

// String is the name's text, or else its prefixes, given names and family
// name separated by spaces.
func (n detHumanName) String() string {
	if n.Text != "" {
		return n.Text
	}
	parts := append(append(append([]string(nil), n.Prefix...), n.Given...), n.Family)
	return strings.Join(strings.Fields(strings.Join(parts, " ")), " ")
}

type detAddress struct {
	Use        string   `json:"use"`
	Line       []string `json:"line"`
	City       string   `json:"city"`
	District   string   `json:"district"`
	State      string   `json:"state"`
	PostalCode string   `json:"postalCode"`
}

type detPatient struct {
	Identifier []detIdentifier `json:"identifier"`
	Name       []detHumanName  `json:"name"`
	Gender     string          `json:"gender"`
	BirthDate  string          `json:"birthDate"`
	Address    []detAddress    `json:"address"`
}

type detPractitioner struct {
	Identifier []detIdentifier `json:"identifier"`
	Name       []detHumanName  `json:"name"`
}

type detPractitionerRole struct {
	Identifier   []detIdentifier   `json:"identifier"`
	Practitioner detReference      `json:"practitioner"`
	Organization detReference      `json:"organization"`
	Telecom      []detContactPoint `json:"telecom"`
}

type detOrganization struct {
	Identifier []detIdentifier   `json:"identifier"`
	Name       string            `json:"name"`
	Telecom    []detContactPoint `json:"telecom"`
}

type detMedicationRequest struct {
	Extension []struct {
		URL         string  `json:"url"`
		ValueCoding *Coding `json:"valueCoding"`
	} `json:"extension"`
	Identifier                []detIdentifier `json:"identifier"`
	MedicationCodeableConcept Concept         `json:"medicationCodeableConcept"`
	MedicationReference       detReference    `json:"medicationReference"`
	Subject                   detReference    `json:"subject"`
	Requester                 detReference    `json:"requester"`
	AuthoredOn                string          `json:"authoredOn"`
	DosageInstruction         []struct {
		Text string `json:"text"`
	} `json:"dosageInstruction"`
	DispenseRequest struct {
		Quantity struct {
			Value float64 `json:"value"`
			Unit  string  `json:"unit"`
		} `json:"quantity"`
		NumberOfRepeatsAllowed flexInt `json:"numberOfRepeatsAllowed"`
	} `json:"dispenseRequest"`
}

// item is the line item mr, in entry k, describes. Its medication is the
// SNOMED CT coding, wherever it stands, of medicationCodeableConcept or of
// the Medication that medicationReference names (as Order reads it).
func (mr *detMedicationRequest) item(x *detailsReader, k int) ItemDetails {
	it := ItemDetails{
		ID:             identifierValue(mr.Identifier, SystemLineItemID),
		Quantity:       mr.DispenseRequest.Quantity.Value,
		QuantityUnit:   mr.DispenseRequest.Quantity.Unit,
		RepeatsAllowed: int(mr.DispenseRequest.NumberOfRepeatsAllowed),
	}
	med := mr.MedicationCodeableConcept
	if len(med.Coding) == 0 && mr.MedicationReference.Reference != "" {
		if res, _, typ := x.resolve(mr.MedicationReference.Reference, k); typ == "Medication" {
			var m struct {
				Code Concept `json:"code"`
			}
			if decodeLenient(res, &m) == nil {
				med = m.Code
			}
		}
	}
	if len(med.Coding) > 0 {
		c := med.Coding[0]
		for _, cd := range med.Coding {
			if cd.System == SystemSNOMED {
				c = cd
				break
			}
		}
		it.MedicationCode, it.MedicationDisplay = c.Code, c.Display
	}
	if it.MedicationDisplay == "" {
		it.MedicationDisplay = med.Text
	}
	var dosage []string
	for _, di := range mr.DosageInstruction {
		if di.Text != "" {
			dosage = append(dosage, di.Text)
		}
	}
	it.Dosage = strings.Join(dosage, "; ")
	return it
}

// flexInt is a whole number sent as a JSON number or as a string of digits
// ("6"): EPS accepts numberOfRepeatsAllowed either way.
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("not a whole number: %s", b)
	}
	*n = flexInt(v)
	return nil
}
