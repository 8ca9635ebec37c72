package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
)

// validate answers POST /FHIR/R4/$validate: the checks the broker makes of a
// message before acting on it, and nothing else: nothing is stored, no
// prescription is read or changed, no notification is sent. A message that
// passes is answered as the EPS FHIR API answers one (routes/debug/validate.ts
// of NHSDigital/electronic-prescription-service-api: 200, an OperationOutcome
// with one informational issue); one that fails, 400 with the issue the
// endpoint it is meant for would answer. It takes whatever EPS's $validate
// takes of what the broker supports: Bundles (prescription-order,
// prescription-order-update, dispense-notification), the Task/$release
// Parameters, return and withdraw Tasks, and Claims.
//
// The EPS API offers $validate on its prescribing and its dispensing
// endpoints, whichever message is sent: a prescriber or a dispenser may ask
// it of any kind. Whether the caller's organisation may send the message
// (the sender, the holder of the prescription) depends on the state and is
// not checked: that is not validation.
func (a *api) validate(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if p.Role != auth.RolePrescriber && p.Role != auth.RoleDispenser {
		a.writeError(w, r, fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "role %q may not use $validate; only a prescriber or a dispenser", p.Role))
		return
	}
	if err := a.validateMessage(bodyFrom(r.Context())); err != nil {
		a.writeError(w, r, err)
		return
	}
	writeFHIR(w, http.StatusOK, fhir.InformationalOutcome(a.Now()))
}

// validateMessage runs on body the decoding and validation of the endpoint
// it is meant for, by its resourceType (a message Bundle's by its event).
func (a *api) validateMessage(body []byte) error {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal(body, &head) // not JSON, or no resourceType: DecodeMessage says what is wrong
	var err error
	switch head.ResourceType {
	case "Parameters":
		_, err = fhir.DecodeReleaseRequest(body)
	case "Task":
		_, err = fhir.DecodeTaskRequest(body)
	case "Claim":
		_, err = fhir.DecodeClaim(body)
	case "Bundle", "":
		var msg *fhir.Message
		if msg, err = fhir.DecodeMessage(body); err != nil {
			return err
		}
		switch msg.Event {
		case fhir.EventPrescriptionOrder:
			_, err = msg.OrderBeforeSigning(a.Now())
		case fhir.EventPrescriptionOrderUpdate:
			_, err = msg.Cancellation()
		case fhir.EventDispenseNotification:
			_, err = msg.DispenseNotification()
		default: // as $process-message answers it
			err = &fhir.Error{Kind: fhir.KindInvalid, Op: "validate", IssueType: "not-supported",
				Code: fhir.CodeInvalidValue, Expression: []string{"Bundle.entry[0].resource.eventCoding.code"},
				Diagnostics: fmt.Sprintf("message event %q is not supported by this broker (see GET /FHIR/R4/metadata)", msg.Event)}
		}
	default:
		err = &fhir.Error{Kind: fhir.KindInvalid, Op: "validate", IssueType: "not-supported", Code: fhir.CodeInvalidValue,
			Expression: []string{"resourceType"},
			Diagnostics: fmt.Sprintf("resourceType %q: $validate checks what the broker accepts: a Bundle (prescription-order, prescription-order-update, dispense-notification), "+
				"Parameters (Task/$release), a Task (return or withdraw) or a Claim", head.ResourceType)}
	}
	return err
}

// pingBody is the answer of GET /_ping: as the EPS API's (its proxy's
// AddPayloadToPing; the NHS regression suite's "ping information": version,
// revision, releaseId and commitId, none empty), from the build: the module
// version, and the VCS revision it was built from ("unknown" when the
// binary does not say, as under go test).
var pingBody = func() []byte {
	version, revision, modified := "(devel)", "unknown", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	short := revision
	if len(short) > 12 {
		short = short[:12]
	}
	if modified {
		short += "+modified"
	}
	return mustJSON(map[string]string{
		"version":   version,
		"revision":  short,
		"releaseId": strings.TrimSpace(version + " " + short),
		"commitId":  revision,
	})
}()

// ping answers GET (and HEAD) /_ping without a token: 200 while the process
// serves HTTP, with the build's version.
func (a *api) ping(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(pingBody)
}
