package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// nominationsView is the answer of the nomination endpoints.
type nominationsView struct {
	NHSNumber   string                                    `json:"nhsNumber"`
	Nominations map[nomination.Type]nomination.Nomination `json:"nominations"`
	History     []nomination.Change                       `json:"history,omitempty"`
}

// getNominations answers GET /api/v1/nominations/{nhsNumber}: the patient's
// nominations and every change to them.
func (a *api) getNominations(w http.ResponseWriter, r *http.Request) {
	nhs := r.PathValue("nhsNumber")
	if err := nomination.Check(nhs, nomination.Pharmacy, "", false); err != nil {
		a.writeError(w, r, err)
		return
	}
	cur, _, err := a.Store.Nominations(r.Context(), nhs)
	if err != nil {
		a.writeError(w, r, unavailable("read nominations", err))
		return
	}
	hist, err := a.Store.NominationHistory(r.Context(), nhs)
	if err != nil {
		a.writeError(w, r, unavailable("read nominations", err))
		return
	}
	v := nominationsView{NHSNumber: nhs, Nominations: map[nomination.Type]nomination.Nomination{}}
	if principalFrom(r.Context()).Role == auth.RoleAdmin {
		v.History = hist // who changed what: for investigators (admin) only
	}
	if cur != nil {
		v.Nominations = cur.Nominations
	}
	writeJSON(w, http.StatusOK, v)
}

// putNomination answers PUT /api/v1/nominations/{nhsNumber}/{type} with
// {"ods": "FA565"}: sets or changes the patient's nomination of that type.
func (a *api) putNomination(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ODS string `json:"ods"`
	}
	if err := json.Unmarshal(bodyFrom(r.Context()), &req); err != nil {
		a.writeError(w, r, fhir.Invalid(fhir.CodeInvalidValue, "structure", "ods", `send {"ods": "<ODS code>"}: %v`, err))
		return
	}
	p := principalFrom(r.Context())
	out, err := a.Registry.Set(r.Context(), p, r.PathValue("nhsNumber"), nomination.Type(strings.ToUpper(r.PathValue("type"))), strings.TrimSpace(req.ODS))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nominationsView{NHSNumber: out.NHSNumber, Nominations: out.Nominations})
}

// deleteNomination answers DELETE /api/v1/nominations/{nhsNumber}/{type}.
func (a *api) deleteNomination(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	out, err := a.Registry.Remove(r.Context(), p, r.PathValue("nhsNumber"), nomination.Type(strings.ToUpper(r.PathValue("type"))))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nominationsView{NHSNumber: out.NHSNumber, Nominations: out.Nominations})
}
