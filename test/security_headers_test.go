package test

import (
	"net/http"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// Every FHIR and /api/ answer, success or error, says no-store and nosniff
// (answers with patient data must not stay in a cache or be sniffed into
// another type); the tracker page also refuses to be framed.
func TestSecurityHeaders(t *testing.T) {
	b := startBroker(t, "")
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	g, _ := tmpl.Order(fhirgen.Options{})
	presc := b.token(auth.RolePrescriber, "A83008")
	admin := b.token(auth.RoleAdmin, "X26")
	if res := b.post(presc, g.Body); res.Status != 200 || !res.headerIs("Cache-Control", "no-store") {
		t.Fatalf("order: %d %v", res.Status, res.Header)
	}
	for _, tc := range []struct {
		name    string
		res     *response
		noStore bool
		noFrame bool
	}{
		{"order resent", b.post(presc, g.Body), true, false},
		{"order refused", b.post(presc, []byte(`{"resourceType":"Bundle"}`)), true, false},
		{"no token", b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, "", nil), true, false},
		{"tracker search", b.do("GET", "/FHIR/R4/RequestGroup?prescriptionId="+g.ShortID, admin, nil), true, false},
		{"audit", b.do("GET", "/api/v1/audit", admin, nil), true, false},
		{"metadata", b.do("GET", "/FHIR/R4/metadata", "", nil), true, false},
		{"tracker page", b.do("GET", "/tracker", "", nil), true, true},
		{"healthz", b.do("GET", "/healthz", "", nil), false, false},
		{"router's redirect of an unclean path", noRedirect(t, b.URL+"//FHIR/R4/metadata", http.StatusTemporaryRedirect), false, false},
	} {
		h := tc.res.Header
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s (%d): X-Content-Type-Options %q", tc.name, tc.res.Status, h.Get("X-Content-Type-Options"))
		}
		if tc.noStore && h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s (%d): Cache-Control %q, want no-store", tc.name, tc.res.Status, h.Get("Cache-Control"))
		}
		if tc.noFrame && h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: X-Frame-Options %q, want DENY", tc.name, h.Get("X-Frame-Options"))
		}
	}
}

// noRedirect GETs url without following a redirect and wants status.
func noRedirect(t *testing.T, url string, status int) *response {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != status {
		t.Fatalf("GET %s: %d, want %d", url, res.StatusCode, status)
	}
	return &response{Status: res.StatusCode, Header: res.Header}
}

func (r *response) headerIs(name, value string) bool { return r.Header.Get(name) == value }
