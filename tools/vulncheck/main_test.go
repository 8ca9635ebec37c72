package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name    string
		readme  string
		want    map[string]string
		wantErr string
	}{
		{
			name:   "none accepted",
			readme: "# X\n## Security\n### Vulnerability policy\nNothing reachable is accepted.\n## Next\n",
			want:   map[string]string{},
		},
		{
			name: "entries with reasons, plain or in backticks",
			readme: "## Security\n### Vulnerability policy\n- GO-2026-0001: only the CLI calls it, never on input from a client\n" +
				"* `GO-2026-0002`: no fix released yet; the handler is not routed\n",
			want: map[string]string{
				"GO-2026-0001": "only the CLI calls it, never on input from a client",
				"GO-2026-0002": "no fix released yet; the handler is not routed",
			},
		},
		{
			name:    "an entry without a reason",
			readme:  "### Vulnerability policy\n- GO-2026-0001:\n",
			wantErr: "GO-2026-0001 is listed without a reason",
		},
		{
			name:   "a bullet naming an ID in prose is no entry",
			readme: "### Vulnerability policy\n- GO-2026-6609 was fixed by go1.27.2\n",
			want:   map[string]string{},
		},
		{
			name:   "entries after the section ends are not read",
			readme: "### Vulnerability policy\n- GO-2026-0001: why\n### Other\n- GO-2026-0002: elsewhere\n## Higher\n- GO-2026-0003: elsewhere\n",
			want:   map[string]string{"GO-2026-0001": "why"},
		},
		{
			name:   "a subsection stays inside, a code comment ends nothing",
			readme: "## Vulnerability policy\n```sh\n# run it\n```\n#### Accepted\n- GO-2026-0001: why\n",
			want:   map[string]string{"GO-2026-0001": "why"},
		},
		{
			name:    "no section",
			readme:  "# X\n- GO-2026-0001: why\n",
			wantErr: `no "Vulnerability policy" section`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePolicy(tc.readme)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// govulncheck's -format json stream: one advisory reachable (two traces),
// one imported but not called, one in a required module only.
const stream = `{"config":{"protocol_version":"v1.0.0","scanner_name":"govulncheck","scanner_version":"v1.9.0","go_version":"go1.26.8","scan_level":"symbol"}}
{"progress":{"message":"Scanning your code"}}
{"osv":{"id":"GO-2026-6609","summary":"Lack of limit on size of parsed Range headers in net/http"}}
{"osv":{"id":"GO-2026-6600","summary":"Recognize yield as regexp preceder keyword in html/template"}}
{"osv":{"id":"GO-2026-5932","summary":"The golang.org/x/crypto/openpgp package is unmaintained"}}
{"finding":{"osv":"GO-2026-6609","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8"}]}}
{"finding":{"osv":"GO-2026-6609","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8","package":"net/http"}]}}
{"finding":{"osv":"GO-2026-6609","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8","package":"net/http","function":"ServeHTTP","receiver":"*fileHandler"},{"module":"github.com/nhs-eps/epsbroker","package":"github.com/nhs-eps/epsbroker/broker/httpapi","function":"trackerPage$1"}]}}
{"finding":{"osv":"GO-2026-6609","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8","package":"net/http","function":"ServeContent"},{"module":"github.com/nhs-eps/epsbroker","package":"github.com/nhs-eps/epsbroker/broker/httpapi","function":"other"}]}}
{"finding":{"osv":"GO-2026-6600","fixed_version":"v1.26.9","trace":[{"module":"stdlib","version":"v1.26.8","package":"html/template"}]}}
{"finding":{"osv":"GO-2026-5932","trace":[{"module":"golang.org/x/crypto","version":"v0.58.0"}]}}
`

func TestReadFindingsAndJudge(t *testing.T) {
	rep, err := readFindings(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if rep.GoVersion != "go1.26.8" || rep.Scanner != "v1.9.0" {
		t.Errorf("config: %q %q", rep.GoVersion, rep.Scanner)
	}
	levels := map[string]string{}
	for id, f := range rep.Findings {
		levels[id] = f.Level
	}
	if want := map[string]string{"GO-2026-6609": "symbol", "GO-2026-6600": "package", "GO-2026-5932": "module"}; !reflect.DeepEqual(levels, want) {
		t.Errorf("levels %v, want %v", levels, want)
	}
	if f := rep.Findings["GO-2026-6609"]; f.Fixed != "v1.26.9" || !strings.Contains(f.Example, "net/http.fileHandler.ServeHTTP from ") ||
		!strings.Contains(f.Summary, "Range headers") {
		t.Errorf("reachable finding: %+v", f)
	}

	tests := []struct {
		name         string
		policy       map[string]string
		wantUnlisted []string
		wantOut      []string
	}{
		{
			name:         "reachable and not listed fails",
			policy:       map[string]string{},
			wantUnlisted: []string{"GO-2026-6609"},
			wantOut:      []string{"REACHABLE, NOT LISTED: GO-2026-6609", "package, not called: GO-2026-6600", "module, not called: GO-2026-5932", "1 reachable (1 not listed)"},
		},
		{
			name:    "reachable and listed passes, a stale entry is noted",
			policy:  map[string]string{"GO-2026-6609": "assets only", "GO-2026-6600": "old"},
			wantOut: []string{"REACHABLE, accepted: GO-2026-6609", "README: assets only", "accepts GO-2026-6600, which is no longer reachable", "1 reachable (0 not listed)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			unlisted := rep.print(&out, tc.policy)
			if !reflect.DeepEqual(unlisted, tc.wantUnlisted) {
				t.Errorf("unlisted %v, want %v", unlisted, tc.wantUnlisted)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
