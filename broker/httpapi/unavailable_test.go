package httpapi

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/fhir"
)

// errStoreDown is the fakes' store that could not answer now (a timeout,
// no leader).
var errStoreDown = errors.New("no response from stream (fake)")

// An error of the store that no service mapped, and that Deps.Unavailable
// tells as the store not answering now, is 503 with Retry-After, saying
// nothing was acknowledged, never 500; any other unmapped error stays 500,
// and a mapped one keeps its own status.
func TestStoreUnavailable503(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{"timeout, wrapped", fmt.Errorf("read prescription: %w", errStoreDown), 503, fhir.CodeServiceUnavailable},
		{"internal kind wrapping it", &fhir.Error{Kind: fhir.KindInternal, Err: errStoreDown}, 503, fhir.CodeServiceUnavailable},
		{"another error", errors.New("bad record header"), 500, ""},
		{"a conflict stays a conflict", &fhir.Error{Kind: fhir.KindConflict, Code: fhir.CodeDuplicateRequestIDDifferent, Err: errStoreDown}, 409, fhir.CodeDuplicateRequestIDDifferent},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, func(d *Deps) { d.Unavailable = func(err error) bool { return errors.Is(err, errStoreDown) } })
			f.intake.err = c.err
			w := f.do(req{method: "POST", path: "/FHIR/R4/$process-message", token: tokPrescriber, body: order})
			if w.Code != c.status {
				t.Fatalf("status %d, want %d: %s", w.Code, c.status, w.Body.String())
			}
			if c.status != 503 {
				return
			}
			oo := wantOutcome(t, w, 503, c.code)
			if !strings.Contains(oo.Issue[0].Diagnostics, "not acknowledged") {
				t.Errorf("diagnostics %q", oo.Issue[0].Diagnostics)
			}
			if got := w.Header().Get("Retry-After"); got != "1" {
				t.Errorf("Retry-After %q, want 1", got)
			}
		})
	}
}
