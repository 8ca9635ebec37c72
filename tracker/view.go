package tracker

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	fm "github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// The tracker's FHIR views: the searchset Bundles that GET
// /FHIR/R4/RequestGroup answers, shaped like the NHS Clinical Prescription
// Tracker API's (prescriptionSearch and clinicalView). They are built from
// the prescription record and, for the detail view, from the details of the
// original order message. The output is deterministic: every fullUrl is a
// name-based UUID derived from an identifier (the NHS number, the
// prescription ID, the line item id), so the same state always gives the
// same bytes and a Patient has the same fullUrl in every Bundle.
//
// The resources are the FHIR R4 types of github.com/samply/golang-fhir-models
// (fm), written by encoding/json (see the types at the end of this file for
// where they are wrapped and why).

// Extension URLs and code systems of the tracker views.
const (
	extStatusHistory         = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-PrescriptionStatusHistory"
	extPendingCancellation   = "https://fhir.nhs.uk/StructureDefinition/Extension-PendingCancellation"
	extRepeatInformation     = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-RepeatInformation"
	extDispensingInformation = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-DispensingInformation"
	extParticipantType       = "http://hl7.org/fhir/5.0/StructureDefinition/extension-RequestOrchestration.action.participant.typeReference"
	extNonDispensingReason   = "https://fhir.nhs.uk/StructureDefinition/Extension-DM-PrescriptionNonDispensingReason"
	extTaskBusinessStatus    = "https://fhir.nhs.uk/StructureDefinition/Extension-EPS-TaskBusinessStatus"
	// ExtSearchCategory is the broker's extension on every RequestGroup of
	// the tracker views: valueString current, future or past (Category).
	ExtSearchCategory = "https://github.com/nhs-eps/epsbroker/StructureDefinition/search-category"
	// ExtNominationSource says on the detail's RequestGroup how the
	// nominated dispenser was found: "order" (named by the order),
	// "registry" (the patient's nomination) or "none".
	ExtNominationSource = "https://github.com/nhs-eps/epsbroker/StructureDefinition/nomination-source"
	// ExtIssueAvailableFrom says on the detail's RequestGroup of a later
	// repeat dispensing issue (2..N) from when it may become downloadable
	// (valueDateTime): the prescription date + days supply x (issue - 1) -
	// 7 days, and not before the issue before it is complete.
	ExtIssueAvailableFrom = "https://github.com/nhs-eps/epsbroker/StructureDefinition/issue-available-from"

	systemPrescriptionType = "https://fhir.nhs.uk/CodeSystem/prescription-type"
	systemSiteType         = "https://fhir.nhs.uk/CodeSystem/dispensing-site-preference"
	systemMessageID        = "https://tools.ietf.org/html/rfc4122"
	systemSNOMED           = "http://snomed.info/sct"
	systemCancelReason     = "https://fhir.nhs.uk/CodeSystem/medicationrequest-status-reason"
	systemNonDispensing    = "https://fhir.nhs.uk/CodeSystem/medicationdispense-status-reason"
)

// Categories of the tracker's search results (Category).
const (
	CategoryCurrent = "current"
	CategoryFuture  = "future"
	CategoryPast    = "past"
)

// Category is the group the tracker shows a prescription in: current (To Be
// Dispensed, With Dispenser, With Dispenser - Active), future (awaiting
// release ready, future repeat dispensing or post-dated instances) or past
// (expired, cancelled, dispensed, not dispensed, claimed, no-claimed). It is
// "" for an unknown status.
func Category(s rx.Status) string {
	switch s {
	case rx.StatusToBeDispensed, rx.StatusWithDispenser, rx.StatusWithDispenserActive:
		return CategoryCurrent
	case rx.StatusAwaitingReleaseReady, rx.StatusRepeatFuture, rx.StatusFuture:
		return CategoryFuture
	case rx.StatusExpired, rx.StatusCancelled, rx.StatusDispensed, rx.StatusNotDispensed, rx.StatusClaimed, rx.StatusNoClaimed, rx.StatusCancelledFuture:
		return CategoryPast
	}
	return ""
}

// requestStatus is the RequestGroup.status of a prescription status: active
// when current, on-hold when future, revoked when cancelled, completed when
// otherwise past.
func requestStatus(s rx.Status) fm.RequestStatus {
	if s == rx.StatusCancelled || s == rx.StatusCancelledFuture {
		return fm.RequestStatusRevoked
	}
	switch Category(s) {
	case CategoryCurrent:
		return fm.RequestStatusActive
	case CategoryFuture:
		return fm.RequestStatusOnHold
	case CategoryPast:
		return fm.RequestStatusCompleted
	}
	return fm.RequestStatusUnknown
}

// SearchResult is one prescription found by a tracker search.
type SearchResult struct {
	Record  *rx.Prescription
	Patient fhir.PatientDetails // from the order message; may be empty
}

// SearchBundle is the searchset Bundle of a tracker search, like the NHS
// tracker API's prescriptionSearch: for each distinct patient a Patient
// (search mode include: NHS number and name), then a RequestGroup (mode
// match) per prescription, newest first (Created descending, then ID): its
// short prescription ID, its Patient, status, intent, issue date, status
// history, repeat information, pending cancellation and category. A repeat
// dispensing prescription has a RequestGroup per issue, in issue order (like
// the NHS example 200_With7InstanceErd): the same identifier, each with its
// own status, repeat information (issue n of N), pending cancellation and
// category. total is the number of RequestGroups. Results without a Record
// are skipped.
func SearchBundle(results []SearchResult) []byte {
	rs := make([]SearchResult, 0, len(results))
	for _, r := range results {
		if r.Record != nil {
			rs = append(rs, r)
		}
	}
	slices.SortStableFunc(rs, func(a, b SearchResult) int {
		if c := b.Record.Created.Compare(a.Record.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Record.ID, b.Record.ID)
	})

	b := searchset{ResourceType: "Bundle", Type: fm.BundleTypeSearchset, Entry: []entry{}}
	patients := map[string]*patientResource{} // by NHS number
	var matches []entry
	for _, r := range rs {
		rec := r.Record
		nhs := rec.NHSNumber
		if nhs == "" {
			nhs = r.Patient.NHSNumber
		}
		url, _ := urn("Patient", nhs)
		if p, seen := patients[nhs]; !seen {
			p = &patientResource{ResourceType: "Patient", OtherPatient: fm.OtherPatient{
				Identifier: []fm.Identifier{identifier(fhir.SystemNHSNumber, nhs)}, Name: humanNames(r.Patient)}}
			patients[nhs] = p
			b.Entry = append(b.Entry, entry{FullURL: url, Search: modeInclude, Resource: p})
		} else if p.Name == nil {
			p.Name = humanNames(r.Patient)
		}
		for _, is := range issuesOf(rec) {
			rg := searchGroup(is, url)
			recURL, _ := requestGroupURN(is)
			matches = append(matches, entry{FullURL: recURL, Search: modeMatch, Resource: rg})
		}
	}
	b.Entry = append(b.Entry, matches...)
	b.Total = len(matches)
	return encode(b)
}

// searchGroup is the RequestGroup of one search result: rec's current
// issue, whose Patient has the fullUrl patientURL.
func searchGroup(rec *rx.Prescription, patientURL string) *requestGroupResource {
	rg := &requestGroupResource{ResourceType: "RequestGroup", OtherRequestGroup: fm.OtherRequestGroup{
		Identifier: []fm.Identifier{identifier(fhir.SystemPrescriptionID, rec.ID)},
		Subject:    reference(patientURL),
		Status:     requestStatus(rec.Status),
		Intent:     intent(rec.TherapyType),
		AuthoredOn: str(instant(issueDate(rec))),
	}}
	rg.Extension = make([]fm.Extension, 0, 4) // an fm.Extension is large: grown once
	rg.Extension = append(rg.Extension, statusExtension(rec.Status))
	if ext, ok := repeatExtension(rec); ok {
		rg.Extension = append(rg.Extension, ext)
	}
	rg.Extension = append(rg.Extension,
		fm.Extension{Url: extPendingCancellation, Extension: []fm.Extension{
			boolExtension("prescriptionPendingCancellation", prescriptionPendingCancellation(rec)),
			boolExtension("lineItemPendingCancellation", anyLineItemPendingCancellation(rec)),
		}},
		categoryExtension(rec.Status))
	return rg
}

// issuesOf lists what the tracker shows of a prescription, one record per
// issue in issue order, each with that issue as its current one: every
// issue of a repeat dispensing prescription, or the record itself.
func issuesOf(rec *rx.Prescription) []*rx.Prescription {
	if !rec.RepeatDispensing() || len(rec.Others) == 0 {
		return []*rx.Prescription{rec}
	}
	out := make([]*rx.Prescription, 0, rec.IssueCount())
	for _, is := range rec.Issues() {
		if v, ok := rec.AtIssue(is.Number); ok {
			out = append(out, v)
		}
	}
	return out
}

// requestGroupURN is the fullUrl and id of the RequestGroup of rec's current
// issue: named by the prescription ID, and for a repeat dispensing issue by
// the ID and the issue number (ID/n), so that every issue has its own and
// the search and detail views name an issue alike.
func requestGroupURN(rec *rx.Prescription) (fullURL, id string) {
	return urn("RequestGroup", issueKey(rec))
}

// issueKey names rec's current issue: the prescription ID, or ID/n for
// issue n of a repeat dispensing prescription.
func issueKey(rec *rx.Prescription) string {
	if rec.RepeatDispensing() && rec.Number > 0 {
		return rec.ID + "/" + strconv.Itoa(rec.Number)
	}
	return rec.ID
}

// DetailBundle is the searchset Bundle of GET RequestGroup/{id}, like the NHS
// tracker API's clinicalView: the Patient, the prescriber's PractitionerRole
// and a MedicationRequest per line item (search mode include: medication,
// dosage, quantity, item status, the cancellation reason of a cancelled item
// or one marked for cancellation in statusReason, nominated dispenser in
// dispenseRequest.performer and the dispenser that holds it in performer);
// when it has dispense notifications, the dispenser's PractitionerRole and
// a MedicationDispense per item of each notification not withdrawn (its
// medicationdispense-type, non-dispensing reason, product and quantity,
// the MedicationRequest it dispenses, the prescription's status;
// status in-progress for the latest notification, unknown for earlier
// ones); then the RequestGroup (mode match) with the prescription status as
// in SearchBundle (and the cancellation and non-dispensing reasons of the
// prescription), the line items and the message history: an action per
// history event with its time, its title as the NHS tracker names it, the
// status after it and the organisation and user that caused it, a dispense
// notification's with an action per MedicationDispense of it. d holds what
// the order message says of the patient, prescriber and items; when it is
// nil the view shows what the record holds.
//
// It shows rec's current issue: for issue n of a repeat dispensing
// prescription pass rec.AtIssue(n). Its repeat information is then issue n
// of N, its history holds the events about the prescription as a whole and
// those about issue n, and a later issue (2..N) says from when it may
// become downloadable (ExtIssueAvailableFrom).
func DetailBundle(rec *rx.Prescription, d *fhir.OrderDetails) []byte {
	if d == nil {
		d = &fhir.OrderDetails{}
	}
	patientURL, patientID := urn("Patient", rec.NHSNumber)
	roleURL, roleID := urn("PractitionerRole", rec.ID)
	rgURL, rgID := requestGroupURN(rec)

	b := searchset{ResourceType: "Bundle", Type: fm.BundleTypeSearchset, Total: 1}
	b.Entry = append(b.Entry,
		entry{FullURL: patientURL, Search: modeInclude, Resource: detailPatient(patientID, rec.NHSNumber, d.Patient)},
		entry{FullURL: roleURL, Search: modeInclude, Resource: prescriberRole(roleID, rec, d.Prescriber)})

	items := make([]fm.RequestGroupAction, 0, len(rec.Items))
	for _, it := range rec.Items {
		url, id := medicationRequestURN(rec, it)
		mr := medicationRequestOf(id, rec, it, itemDetails(d, it.ID), patientURL, roleURL)
		b.Entry = append(b.Entry, entry{FullURL: url, Search: modeInclude, Resource: mr})
		items = append(items, fm.RequestGroupAction{Resource: reference(url)})
	}
	entries, dispensed := dispenseEntries(rec, d, patientURL)
	b.Entry = append(b.Entry, entries...)

	rg := &requestGroupResource{ResourceType: "RequestGroup", OtherRequestGroup: fm.OtherRequestGroup{
		Id:         str(rgID),
		Identifier: []fm.Identifier{identifier(fhir.SystemPrescriptionID, rec.ID)},
		Subject:    reference(patientURL),
		Status:     requestStatus(rec.Status),
		Intent:     intent(rec.TherapyType),
		AuthoredOn: str(authoredOn(rec, d.AuthoredOn)),
	}}
	if org := firstNonEmpty(rec.PrescriberOrg, rec.Prescriber, d.Prescriber.OrgODS); org != "" {
		rg.Author = &fm.Reference{Identifier: ptr(identifier(fhir.SystemODSCode, org))}
	}
	rg.Extension = make([]fm.Extension, 0, 9) // an fm.Extension is large: grown once
	rg.Extension = append(rg.Extension, statusExtension(rec.Status))
	if rec.NominationSource != "" {
		rg.Extension = append(rg.Extension, fm.Extension{Url: ExtNominationSource, ValueString: str(rec.NominationSource)})
	}
	if rec.PrescriptionType != "" {
		rg.Extension = append(rg.Extension, fm.Extension{Url: fhir.ExtPrescriptionType,
			ValueCoding: coding(systemPrescriptionType, rec.PrescriptionType, d.PrescriptionTypeDisplay)})
	}
	if ext, ok := repeatExtension(rec); ok {
		rg.Extension = append(rg.Extension, ext)
	}
	if rec.RepeatDispensing() && rec.IssueNumber() > 1 && !rec.AvailableAt.IsZero() {
		rg.Extension = append(rg.Extension, fm.Extension{Url: ExtIssueAvailableFrom, ValueDateTime: str(instant(rec.AvailableAt))})
	}
	rg.Extension = append(rg.Extension,
		fm.Extension{Url: extPendingCancellation, Extension: []fm.Extension{
			boolExtension("prescriptionPendingCancellation", prescriptionPendingCancellation(rec)),
		}})
	if reason := prescriptionCancelReason(rec); reason != "" {
		rg.Extension = append(rg.Extension, fm.Extension{Url: extStatusHistory, Extension: []fm.Extension{
			{Url: "cancellationReason", ValueCoding: cancelReasonCoding(reason)}}})
	}
	if reason := prescriptionNonDispensingReason(rec); reason != "" {
		rg.Extension = append(rg.Extension, fm.Extension{Url: extNonDispensingReason, ValueCoding: nonDispensingCoding(reason)})
	}
	rg.Extension = append(rg.Extension, categoryExtension(rec.Status))

	history := make([]fm.RequestGroupAction, 0, len(rec.History))
	for _, ev := range rec.History {
		if !aboutIssue(rec, ev) {
			continue
		}
		if ev.Type == rx.EventOrder && rec.RepeatDispensing() && rec.IssueNumber() > 1 && ev.Status != rx.StatusCancelledFuture {
			ev.Status = rx.StatusRepeatFuture // what the upload made of this issue
		}
		a := historyAction(ev)
		if ev.Type == rx.EventDispense {
			for _, url := range dispensed[strings.ToLower(ev.MessageID)] {
				a.Action = append(a.Action, fm.RequestGroupAction{Resource: reference(url)})
			}
		}
		history = append(history, a)
	}
	rg.Action = []fm.RequestGroupAction{
		{Title: str("Prescription Line Items(Medications)"), TimingTiming: supplyTiming(rec.SupplyDays), Action: items},
		{Title: str("Prescription status transitions"), Action: history},
	}
	b.Entry = append(b.Entry, entry{FullURL: rgURL, Search: modeMatch, Resource: rg})
	return encode(b)
}

// detailPatient is the Patient of the detail view.
func detailPatient(id, nhs string, p fhir.PatientDetails) *patientResource {
	if nhs == "" {
		nhs = p.NHSNumber
	}
	out := &patientResource{ResourceType: "Patient", OtherPatient: fm.OtherPatient{Id: str(id),
		Identifier: []fm.Identifier{identifier(fhir.SystemNHSNumber, nhs)},
		Name:       humanNames(p), BirthDate: str(p.BirthDate), Gender: gender(p.Gender)}}
	if len(p.Address) > 0 || p.PostalCode != "" {
		text := slices.Clone(p.Address)
		if p.PostalCode != "" {
			text = append(text, p.PostalCode)
		}
		out.Address = []fm.Address{{Line: p.Address, PostalCode: str(p.PostalCode), Text: str(strings.Join(text, ", "))}}
	}
	return out
}

// gender is the Patient.gender of the order's, nil when it is none of
// the administrative-gender codes (the order's is not validated: an
// unknown code would make the view invalid FHIR).
func gender(code string) *fm.AdministrativeGender {
	var g fm.AdministrativeGender
	if code == "" || g.UnmarshalJSON([]byte(code)) != nil {
		return nil
	}
	return &g
}

// humanNames is the name of p: prefix, given names and family name; nil
// when p has none of them.
func humanNames(p fhir.PatientDetails) []fm.HumanName {
	if p.Prefix == "" && len(p.Given) == 0 && p.Family == "" {
		return nil
	}
	n := fm.HumanName{Given: p.Given, Family: str(p.Family)}
	if p.Prefix != "" {
		n.Prefix = []string{p.Prefix}
	}
	return []fm.HumanName{n}
}

// prescriberRole is the prescriber's PractitionerRole: its SDS role profile,
// the practitioner's SDS user ID and name, the organisation's ODS code and
// name, and the telephone number.
func prescriberRole(id string, rec *rx.Prescription, p fhir.PrescriberDetails) *practitionerRoleResource {
	r := &practitionerRoleResource{ResourceType: "PractitionerRole", OtherPractitionerRole: fm.OtherPractitionerRole{Id: str(id)}}
	if p.RoleProfileID != "" {
		r.Identifier = []fm.Identifier{identifier(fhir.SystemSDSRoleProfileID, p.RoleProfileID)}
	}
	if p.SDSUserID != "" || p.PractitionerName != "" {
		r.Practitioner = &fm.Reference{Display: str(p.PractitionerName)}
		if p.SDSUserID != "" {
			r.Practitioner.Identifier = ptr(identifier(fhir.SystemSDSUserID, p.SDSUserID))
		}
	}
	org := &fm.Reference{Display: str(p.OrgName)}
	if ods := firstNonEmpty(p.OrgODS, rec.PrescriberOrg, rec.Prescriber); ods != "" {
		org.Identifier = ptr(identifier(fhir.SystemODSCode, ods))
	}
	if org.Display != nil || org.Identifier != nil {
		r.Organization = org
	}
	if p.Telecom != "" {
		r.Telecom = []fm.ContactPoint{{System: ptr(fm.ContactPointSystemPhone), Value: str(p.Telecom), Use: ptr(fm.ContactPointUseWork)}}
	}
	return r
}

// itemDetails returns the details of the line item with the given id (line
// item ids are UUIDs: compared without regard to case).
func itemDetails(d *fhir.OrderDetails, id string) *fhir.ItemDetails {
	for i := range d.Items {
		if strings.EqualFold(d.Items[i].ID, id) {
			return &d.Items[i]
		}
	}
	return nil
}

// medicationRequestOf is the MedicationRequest of line item it; det, when
// not nil, is what the order says of it.
func medicationRequestOf(id string, rec *rx.Prescription, it rx.Item, det *fhir.ItemDetails, patientURL, roleURL string) *medicationRequestResource {
	mr := &medicationRequestResource{ResourceType: "MedicationRequest", OtherMedicationRequest: fm.OtherMedicationRequest{
		Id:              str(id),
		Identifier:      []fm.Identifier{identifier(fhir.SystemLineItemID, it.ID)},
		Subject:         *reference(patientURL),
		Status:          itemRequestStatus(it.Status),
		StatusReason:    itemCancelReason(rec, it),
		Intent:          intent(rec.TherapyType).Code(),
		Requester:       reference(roleURL),
		GroupIdentifier: ptr(identifier(fhir.SystemPrescriptionID, rec.ID)),
	}, Substitution: &substitution{AllowedBoolean: false}}
	dr := &dispenseRequest{}
	code, display := it.Code, ""
	if det != nil {
		code, display = firstNonEmpty(code, det.MedicationCode), det.MedicationDisplay
		if det.Quantity != 0 || det.QuantityUnit != "" {
			dr.Quantity = &fm.Quantity{Value: decimal(det.Quantity), Unit: str(det.QuantityUnit)}
		}
		if det.Dosage != "" {
			mr.DosageInstruction = []fm.Dosage{{Text: str(det.Dosage)}}
		}
		if rec.TherapyType != fhir.TherapyAcute && det.RepeatsAllowed > 0 {
			dr.NumberOfRepeatsAllowed = ptr(det.RepeatsAllowed)
		}
	}
	mr.MedicationCodeableConcept = medication(code, display)
	if t := therapyCoding(rec.TherapyType); t != nil {
		mr.CourseOfTherapyType = &fm.CodeableConcept{Coding: []fm.Coding{*t}}
	}
	if rec.Nominated != "" {
		dr.Performer = odsReference(rec.Nominated)
	}
	if rec.SiteType != "" {
		dr.Extension = []fm.Extension{{Url: fhir.ExtPerformerSiteType,
			ValueCoding: coding(systemSiteType, rec.SiteType, siteTypeDisplays[rec.SiteType])}}
	}
	if dr.Quantity != nil || dr.NumberOfRepeatsAllowed != nil || dr.Performer != nil || dr.Extension != nil {
		mr.DispenseRequest = dr
	}
	if rec.Dispenser != "" {
		mr.Performer = odsReference(rec.Dispenser)
	}
	mr.Extension = []fm.Extension{
		{Url: extDispensingInformation, Extension: []fm.Extension{{Url: "dispenseStatus",
			ValueCoding: coding(rx.SystemItemStatus, string(it.Status), it.Status.Display())}}},
		{Url: extPendingCancellation, Extension: []fm.Extension{
			boolExtension("lineItemPendingCancellation", lineItemPendingCancellation(rec, it))}},
	}
	return mr
}

// medication is the medicationCodeableConcept of a SNOMED CT code and its
// display (the text, and the coding's display); nil when both are empty.
func medication(code, display string) *fm.CodeableConcept {
	if code == "" && display == "" {
		return nil
	}
	c := &fm.CodeableConcept{Text: str(display)}
	if code != "" {
		c.Coding = []fm.Coding{*coding(systemSNOMED, code, display)}
	}
	return c
}

// itemRequestStatus is the MedicationRequest.status of a line item status,
// as the NHS tracker answers: completed when dispensed, stopped when not
// dispensed or expired, cancelled when cancelled, active otherwise.
func itemRequestStatus(s rx.ItemStatus) string {
	switch s {
	case rx.ItemFullyDispensed:
		return "completed"
	case rx.ItemNotDispensed, rx.ItemExpired:
		return "stopped"
	case rx.ItemCancelled:
		return "cancelled"
	case rx.ItemPartiallyDispensed, rx.ItemNotDispensedOwing, rx.ItemToBeDispensed, rx.ItemWithDispenser:
		return "active"
	}
	return "unknown"
}

// medicationRequestURN is the fullUrl and id of the MedicationRequest of
// line item it of rec's current issue.
func medicationRequestURN(rec *rx.Prescription, it rx.Item) (fullURL, id string) {
	return urn("MedicationRequest", issueKey(rec)+"/"+it.ID)
}

// shownDispenses are the dispense notifications of rec's current issue that
// the detail view shows: those not withdrawn (nor replaced by an
// amendment), oldest first.
func shownDispenses(rec *rx.Prescription) []rx.DispenseRecord {
	var out []rx.DispenseRecord
	for _, d := range rec.Dispenses {
		if !d.Withdrawn {
			out = append(out, d)
		}
	}
	return out
}

// dispenseEntries are the entries the detail view shows of rec's dispense
// notifications, as the NHS tracker does: the dispensing organisation's
// PractitionerRole, then a MedicationDispense per line of each notification
// not withdrawn, in message order. It also returns the fullUrls of each
// notification's MedicationDispenses by its (lower-case) message id, for the
// history. A notification recorded before its lines were kept has none.
func dispenseEntries(rec *rx.Prescription, d *fhir.OrderDetails, patientURL string) ([]entry, map[string][]string) {
	shown := shownDispenses(rec)
	if len(shown) == 0 {
		return nil, nil
	}
	var entries, dispenses []entry
	roles := map[string]string{} // dispenser ODS -> PractitionerRole fullUrl
	byMessage := map[string][]string{}
	for k, dn := range shown {
		roleURL, ok := roles[dn.Dispenser]
		if !ok {
			var roleID string
			roleURL, roleID = urn("PractitionerRole", issueKey(rec)+"/dispenser/"+dn.Dispenser)
			roles[dn.Dispenser] = roleURL
			entries = append(entries, entry{FullURL: roleURL, Search: modeInclude, Resource: &practitionerRoleResource{
				ResourceType: "PractitionerRole", OtherPractitionerRole: fm.OtherPractitionerRole{Id: str(roleID),
					Organization: &fm.Reference{Identifier: ptr(identifier(fhir.SystemODSCode, dn.Dispenser))}}}})
		}
		status := "unknown"
		if k == len(shown)-1 {
			status = "in-progress" // the latest notification
		}
		for j, line := range dn.Lines {
			i := slices.IndexFunc(rec.Items, func(it rx.Item) bool { return strings.EqualFold(it.ID, line.LineItem) })
			if i < 0 {
				continue // not a line item of this prescription: nothing to point at
			}
			it := rec.Items[i]
			mrURL, _ := medicationRequestURN(rec, it)
			url, id := urn("MedicationDispense", issueKey(rec)+"/"+strings.ToLower(dn.ID)+"/"+strconv.Itoa(j))
			md := &medicationDispenseResource{ResourceType: "MedicationDispense", OtherMedicationDispense: fm.OtherMedicationDispense{
				Id:                      str(id),
				Identifier:              []fm.Identifier{identifier(fhir.SystemLineItemID, it.ID)},
				Subject:                 reference(patientURL),
				Status:                  status,
				Performer:               []fm.MedicationDispensePerformer{{Actor: *reference(roleURL)}},
				Type:                    &fm.CodeableConcept{Coding: []fm.Coding{*coding(rx.SystemItemStatus, string(line.Status), line.Status.Display())}},
				AuthorizingPrescription: []fm.Reference{*reference(mrURL)},
				Quantity:                &fm.Quantity{Value: decimal(line.Quantity), Unit: str(line.Unit)},
				Extension:               []fm.Extension{{Url: extTaskBusinessStatus, ValueCoding: statusCoding(rec.Status)}},
			}}
			if line.Reason != "" {
				md.StatusReasonCodeableConcept = &fm.CodeableConcept{Coding: []fm.Coding{*nonDispensingCoding(line.Reason)}}
			}
			display := line.Medication
			if det := itemDetails(d, it.ID); det != nil && display == "" && (line.Code == "" || line.Code == det.MedicationCode) {
				display = det.MedicationDisplay
			}
			md.MedicationCodeableConcept = medication(line.Code, display)
			dispenses = append(dispenses, entry{FullURL: url, Search: modeInclude, Resource: md})
			key := strings.ToLower(dn.ID)
			byMessage[key] = append(byMessage[key], url)
		}
	}
	return append(entries, dispenses...), byMessage
}

// itemCancelReason is the MedicationRequest.statusReason of line item it: the
// reason it was cancelled for, or the reason of the cancellation waiting
// for the dispenser; nil when neither.
func itemCancelReason(rec *rx.Prescription, it rx.Item) *fm.CodeableConcept {
	reason := ""
	switch {
	case it.Status == rx.ItemCancelled:
		reason = it.CancelReason
	case lineItemPendingCancellation(rec, it):
		reason = rec.Pending.Reason
	}
	if reason == "" {
		return nil
	}
	return &fm.CodeableConcept{Coding: []fm.Coding{*cancelReasonCoding(reason)}}
}

// prescriptionCancelReason is the cancellation reason of the prescription as
// a whole: when every item is cancelled (that of the last one), or when
// every item not cancelled is marked for cancellation (the pending one's);
// "" otherwise (an item cancelled on its own says so on its
// MedicationRequest).
func prescriptionCancelReason(rec *rx.Prescription) string {
	reason, all := "", len(rec.Items) > 0
	for _, it := range rec.Items {
		switch {
		case it.Status == rx.ItemCancelled:
			reason = firstNonEmpty(it.CancelReason, reason)
		case lineItemPendingCancellation(rec, it):
		default:
			all = false
		}
	}
	if !all {
		return ""
	}
	if rec.Pending != nil && anyLineItemPendingCancellation(rec) {
		return rec.Pending.Reason
	}
	return reason
}

// prescriptionNonDispensingReason is the prescription's non-dispensing
// reason stated by its latest dispense notification not withdrawn.
func prescriptionNonDispensingReason(rec *rx.Prescription) string {
	if shown := shownDispenses(rec); len(shown) > 0 {
		return shown[len(shown)-1].NonDispensingReason
	}
	return ""
}

// cancelReasonDisplays and nonDispensingDisplays are the displays the NHS
// tracker gives the medicationrequest-status-reason and
// medicationdispense-status-reason codes.
var (
	cancelReasonDisplays = map[string]string{
		"0001": "Prescribing Error", "0002": "Clinical contra-indication", "0003": "Change to medication treatment regime",
		"0004": "Clinical grounds", "0005": "At the Patients request", "0006": "At the Pharmacists request",
		"0007": "Notification of Death", "0008": "Patient deducted - other reason",
		"0009": "Patient deducted - registered with new practice",
	}
	nonDispensingDisplays = map[string]string{
		"0001": "Not required as instructed by the patient", "0002": "Clinically unsuitable", "0003": "Owings note issued to patient",
		"0004": "Prescription cancellation", "0005": "Prescription cancellation due to death", "0006": "Illegal NHS prescription",
		"0007": "Prescribed out of scope item", "0008": "Item or prescription expired", "0009": "Not allowed on FP10",
		"0010": "Patient did not collect medication", "0011": "Patient purchased medication over the counter",
	}
)

func cancelReasonCoding(code string) *fm.Coding {
	return coding(systemCancelReason, code, cancelReasonDisplays[code])
}

func nonDispensingCoding(code string) *fm.Coding {
	return coding(systemNonDispensing, code, nonDispensingDisplays[code])
}

// siteTypeDisplays are the displays of the dispensing-site-preference codes.
var siteTypeDisplays = map[string]string{
	"P1":   "Other (e.g. Community Pharmacy)",
	"P2":   "Appliance Contractor",
	"P3":   "Dispensing Doctor",
	"0004": "None",
}

// intent is the RequestGroup and MedicationRequest intent of a course of
// therapy, as the NHS tracker answers: order (acute), instance-order (repeat
// prescribing) or reflex-order (repeat dispensing).
func intent(therapy string) fm.RequestIntent {
	switch therapy {
	case fhir.TherapyContinuous:
		return fm.RequestIntentInstanceOrder
	case fhir.TherapyRepeatDispensing:
		return fm.RequestIntentReflexOrder
	}
	return fm.RequestIntentOrder
}

// therapyCoding is the courseOfTherapyType coding of a course of therapy.
func therapyCoding(therapy string) *fm.Coding {
	display, ok := map[string]string{
		fhir.TherapyAcute:            "Short course (acute) therapy",
		fhir.TherapyContinuous:       "Continuous long term therapy",
		fhir.TherapyRepeatDispensing: "Continuous long term (repeat dispensing)",
	}[therapy]
	if !ok {
		return nil
	}
	return coding(fhir.SystemCourseOfTherapy, therapy, display)
}

// isRepeat reports whether the prescription is one of a series of issues:
// repeat prescribing or repeat dispensing.
func isRepeat(rec *rx.Prescription) bool {
	return rec.TherapyType == fhir.TherapyContinuous || rec.TherapyType == fhir.TherapyRepeatDispensing
}

// issueNumber is the issue of a repeat prescription the record shows: the
// current issue's number for repeat dispensing (1 when there is one issue);
// a repeat prescribing record is one issue, the first.
func issueNumber(rec *rx.Prescription) int {
	if rec.RepeatDispensing() {
		return rec.IssueNumber()
	}
	return 1
}

// issueCount is the number of issues of a repeat prescription: the
// issues the record holds for repeat dispensing, otherwise the order's
// numberOfRepeatsAllowed + 1.
func issueCount(rec *rx.Prescription) int {
	if rec.RepeatDispensing() && len(rec.Others) > 0 {
		return rec.IssueCount()
	}
	return rec.RepeatsAllowed + 1
}

// repeatExtension is the Extension-EPS-RepeatInformation of a repeat
// prescription: which issue it is and how many issues there are (the NHS
// tracker's numberOfRepeatsAllowed counts issues: the order's
// numberOfRepeatsAllowed + 1).
func repeatExtension(rec *rx.Prescription) (fm.Extension, bool) {
	if !isRepeat(rec) {
		return fm.Extension{}, false
	}
	return fm.Extension{Url: extRepeatInformation, Extension: []fm.Extension{
		intExtension("numberOfRepeatsIssued", issueNumber(rec)),
		intExtension("numberOfRepeatsAllowed", issueCount(rec)),
	}}, true
}

// aboutIssue reports whether the detail of rec's current issue shows the
// history event ev: every event of a prescription that is not repeat
// dispensing; for repeat dispensing those about the prescription as a
// whole (Issue 0) and those about the current issue.
func aboutIssue(rec *rx.Prescription, ev rx.Event) bool {
	if !rec.RepeatDispensing() || ev.Issue == 0 {
		return true
	}
	return ev.Issue == rec.IssueNumber()
}

// prescriptionPendingCancellation reports whether a cancellation waits for
// the dispenser (marked for cancellation while it is with them).
func prescriptionPendingCancellation(rec *rx.Prescription) bool { return rec.Pending != nil }

// lineItemPendingCancellation reports whether a cancellation of line item it
// waits for the dispenser.
func lineItemPendingCancellation(rec *rx.Prescription, it rx.Item) bool {
	return rec.Pending != nil && slices.Contains(rec.Pending.Items, it.ID)
}

// anyLineItemPendingCancellation reports whether any line item has a
// pending cancellation.
func anyLineItemPendingCancellation(rec *rx.Prescription) bool {
	return slices.ContainsFunc(rec.Items, func(it rx.Item) bool { return lineItemPendingCancellation(rec, it) })
}

func statusExtension(s rx.Status) fm.Extension {
	return fm.Extension{Url: extStatusHistory, Extension: []fm.Extension{{Url: "status", ValueCoding: statusCoding(s)}}}
}

func statusCoding(s rx.Status) *fm.Coding {
	return coding(rx.SystemPrescriptionStatus, string(s), s.Display())
}

func categoryExtension(s rx.Status) fm.Extension {
	return fm.Extension{Url: ExtSearchCategory, ValueString: str(Category(s))}
}

func boolExtension(url string, v bool) fm.Extension { return fm.Extension{Url: url, ValueBoolean: &v} }

func intExtension(url string, v int) fm.Extension { return fm.Extension{Url: url, ValueInteger: &v} }

// supplyTiming is the line items' timing: once every days supply (Spine's
// default, rx.DefaultSupplyDays, for an order that does not say).
func supplyTiming(days int) *fm.Timing {
	if days <= 0 {
		days = rx.DefaultSupplyDays
	}
	return &fm.Timing{Repeat: &fm.TimingRepeat{Frequency: ptr(1), Period: decimal(float64(days)), PeriodUnit: str("d")}}
}

// eventTitles names the history events as the NHS tracker does, by
// Event.Type. A type missing here shows as itself.
var eventTitles = map[string]string{
	rx.EventOrder:            "Prescription upload successful",
	rx.EventRelease:          "Release Request successful",
	rx.EventNominatedRelease: "Nominated Release Request successful",
	rx.EventDispense:         "Dispense notification successful",
	rx.EventClaim:            "Dispense claim successful",
	rx.EventReturn:           "Dispense proposal return successful",
	rx.EventWithdraw:         "Dispense Withdrawal successful",
	rx.EventCancel:           "Prescription/item was cancelled",
	rx.EventSubsequentCancel: "Subsequent cancellation",
	rx.EventAwaiting:         "Awaiting release ready",
	rx.EventReady:            "Available for download",
	rx.EventExpire:           "Prescription expired",
	rx.EventComplete:         "Completed: no dispense for 180 days",
	rx.EventNoClaim:          "Not claimed within 180 days",
}

// eventTitle is the title of a history event. A cancellation that finds the
// prescription with a dispenser marks it for cancellation instead.
func eventTitle(ev rx.Event) string {
	if ev.Type == fhir.EventPrescriptionOrderUpdate {
		switch ev.Status {
		case rx.StatusWithDispenser:
			return "Prescription/item was not cancelled. With dispenser. Marked for cancellation"
		case rx.StatusWithDispenserActive:
			return "Prescription/item was not cancelled. With dispenser active. Marked for cancellation"
		}
	}
	if t, ok := eventTitles[ev.Type]; ok {
		return t
	}
	return ev.Type
}

// historyAction is the action of one history event: title, time, the status
// after it (and the message id of a dispense notification), and who caused
// it: the organisation (ODS code) and the user (SDS user ID).
func historyAction(ev rx.Event) fm.RequestGroupAction {
	a := fm.RequestGroupAction{Title: str(eventTitle(ev)), TimingDateTime: str(instant(ev.Time)),
		Code: []fm.CodeableConcept{{Coding: []fm.Coding{*statusCoding(ev.Status)}}}}
	if ev.Type == fhir.EventDispenseNotification && ev.MessageID != "" {
		a.Code = append(a.Code, fm.CodeableConcept{Coding: []fm.Coding{*coding(systemMessageID, ev.MessageID, "")}})
	}
	if ev.Org != "" {
		a.Participant = append(a.Participant, participantOf(fhir.SystemODSCode, ev.Org))
	}
	if ev.User != "" {
		a.Participant = append(a.Participant, participantOf(fhir.SystemSDSUserID, ev.User))
	}
	return a
}

// participantOf is an action's participant: an R4 Reference (typeReference
// of R5's RequestOrchestration, as an extension, like the NHS tracker).
func participantOf(system, value string) fm.Reference {
	return fm.Reference{Extension: []fm.Extension{{Url: extParticipantType,
		ValueReference: &fm.Reference{Identifier: ptr(identifier(system, value))}}}}
}

// issueDate is the date the prescription is issued on: its start date, or
// else when it was created.
func issueDate(rec *rx.Prescription) time.Time {
	if !rec.StartDate.IsZero() {
		return rec.StartDate
	}
	return rec.Created
}

// authoredOn is the RequestGroup.authoredOn of the detail view: the order's
// own authoredOn when it has one (a dateTime in the views' format, or a date
// as it is), else the issue date.
func authoredOn(rec *rx.Prescription, fromOrder string) string {
	if fromOrder == "" {
		return instant(issueDate(rec))
	}
	if t, err := time.Parse(time.RFC3339Nano, fromOrder); err == nil {
		return instant(t)
	}
	return fromOrder
}

// instantLayout is how the NHS tracker writes instants: UTC, milliseconds.
const instantLayout = "2006-01-02T15:04:05.000Z07:00"

// instant formats t as the tracker does; "" for the zero time.
func instant(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(instantLayout)
}

// uuidNamespaceURL is the RFC 9562 namespace for names that are URLs.
var uuidNamespaceURL = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// nameUUID is the name-based UUID (version 5, SHA-1) of name in namespace ns.
func nameUUID(ns [16]byte, name string) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(name))
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	var buf [36]byte
	hex.Encode(buf[0:8], u[0:4])
	buf[8] = '-'
	hex.Encode(buf[9:13], u[4:6])
	buf[13] = '-'
	hex.Encode(buf[14:18], u[6:8])
	buf[18] = '-'
	hex.Encode(buf[19:23], u[8:10])
	buf[23] = '-'
	hex.Encode(buf[24:], u[10:])
	return string(buf[:])
}

// urn returns the fullUrl (urn:uuid:...) and the id of the resource of the
// given type that stands for key (an NHS number, a prescription ID...): the
// UUID of the URL https://github.com/nhs-eps/epsbroker/<type>/<key>.
func urn(resourceType, key string) (fullURL, id string) {
	id = nameUUID(uuidNamespaceURL, "https://github.com/nhs-eps/epsbroker/"+resourceType+"/"+key)
	return "urn:uuid:" + id, id
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// odsReference is the reference to an organisation by its ODS code.
func odsReference(ods string) *odsIdentifiers {
	return &odsIdentifiers{Identifier: []fm.Identifier{identifier(fhir.SystemODSCode, ods)}}
}

// encode marshals a view. The views hold only strings, booleans, whole
// numbers and decimals written by decimal, so marshalling cannot fail.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("tracker: encoding a view: %v", err))
	}
	return b
}

// The views' elements are samply's FHIR R4 types (fm), with their optional
// elements as pointers. FHIR has no empty strings, objects or arrays: the
// helpers below leave an element out rather than write it empty.

// str is s as an optional string element: nil when s is empty.
func str(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ptr is a pointer to v.
func ptr[T any](v T) *T { return &v }

func identifier(system, value string) fm.Identifier {
	return fm.Identifier{System: str(system), Value: str(value)}
}

func reference(url string) *fm.Reference { return &fm.Reference{Reference: str(url)} }

func coding(system, code, display string) *fm.Coding {
	return &fm.Coding{System: str(system), Code: str(code), Display: str(display)}
}

// decimal is v as a FHIR decimal, written as encoding/json writes a
// float64 (samply holds decimals as json.Number); nil when v is not a
// finite number, which JSON cannot write.
func decimal(v float64) *json.Number {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	format, abs := byte('f'), math.Abs(v)
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(nil, v, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2], b = b[n-1], b[:n-1] // e-07 is e-7, as encoding/json writes it
	}
	n := json.Number(b)
	return &n
}

// searchset is the searchset Bundle of a view. It is not samply's Bundle:
// the NHS tracker API answers an empty search with exactly
// {"resourceType":"Bundle","type":"searchset","total":0,"entry":[]} (samply
// writes resourceType last and leaves an empty entry out), and samply's
// BundleEntry holds its resource as json.RawMessage, which would encode
// every resource twice.
type searchset struct {
	ResourceType string        `json:"resourceType"`
	Type         fm.BundleType `json:"type"`
	Total        int           `json:"total"`
	Entry        []entry       `json:"entry"`
}

type entry struct {
	FullURL  string               `json:"fullUrl"`
	Search   fm.BundleEntrySearch `json:"search"`
	Resource any                  `json:"resource"`
}

var (
	modeInclude = fm.BundleEntrySearch{Mode: ptr(fm.SearchEntryModeInclude)}
	modeMatch   = fm.BundleEntrySearch{Mode: ptr(fm.SearchEntryModeMatch)}
)

// The resources of the views: samply's types (their Other* form, which has
// no MarshalJSON of its own) behind resourceType, so that resourceType
// comes first as the NHS tracker writes it (samply's MarshalJSON writes it
// last, and encodes every resource twice).

type patientResource struct {
	ResourceType string `json:"resourceType"`
	fm.OtherPatient
}

type practitionerRoleResource struct {
	ResourceType string `json:"resourceType"`
	fm.OtherPractitionerRole
}

type requestGroupResource struct {
	ResourceType string `json:"resourceType"`
	fm.OtherRequestGroup
}

// medicationRequestResource is samply's MedicationRequest with the elements
// it cannot write as the views need replaced (a field of the outer struct
// hides samply's of the same JSON name):
//   - medication[x] and substitution.allowed[x]: samply declares each choice
//     as non-pointer fields without omitempty, so it writes both
//     medicationCodeableConcept and an empty medicationReference, and both
//     allowedBoolean and an empty allowedCodeableConcept: invalid FHIR;
//   - performer and dispenseRequest.performer: the NHS tracker names the
//     organisation with a list of identifiers (odsIdentifiers), which an R4
//     Reference (samply's) cannot hold.
type medicationRequestResource struct {
	ResourceType string `json:"resourceType"`
	fm.OtherMedicationRequest
	MedicationCodeableConcept *fm.CodeableConcept `json:"medicationCodeableConcept,omitempty"`
	MedicationReference       *fm.Reference       `json:"medicationReference,omitempty"`
	DispenseRequest           *dispenseRequest    `json:"dispenseRequest,omitempty"`
	Substitution              *substitution       `json:"substitution,omitempty"`
	Performer                 *odsIdentifiers     `json:"performer,omitempty"`
}

type dispenseRequest struct {
	fm.MedicationRequestDispenseRequest
	Performer *odsIdentifiers `json:"performer,omitempty"`
}

// substitution is MedicationRequest.substitution with allowedBoolean only.
type substitution struct {
	AllowedBoolean bool `json:"allowedBoolean"`
}

// medicationDispenseResource is samply's MedicationDispense with
// medication[x] replaced, for the reason given at medicationRequestResource.
type medicationDispenseResource struct {
	ResourceType string `json:"resourceType"`
	fm.OtherMedicationDispense
	MedicationCodeableConcept *fm.CodeableConcept `json:"medicationCodeableConcept,omitempty"`
	MedicationReference       *fm.Reference       `json:"medicationReference,omitempty"`
}

// odsIdentifiers is the reference to an organisation by ODS code as the NHS
// tracker writes it in performer and dispenseRequest.performer: with a list
// of identifiers (R4's Reference.identifier is one Identifier).
type odsIdentifiers struct {
	Identifier []fm.Identifier `json:"identifier"`
}
