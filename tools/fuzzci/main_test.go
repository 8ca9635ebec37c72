package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    []target
		wantErr string
	}{
		{
			name: "targets of two packages, one package without tests, one without targets",
			out: "FuzzCheckJSON\nFuzzDecodeOrder\nok  \tgithub.com/x/m/fhir\t0.031s\n" +
				"?   \tgithub.com/x/m/cmd/tool\t[no test files]\n" +
				"ok  \tgithub.com/x/m/config\t(cached)\n" +
				"FuzzImportParser\nok  \tgithub.com/x/m/nomination\t0.010s\n",
			want: []target{{"github.com/x/m/fhir", "FuzzCheckJSON"}, {"github.com/x/m/fhir", "FuzzDecodeOrder"},
				{"github.com/x/m/nomination", "FuzzImportParser"}},
		},
		{name: "nothing", out: "?   \tgithub.com/x/m\t[no test files]\n"},
		{name: "CRLF", out: "FuzzA\r\nok  \tm/p\t0.1s\r\n", want: []target{{"m/p", "FuzzA"}}},
		{
			name: "a test or benchmark that -list matched by prefix only is not a target",
			out:  "Fuzzy\nFuzz-not\nok  \tm/p\t0.1s\n",
			want: []target{{"m/p", "Fuzzy"}},
		},
		{name: "a package that does not build", out: "FAIL\tm/p [build failed]\n", wantErr: "failed"},
		{name: "targets without a package", out: "FuzzA\n", wantErr: "FuzzA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseList([]byte(tt.out))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestSelectTargets(t *testing.T) {
	ts := []target{{"m/fhir", "FuzzA"}, {"m/fhir", "FuzzB"}, {"m/auth", "FuzzA"}}
	if got := selectTargets(ts, nil); !reflect.DeepEqual(got, ts) {
		t.Fatalf("no filter: %v", got)
	}
	if got := selectTargets(ts, regexp.MustCompile(`^FuzzA$`)); !reflect.DeepEqual(got, []target{ts[0], ts[2]}) {
		t.Fatalf("by name: %v", got)
	}
	if got := selectTargets(ts, regexp.MustCompile(`auth/`)); !reflect.DeepEqual(got, []target{ts[2]}) {
		t.Fatalf("by package: %v", got)
	}
}

// TestDiscoverAndRun runs the real go command on a small module (a copy of
// testdata/mod): discovery finds its two targets and skips the package
// without any; the one that holds passes, the one whose seed panics fails,
// and the closing line counts both.
func TestDiscoverAndRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and fuzzes a module")
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/mod")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	targets, err := discover(ctx, dir, []string{"./..."})
	if err != nil {
		t.Fatal(err)
	}
	want := []target{{"example.com/fuzzcimod/a", "FuzzGood"}, {"example.com/fuzzcimod/a", "FuzzBad"}}
	if !reflect.DeepEqual(targets, want) {
		t.Fatalf("discovered %v, want %v", targets, want)
	}

	var out bytes.Buffer
	err = runAll(ctx, dir, targets, run{each: time.Second, minimize: time.Second, parallel: 1}, &out)
	if err == nil || !strings.Contains(err.Error(), "FuzzBad") || strings.Contains(err.Error(), "FuzzGood") {
		t.Fatalf("runAll: %v, want FuzzBad (only) to fail\n%s", err, out.String())
	}
	text := out.String()
	for _, s := range []string{"FuzzGood ok in", "execs: ", "--- FAIL: example.com/fuzzcimod/a FuzzBad", "thirteen", "targets in "} {
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %q:\n%s", s, text)
		}
	}
	if lines := strings.Split(strings.TrimSpace(text), "\n"); lines[len(lines)-1] != "fuzz: 1 passed, 1 failed" {
		t.Errorf("last line %q", lines[len(lines)-1])
	}
	if _, err := os.Stat(filepath.Join("testdata", "mod", "a", "testdata")); err == nil {
		t.Error("the run wrote into the repository's testdata")
	}
}
