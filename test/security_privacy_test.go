package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker"
	"github.com/nhs-eps/epsbroker/broker/app"
	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/config"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/nomination"
)

// streamsHoldingRecords are the streams whose message data is a record
// that needs the patient's NHS number: the event log (the orders and
// their records), the audit trail (who looked up which patient) and the
// nomination registry (whose nominations these are). No other stream's
// data, and no subject, key, name or header but the event log's record
// (Eps-Record), may hold one.
var streamsHoldingRecords = []string{broker.StreamEvents, broker.StreamAudit, "KV_" + broker.BucketNominations}

// natsContents walks everything NATS holds: stream and consumer names and
// configurations, every subject (and so every KV key), and every message's
// headers and data. found is called with where each NHS number was seen.
func natsContents(t *testing.T, js jetstream.JetStream, nhs []string, found func(where string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	has := func(s string) string {
		for _, n := range nhs {
			if strings.Contains(s, n) {
				return n
			}
		}
		return ""
	}
	names := js.StreamNames(ctx)
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if names.Err() != nil {
		t.Fatal(names.Err())
	}
	if len(streams) < 6 {
		t.Fatalf("only %d streams: %v", len(streams), streams)
	}
	for _, name := range streams {
		if n := has(name); n != "" {
			found("stream name " + name)
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := json.Marshal(info.Config)
		if n := has(string(cfg)); n != "" {
			found("configuration of " + name)
		}
		for subj := range info.State.Subjects {
			if n := has(subj); n != "" {
				found(name + " subject " + subj)
			}
		}
		cons := st.ListConsumers(ctx)
		for ci := range cons.Info() {
			b, _ := json.Marshal(ci.Config)
			if n := has(ci.Name + string(b)); n != "" {
				found(name + " consumer " + ci.Name)
			}
		}
		if cons.Err() != nil {
			t.Fatal(cons.Err())
		}
		if info.State.Msgs == 0 {
			continue
		}
		oc, err := js.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
		if err != nil {
			t.Fatal(err)
		}
		for pending := info.State.Msgs; pending > 0; {
			batch, err := oc.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				md, _ := m.Metadata()
				pending = md.NumPending
				for h, vs := range m.Headers() {
					if h == broker.HeaderRecord {
						continue
					}
					if n := has(h + ":" + strings.Join(vs, ",")); n != "" {
						found(name + " header " + h + " of " + m.Subject())
					}
				}
				data := string(m.Data())
				if name == "KV_"+broker.BucketRequests {
					// JSON carries the answer's bytes in base64.
					var r service.SavedResponse
					if len(m.Data()) > 0 {
						if err := json.Unmarshal(m.Data(), &r); err != nil {
							t.Fatalf("%s %s: %v", name, m.Subject(), err)
						}
					}
					data += string(r.Body) + string(r.Sealed)
				}
				if !slices.Contains(streamsHoldingRecords, name) && has(data) != "" {
					found(name + " data of " + m.Subject())
				}
			}
			if got == 0 {
				t.Fatalf("%s: no messages with %d pending", name, pending)
			}
		}
	}
}

// After orders, nominations (with X-Request-ID), a release and tracker
// look-ups, no NHS number appears in any stream or consumer name or
// configuration, subject, KV key or header (but the event log's record),
// nor in the idempotency bucket's data; replays still answer the same. The
// NATS users made with epsctl nats-user cannot read the buckets and streams
// that hold patient data.
func TestSecurityPrivacyIdentifiers(t *testing.T) {
	b, url, seeds := natsSecurityBroker(t)
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}
	ordered, releasedNHS, nominated, searched := fhirgen.NHSNumber(), fhirgen.NHSNumber(), fhirgen.NHSNumber(), fhirgen.NHSNumber()
	nhs := []string{ordered, releasedNHS, nominated, searched}
	prescriber := b.token(auth.RolePrescriber, "A83008")
	first, _ := tmpl.Order(fhirgen.Options{NHSNumber: ordered, Performer: "FCG71"})
	second, _ := tmpl.Order(fhirgen.Options{NHSNumber: ordered, Performer: "FCG71"})
	toRelease, _ := tmpl.Order(fhirgen.Options{NHSNumber: releasedNHS, Performer: "FA565"})
	for i, g := range []*fhirgen.Generated{first, second, toRelease} {
		if res := b.post(prescriber, g.Body, "X-Request-ID", "order-"+string(rune('a'+i))); res.Status != 200 {
			t.Fatalf("order: %d %s", res.Status, res.Body)
		}
	}
	b.settle()
	dispenser := b.token(auth.RoleDispenser, "FA565")
	rel := b.do("POST", "/FHIR/R4/Task/$release", dispenser, releaseBody(t, "FA565", ""), "X-Request-ID", "release-1")
	if ids, _ := released(t, rel); !slices.Equal(ids, []string{toRelease.ShortID}) {
		t.Fatalf("released %v, want %s", ids, toRelease.ShortID)
	}

	// Nomination changes with X-Request-ID: their answers name the patient.
	admin := b.token(auth.RoleAdmin, "X26")
	put := b.do("PUT", "/api/v1/nominations/"+nominated+"/P1", admin, []byte(`{"ods":"FA565"}`),
		"Content-Type", "application/json", "X-Request-ID", "nominate-1")
	if put.Status != 200 || !bytes.Contains(put.Body, []byte(nominated)) {
		t.Fatalf("nominate: %d %s", put.Status, put.Body)
	}
	again := b.do("PUT", "/api/v1/nominations/"+nominated+"/P1", admin, []byte(`{"ods":"FA565"}`),
		"Content-Type", "application/json", "X-Request-ID", "nominate-1")
	if again.Header.Get("X-Idempotent-Replay") != "true" || !bytes.Equal(again.Body, put.Body) {
		t.Errorf("nomination replay: %q %s, want the first answer", again.Header.Get("X-Idempotent-Replay"), again.Body)
	}
	if res := b.do("DELETE", "/api/v1/nominations/"+nominated+"/P1", b.token(auth.RoleDispenser, "FCG71"), nil, "X-Request-ID", "denominate-1"); res.Status != 200 {
		t.Fatalf("remove: %d %s", res.Status, res.Body)
	}
	if res := b.do("PUT", "/api/v1/nominations/"+nominated+"/P1", b.token(auth.RoleDispenser, "FCG71"), []byte(`{"ods":"FCG71"}`),
		"Content-Type", "application/json", "X-Request-ID", "nominate-2"); res.Status != 200 {
		t.Fatalf("self-nominate: %d %s", res.Status, res.Body)
	}
	if a := b.nominations(nominated); a.Nominations["P1"].ODS != "FCG71" || len(a.History) != 3 {
		t.Errorf("nominations: %+v", a)
	}

	// Tracker look-ups, audited.
	tracker := b.token(auth.RoleTracker, "X26")
	for _, p := range []string{"/FHIR/R4/RequestGroup?nhsNumber=" + ordered, "/FHIR/R4/RequestGroup?nhsNumber=" + searched,
		"/FHIR/R4/RequestGroup/" + first.ShortID, "/FHIR/R4/RequestGroup/" + toRelease.ShortID} {
		if res := b.do("GET", p, tracker, nil); res.Status != 200 {
			t.Fatalf("%s: %d %s", p, res.Status, res.Body)
		}
	}
	var audit struct{ Entries []service.AuditEntry }
	res := b.do("GET", "/api/v1/audit?nhsNumber="+ordered, admin, nil)
	if json.Unmarshal(res.Body, &audit); res.Status != 200 || len(audit.Entries) != 2 {
		t.Fatalf("audit of %s: %d %s, want 2 entries", ordered, res.Status, res.Body)
	}
	if e := audit.Entries[1]; e.NHSNumber != ordered || e.Action != "search" {
		t.Errorf("the audit entry keeps its patient: %+v", e)
	}
	b.settle()

	t.Run("no NHS number in names, subjects, keys or headers", func(t *testing.T) {
		js := b.App.Store.JetStream()
		natsContents(t, js, nhs, func(where string) { t.Errorf("an NHS number in %s", where) })
		// The pseudonyms are where the numbers were.
		ctx := context.Background()
		st, err := js.Stream(ctx, "KV_"+broker.BucketNominations)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if key := "$KV." + broker.BucketNominations + "." + b.App.Store.Pseudonym(nominated); info.State.Subjects[key] != 3 {
			t.Errorf("nominations key %s: %d revisions, want 3 (%v)", key, info.State.Subjects[key], info.State.Subjects)
		}
		st, _ = js.Stream(ctx, broker.StreamAudit)
		info, _ = st.Info(ctx, jetstream.WithSubjectFilter(broker.SubjectAudit+b.App.Store.Pseudonym(searched)+".*"))
		if len(info.State.Subjects) != 1 {
			t.Errorf("audit subjects of the searched patient: %v", info.State.Subjects)
		}
	})

	t.Run("NATS users cannot read patient data", func(t *testing.T) {
		streams := []string{broker.StreamEvents, broker.StreamAudit, "KV_" + broker.BucketRequests, "KV_" + broker.BucketNominations}
		var requests []string
		for _, s := range streams {
			requests = append(requests, "$JS.API.DIRECT.GET."+s, "$JS.API.STREAM.MSG.GET."+s,
				"$JS.API.CONSUMER.CREATE."+s, "$JS.API.CONSUMER.CREATE."+s+".peek", "$JS.API.CONSUMER.DURABLE.CREATE."+s+".peek")
		}
		subscribes := []string{"eps.rx.>", "eps.audit.>", "$KV." + broker.BucketRequests + ".>", "$KV." + broker.BucketNominations + ".>"}
		for _, user := range []string{"inspect", "dispenser", "prescriber"} {
			t.Run(user, func(t *testing.T) {
				c, err := connectNATS(t, url, seeds[user])
				if err != nil {
					t.Fatal(err)
				}
				for _, subj := range requests {
					if !refusedAPIRequest(t, c, subj) {
						t.Errorf("%s: request to %s not refused", user, subj)
					}
				}
				for _, subj := range subscribes {
					if !c.refusedSubscribe(t, subj) {
						t.Errorf("%s: subscribe to %s not refused", user, subj)
					}
				}
			})
		}
	})
}

// refusedAPIRequest sends a JetStream API request (without waiting for an
// answer) and reports whether the server refused it as a permission
// violation naming subject; other asynchronous errors (e.g. of the reply
// subject) are passed over.
func refusedAPIRequest(t *testing.T, c *natsClient, subject string) bool {
	t.Helper()
	c.drain()
	if err := c.nc.PublishRequest(subject, "_INBOX.privacy", []byte(`{"seq":1}`)); err != nil {
		return true
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// oldDataDir makes a data dir as the broker wrote it before pseudonyms: a
// bare embedded NATS server on the broker's store dir, the nominations
// bucket keyed by NHS number and audit subjects naming it, written with
// nats.go directly. prepare runs on the connection before it closes.
func oldDataDir(t testing.TB, dir string, prepare func(js jetstream.JetStream, kv jetstream.KeyValue)) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{ServerName: "epsbroker-embedded", JetStream: true,
		StoreDir: filepath.Join(dir, "jetstream"), DontListen: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("old NATS server not ready")
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL(), nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: broker.BucketNominations, History: 64, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: broker.StreamAudit, Subjects: []string{broker.SubjectAudit + ">"},
		Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew, AllowDirect: true, DenyDelete: true, DenyPurge: true}); err != nil {
		t.Fatal(err)
	}
	prepare(js, kv)
}

// oldUserKey is the audit subject token of a user (unchanged).
func oldUserKey(user string) string {
	h := sha256.Sum256([]byte(user))
	return hex.EncodeToString(h[:12])
}

// A broker started on a data dir written before pseudonyms moves every
// nomination to its patient's pseudonym, with its whole history in order
// (resuming a move cut short without copying twice), and purges the keys
// that named patients; the audit trail's old entries, whose subjects the
// stream will not let anyone rewrite, are still found by patient.
func TestSecurityPrivacyMigration(t *testing.T) {
	dir := t.TempDir()
	patientX, patientY := fhirgen.NHSNumber(), fhirgen.NHSNumber()
	by := nomination.By{User: "admin-user-X26", Org: "X26", Role: "admin"}
	day := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	x1 := nomination.Set(nil, patientX, nomination.Type("P1"), "FA565", by, day)
	y1 := nomination.Set(nil, patientY, nomination.Type("P1"), "FA565", by, day.Add(time.Hour))
	x2 := nomination.Set(x1, patientX, nomination.Type("P1"), "FCG71", by, day.Add(2*time.Hour))
	// A previous start was cut short after copying X's first revision.
	p, err := broker.LoadOrCreatePseudonymKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	oldDataDir(t, dir, func(js jetstream.JetStream, kv jetstream.KeyValue) {
		ctx := context.Background()
		for _, v := range []*nomination.Patient{x1, y1, x2} {
			if _, err := kv.Put(ctx, v.NHSNumber, mustJSON(v)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := kv.Put(ctx, p.Of(patientX), mustJSON(x1)); err != nil {
			t.Fatal(err)
		}
		old := service.AuditEntry{Time: day, User: "tracker-user-X26", Org: "X26", Role: "tracker", Action: "search", NHSNumber: patientX, Results: 1, Outcome: 200}
		if _, err := js.Publish(ctx, broker.SubjectAudit+patientX+"."+oldUserKey(old.User), mustJSON(old)); err != nil {
			t.Fatal(err)
		}
		old.NHSNumber, old.Action = "", "detail"
		if _, err := js.Publish(ctx, broker.SubjectAudit+"none."+oldUserKey(old.User), mustJSON(old)); err != nil {
			t.Fatal(err)
		}
	})

	check := func(b *testBroker, wantAudit int) {
		t.Helper()
		ax, ay := b.nominations(patientX), b.nominations(patientY)
		if ax.Nominations["P1"].ODS != "FCG71" || len(ax.History) != 2 || ax.History[0].To != "FA565" || ax.History[1].To != "FCG71" {
			t.Errorf("patient X after the move: %+v", ax)
		}
		if ay.Nominations["P1"].ODS != "FA565" || len(ay.History) != 1 {
			t.Errorf("patient Y after the move: %+v", ay)
		}
		ctx := context.Background()
		if err := b.App.NominationReports.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		var who []string
		for _, r := range b.App.NominationReports.Changes() {
			who = append(who, r.NHSNumber)
		}
		slices.Sort(who)
		want := []string{patientX, patientX, patientY}
		slices.Sort(want)
		if !slices.Equal(who, want) {
			t.Errorf("nomination reports see changes of %v, want %v", who, want)
		}
		var audit struct{ Entries []service.AuditEntry }
		res := b.do("GET", "/api/v1/audit?nhsNumber="+patientX, b.token(auth.RoleAdmin, "X26"), nil)
		// Tracker look-ups only (the nomination reads above are audited too).
		json.Unmarshal(res.Body, &audit)
		audit.Entries = slices.DeleteFunc(audit.Entries, func(e service.AuditEntry) bool { return e.Role != "tracker" })
		if res.Status != 200 || len(audit.Entries) != wantAudit {
			t.Fatalf("audit of X: %d %s, want %d tracker entries", res.Status, res.Body, wantAudit)
		}
		if last := audit.Entries[len(audit.Entries)-1]; !last.Time.Equal(day) || last.NHSNumber != patientX {
			t.Errorf("the oldest entry is not the one written before pseudonyms: %+v", last)
		}
		res = b.do("GET", "/api/v1/audit?user=tracker-user-X26", b.token(auth.RoleAdmin, "X26"), nil)
		if json.Unmarshal(res.Body, &audit); len(audit.Entries) != wantAudit+1 {
			t.Errorf("audit by user: %d entries, want %d", len(audit.Entries), wantAudit+1)
		}
		// The nominations bucket names no patient; the audit stream still
		// has the one old subject that does (it denies deletes and purges).
		natsContents(t, b.App.Store.JetStream(), []string{patientX, patientY}, func(where string) {
			if where != broker.StreamAudit+" subject "+broker.SubjectAudit+patientX+"."+oldUserKey("tracker-user-X26") {
				t.Errorf("an NHS number in %s", where)
			}
		})
	}

	b := startBroker(t, dir)
	check(b, 1)
	if res := b.do("GET", "/FHIR/R4/RequestGroup?nhsNumber="+patientX, b.token(auth.RoleTracker, "X26"), nil); res.Status != 200 {
		t.Fatalf("search: %d %s", res.Status, res.Body)
	}
	check(b, 2)
	b.stop()

	// Started again: nothing moves twice.
	b = startBroker(t, dir)
	check(b, 2)
	b.stop()

	// Another key (a lost key file, or a second broker on the same NATS
	// with its own): the broker does not start rather than lose every
	// patient's nominations from view.
	keyFile := broker.PseudonymKeyPath(dir)
	saved, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other.pem")
	cfg := config.Default()
	cfg.DataDir, cfg.HTTPAddr, cfg.PseudonymKey = dir, "127.0.0.1:0", other
	if _, err := app.New(context.Background(), cfg, zap.NewNop(), nil); !errors.Is(err, broker.ErrPseudonymKeyMismatch) {
		t.Fatalf("started with another key: %v", err) // (a broker that started is left running)
	}
	if got, _ := os.ReadFile(keyFile); !bytes.Equal(got, saved) {
		t.Fatal("the key file changed")
	}
	// The same key under --pseudonym-key (shared between brokers) starts.
	if err := os.WriteFile(other, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	b = startBroker(t, dir, func(c *config.Config) { c.PseudonymKey = other })
	check(b, 2)
}

// How long the first start takes to move a registry written before
// pseudonyms: 20 000 patients, one revision each, with each sync policy.
//
//	go test ./test/ -run XXX -bench PrivacyMigration -benchtime 1x
func BenchmarkPrivacyMigration(b *testing.B) {
	const patients = 20_000
	by := nomination.By{User: "admin-user-X26", Org: "X26", Role: "admin"}
	for _, sync := range []string{config.SyncAlways, "2m"} {
		b.Run("sync="+sync, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				dir := b.TempDir()
				oldDataDir(b, dir, func(js jetstream.JetStream, kv jetstream.KeyValue) {
					for n := 0; n < patients; n++ {
						v := nomination.Set(nil, fhirgen.NHSNumber(), nomination.Type("P1"), "FA565", by, time.Now())
						if _, err := js.PublishAsync("$KV."+broker.BucketNominations+"."+v.NHSNumber, mustJSON(v)); err != nil {
							b.Fatal(err)
						}
					}
					select {
					case <-js.PublishAsyncComplete():
					case <-time.After(time.Minute):
						b.Fatal("old registry not written")
					}
				})
				b.StartTimer()
				start := time.Now()
				tb := startBroker(b, dir, func(c *config.Config) { c.JetStreamSync = sync })
				b.ReportMetric(float64(patients)/time.Since(start).Seconds(), "patients/s")
				b.StopTimer()
				tb.stop()
			}
		})
	}
}
