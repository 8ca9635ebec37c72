package broker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/tracker"
	"github.com/nhs-eps/epsbroker/tracker/rx"
)

// fzNow is the clock of the fuzz targets.
var fzNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// fzRecords returns the JSON records of real prescriptions, as the event log
// carries them in the Eps-Record header: a new order, the same released and
// partly dispensed, and a repeat dispensing prescription of three issues.
func fzRecords(f *testing.F) [][]byte {
	f.Helper()
	tpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		f.Fatal(err)
	}
	order := func(body []byte) *fhir.Order {
		m, err := fhir.DecodeMessage(body)
		if err != nil {
			f.Fatal(err)
		}
		o, err := m.Order(fzNow)
		if err != nil {
			f.Fatal(err)
		}
		return o
	}
	g, err := tpl.Order(fhirgen.Options{Sender: "A83008", Performer: "FA565", Now: fzNow})
	if err != nil {
		f.Fatal(err)
	}
	by := rx.Actor{User: "u1", Org: "A83008"}
	created := rx.Create(order(g.Body).RxOrder(), by, fzNow)
	released, err := rx.Release(created, "FA565", rx.Actor{User: "d1", Org: "FA565"}, "m1", true, fzNow)
	if err != nil {
		f.Fatal(err)
	}
	dispensed, err := rx.Dispense(released, "FA565", rx.Actor{User: "d1", Org: "FA565"}, rx.DispenseInput{
		ID: "n1", Items: map[string]rx.ItemStatus{g.ItemIDs[0]: "0001", g.ItemIDs[1]: "0003"}, Status: "0003",
		Lines: []rx.DispensedLine{{LineItem: g.ItemIDs[0], Status: "0001", Quantity: 2, Unit: "tablet"}}}, fzNow)
	if err != nil {
		f.Fatal(err)
	}
	erd := rx.Create(order(fhirgen.RepeatDispensing(g.Body, 2, 28, fzNow)).RxOrder(), by, fzNow)
	var out [][]byte
	for _, p := range []*rx.Prescription{created, released, dispensed, erd} {
		b, err := json.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecodeStored feeds the projections what a message on the event log
// could hold: a broker's own record, or a foreign message with any
// Eps-Record header, event and body. decodeStored refuses what is not a
// record; whatever it accepts, the tracker index, the queue projector's
// notifications, the scheduler and the tracker's answers must take without
// a panic, and the answers must be JSON.
func FuzzDecodeStored(f *testing.F) {
	for _, rec := range fzRecords(f) {
		f.Add(string(rec), rx.EventReady, []byte("{}"))
	}
	f.Add(`{}`, "", []byte(nil))
	f.Add(`null`, "prescription-order", []byte("x"))
	f.Add(`{"id":"X","history":[{"issue":3}],"otherIssues":[{"issue":3},{"issue":3}],"issue":-1}`, "dispense-notification", []byte(nil))
	f.Add(`{"id":"Y","status":"0001","nominated":"FA565","pending":{"items":["a"]},"items":[{"id":"a"}]}`, "x", []byte(nil))
	f.Add(`{"id":"Z","repeatsAllowed":-5,"supplyDays":-28,"therapyType":"continuous-repeat-dispensing","startDate":"0001-01-01T00:00:00Z"}`, "", []byte(nil))
	f.Fuzz(func(t *testing.T, record, event string, body []byte) {
		h := nats.Header{}
		h.Set(HeaderRecord, record)
		h.Set(HeaderEvent, event)
		const seq = 7
		ev, err := decodeStored(seq, fzNow, h, body)
		if err != nil {
			if ev != nil {
				t.Fatalf("decodeStored: %v with an event", err)
			}
			return
		}
		if ev.Record == nil || ev.Seq != seq || ev.Event != h.Get(HeaderEvent) || ev.Record.OrderSeq == 0 {
			t.Fatalf("decodeStored: %+v", ev)
		}
		rec := ev.Record

		// The tracker projector.
		ix := tracker.NewIndex()
		ix.Apply(seq, rec)
		if e, ok := ix.Get(rec.ID); !ok || e.Seq != seq || e.Status != rec.Status {
			t.Fatalf("index entry %+v, %v", e, ok)
		}
		ix.ByNHSNumber(rec.NHSNumber)
		ix.ByNominated(rec.Nominated)
		ix.ByDispenser(rec.Dispenser)
		ix.Due(fzNow.AddDate(2, 0, 0))

		// The queue projector's reading of it.
		_ = rec.Ready()
		_ = rec.IssueNumber()
		_ = transitionNotifications(ev)
		_ = readyNotification(ev)

		// The scheduler.
		_ = rx.Scheduled(rec, fzNow)
		_ = rx.ApplyScheduled(rec, fzNow.AddDate(2, 0, 0), nil)

		// The tracker's answers: the search and every issue's detail.
		if b := tracker.SearchBundle([]tracker.SearchResult{{Record: rec, Patient: fhir.PatientDetails{NHSNumber: rec.NHSNumber}}}); !json.Valid(b) {
			t.Fatalf("search bundle is not JSON: %s", b)
		}
		for n := 0; n <= rec.IssueCount()+1; n++ {
			if at, ok := rec.AtIssue(n); ok {
				if b := tracker.DetailBundle(at, nil); !json.Valid(b) {
					t.Fatalf("detail bundle of issue %d is not JSON: %s", n, b)
				}
			}
		}
	})
}

// FuzzLoadNATSUsers reads fuzzed NATS users files (DATA_DIR/keys, edited by
// an operator): every user accepted must pass the checks, once, and give
// permissions.
func FuzzLoadNATSUsers(f *testing.F) {
	const key = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	f.Add([]byte(`{"users":[{"name":"ops","role":"inspect","nkey":"` + key + `"}]}`))
	f.Add([]byte(`{"users":[{"name":"fa565","role":"dispenser","ods":"FA565","nkey":"` + key + `","created":"2026-01-02T03:04:05Z"}]}`))
	f.Add([]byte(`{"users":[{"name":"a","role":"prescriber","nkey":"` + key + `"},{"name":"a","role":"inspect","nkey":"` + key + `"}]}`))
	f.Add([]byte(`{"users":[{"name":"x.y","role":"inspect","ods":"FA565","nkey":"SU` + key[2:] + `"}]}`))
	f.Add([]byte(`{"users":null}`))
	f.Add([]byte(`[]`))
	dir := f.TempDir()
	path := NATSUsersPath(dir)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		users, err := LoadNATSUsers(dir)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, u := range users {
			if err := u.check(); err != nil || seen[u.Name] || seen["key:"+u.NKey] {
				t.Fatalf("accepted user %+v: %v", u, err)
			}
			seen[u.Name], seen["key:"+u.NKey] = true, true
			if u.Permissions() == nil {
				t.Fatalf("no permissions for %+v", u)
			}
		}
	})
}
