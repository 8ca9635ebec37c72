package test

import (
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// BenchmarkTrackerSearchHTTP measures a whole tracker search over HTTP (token
// check, index, current state and order read from JetStream, the durable
// audit write, the FHIR answer) against a broker holding 200 prescriptions,
// and a search by ID against a plain GET /healthz as the baseline of the
// same run.
//
//	go test -run '^$' -bench TrackerSearchHTTP -benchtime 2000x ./test/
func BenchmarkTrackerSearchHTTP(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tmpl, _ := fhirgen.NewTemplate(fhirgen.Order4Items)
	var ids []string
	tok := tb.token(auth.RolePrescriber, "A83008")
	for i := 0; i < 200; i++ {
		g, _ := tmpl.Order(fhirgen.Options{})
		if res := tb.post(tok, g.Body); res.Status != 200 {
			b.Fatalf("%d", res.Status)
		}
		ids = append(ids, g.ShortID)
	}
	tracker := tb.token(auth.RoleTracker, "X26")
	for _, tc := range []struct{ name, path string }{{"healthz", "/healthz"}, {"search-by-id", ""}} {
		b.Run(tc.name, func(b *testing.B) {
			var lat []time.Duration
			for i := 0; b.Loop(); i++ {
				p := tc.path
				if p == "" {
					p = "/FHIR/R4/RequestGroup?prescriptionId=" + ids[i%len(ids)]
				}
				req, _ := http.NewRequest("GET", tb.URL+p, nil)
				req.Header.Set("Authorization", "Bearer "+tracker)
				t0 := time.Now()
				res, err := http.DefaultClient.Do(req)
				if err != nil || res.StatusCode != 200 {
					b.Fatal(err, res)
				}
				res.Body.Close()
				lat = append(lat, time.Since(t0))
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}
