package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
	"github.com/nhs-eps/epsbroker/nomination"
)

// importFile is a generated import file and what importing it must give.
type importFile struct {
	body     []byte
	csv      bool
	good     int                          // valid rows
	bad      []int                        // the lines of the invalid rows
	want     map[string]map[string]string // nhs -> type -> ods after import
	changes  map[string]int               // nhs -> changes the import makes
	patients []string                     // in file order
}

var importODS = []string{"FA565", "FCG71", "A83008", "FH542", "Y12345"}

// genImport generates rows data rows (and a header for CSV), one in every
// badEvery of them invalid in one of five ways, and some patients with
// several rows, each of a type not yet set for that patient. Every other
// row is a patient new to the file: nhs is drawn again when it gives a
// number already used (random numbers collide: about one file in a hundred
// of 3,000 rows would otherwise set a patient's type twice, which a re-run
// applies twice again; see TestNominationImportTypeTwice).
func genImport(rows, badEvery int, csv bool, nhs func() string) *importFile {
	f := &importFile{csv: csv, want: map[string]map[string]string{}, changes: map[string]int{}}
	used := map[string]bool{}
	var buf bytes.Buffer
	line := 0
	if csv {
		buf.WriteString("nhsNumber,type,ods\n")
		line++
	}
	types := []string{"P1", "P2", "P3"}
	var prev string
	for i := 0; i < rows; i++ {
		line++
		n := nhs()
		for used[n] {
			n = nhs()
		}
		used[n] = true
		typ, ods := types[i%3], importODS[i%len(importODS)]
		if i%7 == 3 && prev != "" {
			// Another row for the same patient, of a type not yet set (a
			// file that sets a type twice re-applies both on a re-run).
			for _, t := range types {
				if _, ok := f.want[prev][t]; !ok {
					n, typ = prev, t
					break
				}
			}
		}
		if badEvery > 0 && i%badEvery == badEvery-1 {
			f.bad = append(f.bad, line)
			switch (i / badEvery) % 5 {
			case 0: // bad NHS number: the check digit changed
				d := (n[9]-'0'+1)%10 + '0'
				n = n[:9] + string(rune(d))
				writeImportRow(&buf, csv, n, typ, ods)
			case 1:
				writeImportRow(&buf, csv, n, typ, "FA.565")
			case 2:
				writeImportRow(&buf, csv, n, "P7", ods)
			case 3: // malformed
				if csv {
					fmt.Fprintf(&buf, "%s,%s,\"%s\n", n, typ, ods)
				} else {
					fmt.Fprintf(&buf, "{\"nhsNumber\":\"%s\",\"type\":\"%s\",\n", n, typ)
				}
			case 4: // wrong column count / missing field
				if csv {
					fmt.Fprintf(&buf, "%s,%s\n", n, typ)
				} else {
					fmt.Fprintf(&buf, "{\"nhsNumber\":\"%s\",\"type\":\"%s\"}\n", n, typ)
				}
			}
			continue
		}
		writeImportRow(&buf, csv, n, typ, ods)
		f.good++
		if f.want[n] == nil {
			f.want[n] = map[string]string{}
			f.patients = append(f.patients, n)
		}
		if f.want[n][typ] != ods {
			f.changes[n]++
		}
		f.want[n][typ] = ods
		prev = n
	}
	f.body = buf.Bytes()
	return f
}

func writeImportRow(w io.Writer, csv bool, nhs, typ, ods string) {
	if csv {
		fmt.Fprintf(w, "%s,%s,%s\n", nhs, typ, ods)
	} else {
		fmt.Fprintf(w, "{\"nhsNumber\":\"%s\",\"type\":\"%s\",\"ods\":\"%s\"}\n", nhs, typ, ods)
	}
}

func (f *importFile) contentType() string {
	if f.csv {
		return "text/csv"
	}
	return "application/x-ndjson"
}

type importResult struct {
	Rows, Stored, Unchanged, Rejected int64
	Rejections                        []nomination.Rejection
	MoreRejections                    int64
}

func (b *testBroker) importNominations(token string, f *importFile, body []byte) importResult {
	b.t.Helper()
	res := b.do("POST", "/api/v1/nominations/import", token, body, "Content-Type", f.contentType())
	var r importResult
	if res.Status != 200 || json.Unmarshal(res.Body, &r) != nil {
		b.t.Fatalf("import: %d %s", res.Status, res.Body)
	}
	return r
}

// checkState checks that the registry holds exactly what the file says,
// each change written once, made by role of org.
func (b *testBroker) checkImported(f *importFile, role auth.Role, org string) {
	b.t.Helper()
	ctx := context.Background()
	for i, nhs := range f.patients {
		cur, _, err := b.App.Store.Nominations(ctx, nhs)
		if err != nil {
			b.t.Fatal(err)
		}
		got := map[string]string{}
		if cur != nil {
			for t, n := range cur.Nominations {
				got[string(t)] = n.ODS
				if n.By.Role != string(role) || n.By.Org != org || n.By.OnBehalfOf != (role != auth.RoleAdmin) {
					b.t.Fatalf("%s %s: by %+v, want %s of %s", nhs, t, n.By, role, org)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(f.want[nhs]) {
			b.t.Fatalf("%s: %v, want %v", nhs, got, f.want[nhs])
		}
		if i%50 == 0 { // and over HTTP, with the history
			a := b.nominations(nhs)
			if len(a.History) != f.changes[nhs] {
				b.t.Fatalf("%s: %d changes in the history, want %d", nhs, len(a.History), f.changes[nhs])
			}
			for t, ods := range f.want[nhs] {
				if a.Nominations[t].ODS != ods {
					b.t.Fatalf("GET %s: %s is %q, want %q", nhs, t, a.Nominations[t].ODS, ods)
				}
			}
		}
	}
}

func checkImportResult(t *testing.T, what string, r importResult, f *importFile, stored, unchanged int64) {
	t.Helper()
	if r.Rows != int64(f.good+len(f.bad)) || r.Stored != stored || r.Unchanged != unchanged || r.Rejected != int64(len(f.bad)) {
		t.Errorf("%s: %d rows, %d stored, %d unchanged, %d rejected; want %d, %d, %d, %d", what, r.Rows, r.Stored, r.Unchanged, r.Rejected,
			f.good+len(f.bad), stored, unchanged, len(f.bad))
	}
	var lines []int
	for _, rj := range r.Rejections {
		lines = append(lines, rj.Line)
		if rj.Reason == "" {
			t.Errorf("%s: line %d rejected without a reason", what, rj.Line)
		}
	}
	if !slices.Equal(lines, f.bad) {
		t.Errorf("%s: rejected lines %v, want %v", what, lines, f.bad)
	}
}

func TestNominationImport(t *testing.T) {
	for _, csv := range []bool{false, true} {
		name := "ndjson"
		if csv {
			name = "csv"
		}
		t.Run(name, func(t *testing.T) {
			f := genImport(3000, 97, csv, fhirgen.NHSNumber)
			var wantStored int64
			for _, c := range f.changes {
				wantStored += int64(c)
			}
			b := startBroker(t, "")
			admin := b.token(auth.RoleAdmin, "X26")
			r := b.importNominations(admin, f, f.body)
			checkImportResult(t, "first import", r, f, wantStored, int64(f.good)-wantStored)
			b.checkImported(f, auth.RoleAdmin, "X26")

			// The same file again: nothing changes.
			r = b.importNominations(admin, f, f.body)
			checkImportResult(t, "re-run", r, f, 0, int64(f.good))
			b.checkImported(f, auth.RoleAdmin, "X26")

			// Interrupted: half the file as an import of its own, then a
			// connection dropped part way, then the whole file: the same
			// final state, each change written once.
			b2 := startBroker(t, "")
			tok := b2.token(auth.RoleAdmin, "X27")
			half := f.body[:bytes.IndexByte(f.body[len(f.body)/2:], '\n')+len(f.body)/2+1]
			b2.do("POST", "/api/v1/nominations/import", tok, half, "Content-Type", f.contentType())
			pr, pw := io.Pipe()
			req, _ := http.NewRequest("POST", b2.URL+"/api/v1/nominations/import", pr)
			req.Header.Set("Content-Type", f.contentType())
			req.Header.Set("Authorization", "Bearer "+tok)
			go func() {
				_, _ = pw.Write(f.body[:len(f.body)*3/4])
				time.Sleep(200 * time.Millisecond)
				pw.CloseWithError(errors.New("interrupted"))
			}()
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
				t.Logf("interrupted import answered %d", res.StatusCode)
			}
			r = b2.importNominations(tok, f, f.body)
			if r.Stored+r.Unchanged != int64(f.good) || r.Rejected != int64(len(f.bad)) {
				t.Errorf("resumed import: %+v", r)
			}
			b2.checkImported(f, auth.RoleAdmin, "X27")
		})
	}
}

// A file that sets one patient's type twice applies both rows in file
// order: the later wins. Run again, it writes both again (the earlier row
// changes the nomination back, the later one forward): rows are applied one
// by one, without holding the file; the final state is the same.
func TestNominationImportTypeTwice(t *testing.T) {
	b := startBroker(t, "")
	x, y := fhirgen.NHSNumber(), fhirgen.NHSNumber()
	for x == y {
		y = fhirgen.NHSNumber()
	}
	f := &importFile{csv: true, body: []byte("nhsNumber,type,ods\n" + x + ",P1,FA565\n" + y + ",P2,A83008\n" + x + ",P1,FCG71\n")}
	admin := b.token(auth.RoleAdmin, "X26")
	for run, want := range []importResult{{Rows: 3, Stored: 3}, {Rows: 3, Stored: 2, Unchanged: 1}} {
		r := b.importNominations(admin, f, f.body)
		if r.Rows != want.Rows || r.Stored != want.Stored || r.Unchanged != want.Unchanged || r.Rejected != 0 {
			t.Errorf("import %d: %+v, want %+v", run+1, r, want)
		}
		if a := b.nominations(x); a.Nominations["P1"].ODS != "FCG71" || len(a.History) != 2*(run+1) {
			t.Errorf("import %d: %s P1 %q with %d changes, want FCG71 with %d", run+1, x, a.Nominations["P1"].ODS, len(a.History), 2*(run+1))
		}
		if a := b.nominations(y); a.Nominations["P2"].ODS != "A83008" || len(a.History) != 1 {
			t.Errorf("import %d: %s P2 %q with %d changes", run+1, y, a.Nominations["P2"].ODS, len(a.History))
		}
	}
}

func TestNominationImportRefusals(t *testing.T) {
	b := startBroker(t, "")
	f := genImport(10, 0, false, fhirgen.NHSNumber)
	for _, tc := range []struct {
		role   auth.Role
		ct     string
		body   []byte
		status int
	}{
		{auth.RoleTracker, "application/x-ndjson", f.body, 403},
		{auth.RoleAdmin, "application/json", f.body, 415},
		{auth.RoleAdmin, "text/csv", []byte("nhs,type\n1,2\n"), 400},
	} {
		res := b.do("POST", "/api/v1/nominations/import", b.token(tc.role, "X26"), tc.body, "Content-Type", tc.ct)
		if res.Status != tc.status {
			t.Errorf("%s %s: %d, want %d: %s", tc.role, tc.ct, res.Status, tc.status, res.Body)
		} else {
			res.outcome(t)
		}
	}
	if res := b.do("POST", "/api/v1/nominations/import", "", f.body, "Content-Type", "text/csv"); res.Status != 401 {
		t.Errorf("no token: %d", res.Status)
	}
	for _, nhs := range f.patients {
		if a := b.nominations(nhs); len(a.History) != 0 {
			t.Errorf("a refused import changed %s", nhs)
		}
	}
	// Bulk import is for admins: a prescriber or dispenser may change one
	// patient's nomination, not load millions.
	big := genImport(60_000, 0, true, fhirgen.NHSNumber)
	if len(big.body) < 1<<20 {
		t.Fatalf("only %d bytes", len(big.body))
	}
	for _, role := range []auth.Role{auth.RolePrescriber, auth.RoleDispenser} {
		if res := b.do("POST", "/api/v1/nominations/import", b.token(role, "A83008"), big.body[:4096], "Content-Type", big.contentType()); res.Status != 403 {
			t.Errorf("%s import: %d, want 403", role, res.Status)
		}
	}
	// Over the 1 MiB body limit.
	r := b.importNominations(b.token(auth.RoleAdmin, "X28"), big, big.body)
	if r.Rejected != 0 || r.Stored+r.Unchanged != int64(big.good) {
		t.Errorf("large import: %+v", r)
	}
	b.checkImported(&importFile{patients: big.patients[:200], want: big.want, changes: big.changes}, auth.RoleAdmin, "X28")
}

// TestNominationImport1M imports a generated file of EPS_IMPORT_ROWS rows
// (1,000,000 by default), 1% of them bad, when EPS_IMPORT_1M=1, and reports
// the rate and the memory used. Run:
//
//	EPS_IMPORT_1M=1 go test -count=1 -run TestNominationImport1M -v -timeout 30m ./test/
func TestNominationImport1M(t *testing.T) {
	if os.Getenv("EPS_IMPORT_1M") != "1" {
		t.Skip("set EPS_IMPORT_1M=1 to import a generated 1,000,000-row file")
	}
	rows := 1_000_000
	if s := os.Getenv("EPS_IMPORT_ROWS"); s != "" {
		rows, _ = strconv.Atoi(s)
	}
	// Distinct NHS numbers, so that every good row is a change to check.
	var next atomic.Int64
	next.Store(900_000_000)
	nhs := func() string {
		for {
			s := strconv.FormatInt(next.Add(1), 10)
			sum := 0
			for i := 0; i < 9; i++ {
				sum += int(s[i]-'0') * (10 - i)
			}
			if c := 11 - sum%11; c != 10 {
				return s + strconv.Itoa(c%11)
			}
		}
	}
	f := genImport(rows, 100, false, nhs)
	path := filepath.Join(t.TempDir(), "nominations.ndjson")
	if err := os.WriteFile(path, f.body, 0o600); err != nil {
		t.Fatal(err)
	}
	size := len(f.body)
	f.body = nil
	t.Logf("generated %d rows (%d bad), %d MB", rows, len(f.bad), size>>20)
	runtime.GC()

	b := startBroker(t, "")
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	req, _ := http.NewRequest("POST", b.URL+"/api/v1/nominations/import", file)
	req.ContentLength = int64(size)
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("Authorization", "Bearer "+b.token(auth.RoleAdmin, "X26"))
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var r importResult
	err = json.NewDecoder(res.Body).Decode(&r)
	res.Body.Close()
	d := time.Since(start)
	close(stop)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("%d %v", res.StatusCode, err)
	}
	t.Logf("imported %d rows (%d stored, %d unchanged, %d rejected) in %s: %.0f rows/s; heap in use before %d MB, peak %d MB (broker and client in one process)",
		r.Rows, r.Stored, r.Unchanged, r.Rejected, d.Round(time.Millisecond), float64(r.Rows)/d.Seconds(), before.HeapInuse>>20, peak.Load()>>20)
	checkImportResult(t, "1M import", r, f, int64(f.good), 0)
	// Spot checks.
	f.patients = f.patients[:1000]
	b.checkImported(f, auth.RoleAdmin, "X26")
}
