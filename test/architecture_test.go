package test

import (
	"go/build"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestArchitectureImports holds the package map of the README's
// "Architecture" section against the code: the domain core (tracker/rx)
// imports nothing but the standard library, and no package imports what its
// paragraph says it may not (NATS outside the adapter, HTTP below the HTTP
// layer, the adapter from the services). It reads the import lines of each
// package's non-test files, as `go list -f '{{.Imports}}'` prints them.
func TestArchitectureImports(t *testing.T) {
	const module = "github.com/nhs-eps/epsbroker/"
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(here))

	nats := []string{"github.com/nats-io/"}
	web := []string{"net/http", module + "broker/httpapi"}
	outer := []string{module + "broker", module + "cmd", module + "config", module + "test"}
	cases := []struct {
		dir        string
		stdlibOnly bool     // imports the standard library only (a leaf)
		forbid     []string // import path prefixes it must not import
	}{
		{dir: "tracker/rx", stdlibOnly: true, forbid: []string{"net", "os", "database"}},
		{dir: "fhir", forbid: concat(nats, web, outer, []string{module + "tracker/web", module + "nomination", module + "tracker\x00"})},
		{dir: "fhir/internal/ojson", stdlibOnly: true},
		{dir: "tracker", forbid: concat(nats, web, outer)},
		{dir: "nomination", forbid: concat(nats, web, outer)},
		{dir: "config", stdlibOnly: true},
		{dir: "broker/keyfile", stdlibOnly: true},
		{dir: "broker/auth", forbid: concat(nats, []string{module + "broker/httpapi", module + "broker/service", module + "broker/app", module + "tracker"})},
		{dir: "broker/service", forbid: concat(nats, web, []string{module + "broker\x00", module + "broker/app", module + "broker/memstore"})},
		{dir: "broker/service/porttest", forbid: concat(nats, web, []string{module + "broker\x00", module + "broker/app"})},
		{dir: "broker/memstore", forbid: concat(nats, web, []string{module + "broker\x00", module + "broker/app"})},
		{dir: "broker/httpapi", forbid: concat(nats, []string{module + "broker/app", module + "broker/memstore"})},
		{dir: "broker", forbid: concat(web, []string{module + "broker/app", module + "broker/memstore"})},
	}
	for _, c := range cases {
		t.Run(c.dir, func(t *testing.T) {
			pkg, err := build.ImportDir(filepath.Join(root, c.dir), 0)
			if err != nil {
				t.Fatalf("%s: %v", c.dir, err)
			}
			for _, imp := range pkg.Imports {
				if c.stdlibOnly && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
					t.Errorf("%s imports %s: it may import the standard library only", c.dir, imp)
				}
				for _, f := range c.forbid {
					if exact, ok := strings.CutSuffix(f, "\x00"); ok {
						if imp == exact {
							t.Errorf("%s imports %s, which its README paragraph forbids", c.dir, imp)
						}
						continue
					}
					if imp == f || strings.HasPrefix(imp, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f)) {
						t.Errorf("%s imports %s, which its README paragraph forbids", c.dir, imp)
					}
				}
			}
		})
	}
}

func concat(lists ...[]string) []string { return slices.Concat(lists...) }
