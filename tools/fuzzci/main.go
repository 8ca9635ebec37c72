// Command fuzzci runs every fuzz target of the module for a bounded time, as
// CI does, and fails if any of them finds a crash.
//
//	go run ./tools/fuzzci [-each 20s] [-parallel 2] [-minimize 2s] [-run REGEXP] [-list] [packages]
//
// It finds the targets with `go test -list '^Fuzz' PACKAGES` (./... by
// default), so a new Fuzz function joins the run without any change here,
// and runs each one on its own with
//
//	go test -run '^$' -fuzz '^Name$' -fuzztime EACH -fuzzminimizetime MIN -parallel N PACKAGE
//
// which first replays the target's seed corpus (its f.Add seeds and the
// crashers kept under the package's testdata/fuzz/Name) and then fuzzes for
// EACH. Minimizing each new interesting input takes up to MIN of that time
// (go test's default, 60s, would eat a short run). Every target runs even after one fails; a failing target's output is
// printed, including the path of the input go test wrote under
// testdata/fuzz. The last line says how many passed and failed, and the
// total time is printed before it.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// target is one fuzz function and the package it is in.
type target struct {
	Pkg  string // import path
	Name string // e.g. FuzzDecodeOrder
}

func main() {
	each := flag.Duration("each", 20*time.Second, "how long to fuzz each target (after its seed corpus has been replayed)")
	parallel := flag.Int("parallel", 2, "fuzzing workers per target (go test -parallel)")
	minimize := flag.Duration("minimize", 2*time.Second, "longest time to minimize one input (go test -fuzzminimizetime)")
	only := flag.String("run", "", "only the targets whose name or package/name matches this regular expression")
	list := flag.Bool("list", false, "list the targets and exit")
	dir := flag.String("C", "", "run in this directory (the module root) instead of the current one")
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	var filter *regexp.Regexp
	if *only != "" {
		var err error
		if filter, err = regexp.Compile(*only); err != nil {
			fmt.Fprintln(os.Stderr, "fuzzci: -run:", err)
			os.Exit(2)
		}
	}
	ctx := context.Background()
	targets, err := discover(ctx, *dir, patterns)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fuzzci:", err)
		os.Exit(1)
	}
	targets = selectTargets(targets, filter)
	if *list {
		for _, t := range targets {
			fmt.Printf("%s %s\n", t.Pkg, t.Name)
		}
		return
	}
	if len(targets) == 0 {
		fmt.Fprintln(os.Stderr, "fuzzci: no fuzz targets found")
		os.Exit(1)
	}
	if err := runAll(ctx, *dir, targets, run{each: *each, minimize: *minimize, parallel: *parallel}, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fuzzci:", err)
		os.Exit(1)
	}
}

// discover lists the fuzz targets of the packages matched by patterns,
// with go test -list. Only packages with a test file that mentions
// "func Fuzz" are listed (go list says which files those are), so that
// the packages without any are not built for nothing.
func discover(ctx context.Context, dir string, patterns []string) ([]target, error) {
	pkgs, err := fuzzPackages(ctx, dir, patterns)
	if err != nil || len(pkgs) == 0 {
		return nil, err
	}
	args := append([]string{"test", "-list", "^Fuzz"}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return parseList(out)
}

// fuzzPackages returns the import paths of the packages matched by patterns
// that have a test file holding "func Fuzz".
func fuzzPackages(ctx context.Context, dir string, patterns []string) ([]string, error) {
	args := append([]string{"list", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .TestGoFiles \" \"}} {{join .XTestGoFiles \" \"}}"}, patterns...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %v\n%s", err, stderr.Bytes())
	}
	var pkgs []string
	for line := range strings.Lines(string(out)) {
		fields := strings.SplitN(strings.TrimRight(line, "\n"), "\t", 3)
		if len(fields) < 3 {
			continue
		}
		for _, name := range strings.Fields(fields[2]) {
			b, err := os.ReadFile(filepath.Join(fields[1], name))
			if err != nil {
				return nil, err
			}
			if bytes.Contains(b, []byte("func Fuzz")) {
				pkgs = append(pkgs, fields[0])
				break
			}
		}
	}
	return pkgs, nil
}

// okLine is the closing line of one package in go test -list output:
// "ok  <import path>  <time or (cached)>".
var okLine = regexp.MustCompile(`^ok\s+(\S+)\s`)

// fuzzName is a line of go test -list naming a fuzz target.
var fuzzName = regexp.MustCompile(`^Fuzz[A-Za-z0-9_]*$`)

// parseList reads the output of go test -list '^Fuzz': each package's
// matching names, one a line, followed by that package's "ok" line.
// Packages without test files ("?" lines) and with no match add nothing.
func parseList(out []byte) ([]target, error) {
	var targets []target
	var pending []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case fuzzName.MatchString(line):
			pending = append(pending, line)
		case okLine.MatchString(line):
			pkg := okLine.FindStringSubmatch(line)[1]
			for _, n := range pending {
				targets = append(targets, target{Pkg: pkg, Name: n})
			}
			pending = nil
		case strings.HasPrefix(line, "FAIL"):
			return nil, fmt.Errorf("go test -list failed: %s", line)
		}
	}
	if len(pending) > 0 {
		return nil, fmt.Errorf("go test -list: targets %s without their package's ok line", strings.Join(pending, ", "))
	}
	return targets, sc.Err()
}

// selectTargets keeps the targets whose name or "package/name" matches
// filter (all when it is nil).
func selectTargets(ts []target, filter *regexp.Regexp) []target {
	if filter == nil {
		return ts
	}
	var out []target
	for _, t := range ts {
		if filter.MatchString(t.Name) || filter.MatchString(t.Pkg+"/"+t.Name) {
			out = append(out, t)
		}
	}
	return out
}

// run says how each target is fuzzed.
type run struct {
	each, minimize time.Duration
	parallel       int
}

// runAll fuzzes each target as rn says, one after the other, and returns an
// error naming the targets that failed.
func runAll(ctx context.Context, dir string, targets []target, rn run, w io.Writer) error {
	start := time.Now()
	var failed []string
	for i, t := range targets {
		fmt.Fprintf(w, "fuzzci: [%d/%d] %s %s for %v\n", i+1, len(targets), t.Pkg, t.Name, rn.each)
		ts := time.Now()
		out, err := fuzzOne(ctx, dir, t, rn)
		took := time.Since(ts).Round(100 * time.Millisecond)
		if err != nil {
			failed = append(failed, t.Pkg+" "+t.Name)
			fmt.Fprintf(w, "--- FAIL: %s %s (%v): %v\n%s\n", t.Pkg, t.Name, took, err, out)
			continue
		}
		fmt.Fprintf(w, "fuzzci: %s ok in %v: %s\n", t.Name, took, lastStats(out))
	}
	fmt.Fprintf(w, "fuzzci: %d targets in %v\n", len(targets), time.Since(start).Round(time.Second))
	fmt.Fprintf(w, "fuzz: %d passed, %d failed\n", len(targets)-len(failed), len(failed))
	if len(failed) > 0 {
		return fmt.Errorf("%d fuzz targets failed (crashers are written under the package's testdata/fuzz): %s",
			len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// fuzzOne runs go test -fuzz on one target and returns its output.
func fuzzOne(ctx context.Context, dir string, t target, rn run) ([]byte, error) {
	args := []string{"test", "-run", "^$", "-fuzz", "^" + regexp.QuoteMeta(t.Name) + "$",
		"-fuzztime", rn.each.String(), "-fuzzminimizetime", rn.minimize.String(), "-parallel", fmt.Sprint(rn.parallel), t.Pkg}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			err = fmt.Errorf("go %s: exit %d", strings.Join(args, " "), exit.ExitCode())
		}
		return out, err
	}
	if !bytes.Contains(out, []byte("fuzz: elapsed")) {
		// go test answers "no tests to run" (exit 0) when -fuzz matches
		// nothing: the target was not fuzzed.
		return out, fmt.Errorf("go %s did not fuzz", strings.Join(args, " "))
	}
	return out, nil
}

// statsLine is go test's last progress line of a fuzzing run, e.g.
// "fuzz: elapsed: 20s, execs: 123456 (6172/sec), new interesting: 3 (total: 40)".
var statsLine = regexp.MustCompile(`fuzz: elapsed: [^\n]*execs: [^\n]*`)

// lastStats returns the last progress line of a fuzzing run.
func lastStats(out []byte) string {
	all := statsLine.FindAll(out, -1)
	if len(all) == 0 {
		return "no statistics"
	}
	return strings.TrimPrefix(string(all[len(all)-1]), "fuzz: ")
}
