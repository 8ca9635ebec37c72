package test

import (
	"fmt"
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
// The packages whose tests run without NATS (the domain core, the services,
// the fakes and the HTTP layer) are held to it in their test files too: neither those files (in-package and external test package)
// nor any package of the module they import, at any depth, imports NATS, as
// `go list -deps -test` would show.
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
	natsFreeTests := []string{"tracker/rx", "broker/service", "broker/memstore", "broker/httpapi"}
	via := natsPaths{root: root, module: module, nats: nats[0], seen: map[string][]string{}}
	for _, dir := range natsFreeTests {
		t.Run(dir+" tests", func(t *testing.T) {
			pkg, err := build.ImportDir(filepath.Join(root, dir), 0)
			if err != nil {
				t.Fatalf("%s: %v", dir, err)
			}
			if len(pkg.TestGoFiles)+len(pkg.XTestGoFiles) == 0 {
				t.Fatalf("%s has no test files", dir)
			}
			for _, imp := range concat(pkg.TestImports, pkg.XTestImports) {
				path, err := via.to(imp)
				if err != nil {
					t.Fatalf("%s's tests: %v", dir, err)
				}
				if path != nil {
					t.Errorf("%s's tests import NATS: %s", dir, strings.Join(path, " → "))
				}
			}
		})
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

// natsPaths finds how an import brings in NATS: through the module's own
// packages (their non-test files, as a test binary compiles them), down to
// the first import of a NATS package. Packages outside the module other than
// NATS's are not followed.
type natsPaths struct {
	root, module, nats string
	seen               map[string][]string // import path → its path to NATS (nil: none)
}

// to is the chain of imports from imp to a NATS package, or nil.
func (n natsPaths) to(imp string) ([]string, error) {
	if strings.HasPrefix(imp, n.nats) {
		return []string{imp}, nil
	}
	rel, ok := strings.CutPrefix(imp, n.module)
	if !ok {
		return nil, nil
	}
	if path, done := n.seen[imp]; done {
		return path, nil
	}
	n.seen[imp] = nil
	pkg, err := build.ImportDir(filepath.Join(n.root, filepath.FromSlash(rel)), 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", imp, err)
	}
	for _, next := range pkg.Imports {
		path, err := n.to(next)
		if err != nil {
			return nil, err
		}
		if path != nil {
			n.seen[imp] = append([]string{imp}, path...)
			return n.seen[imp], nil
		}
	}
	return nil, nil
}
