// Command vulncheck runs govulncheck, at a pinned version, against the Go
// vulnerability database read offline from the golang.org/x/vulndb module
// (also pinned, fetched from the Go module proxy like any module), and fails
// on any reachable finding that the README's "Vulnerability policy" section
// does not list with a reason.
//
//	go run ./tools/vulncheck [-readme README.md] [-db DIR] [-govulncheck BIN] [packages]
//
// A finding is reachable when govulncheck traces a call from the project's
// code to the vulnerable symbol. Findings in imported packages or required
// modules that are never called are printed but do not fail. -db names a
// folder of OSV files (e.g. a newer vulndb's data/osv) instead of the pinned
// module; -govulncheck a binary instead of installing the pinned one.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The pinned versions. To take newer advisories, move vulndbVersion to a
// newer pseudo-version that the Go module proxy serves (or pass -db).
const (
	govulncheckPkg     = "golang.org/x/vuln/cmd/govulncheck"
	govulncheckVersion = "v1.9.0"
	vulndbModule       = "golang.org/x/vulndb"
	vulndbVersion      = "v0.0.0-20261105234957-e22db6528018"
)

func main() {
	readme := flag.String("readme", "README.md", "the README whose \"Vulnerability policy\" section lists accepted findings")
	db := flag.String("db", "", "a folder of OSV files to use instead of the pinned "+vulndbModule)
	bin := flag.String("govulncheck", "", "a govulncheck binary to use instead of installing "+govulncheckPkg+"@"+govulncheckVersion)
	flag.Parse()
	patterns := flag.Args()
	if len(patterns) == 0 {
		patterns = []string{"./..."}
	}
	if err := run(*readme, *db, *bin, patterns, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(1)
	}
}

func run(readmePath, db, bin string, patterns []string, out io.Writer) error {
	text, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	policy, err := parsePolicy(string(text))
	if err != nil {
		return fmt.Errorf("%s: %w", readmePath, err)
	}
	if db == "" {
		if db, err = downloadVulnDB(); err != nil {
			return err
		}
	}
	if db, err = filepath.Abs(db); err != nil {
		return err
	}
	if bin == "" {
		tmp, err := os.MkdirTemp("", "vulncheck-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if bin, err = installGovulncheck(tmp); err != nil {
			return err
		}
	}
	args := append([]string{"-db", (&url.URL{Scheme: "file", Path: filepath.ToSlash(db)}).String(), "-format", "json"}, patterns...)
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	rep, readErr := readFindings(bufio.NewReader(stdout))
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("govulncheck: %w", err)
	}
	if readErr != nil {
		return fmt.Errorf("govulncheck output: %w", readErr)
	}
	unlisted := rep.print(out, policy)
	if len(unlisted) > 0 {
		return fmt.Errorf("%d reachable finding(s) not listed with a reason in the README's Vulnerability policy: %s",
			len(unlisted), strings.Join(unlisted, ", "))
	}
	return nil
}

// downloadVulnDB fetches the pinned vulndb module into the module cache and
// returns its folder of OSV files.
func downloadVulnDB() (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", vulndbModule+"@"+vulndbVersion)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", vulndbModule, vulndbVersion, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(b, &m); err != nil {
		return "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", vulndbModule, vulndbVersion, m.Error)
	}
	return filepath.Join(m.Dir, "data", "osv"), nil
}

// installGovulncheck builds the pinned govulncheck into dir with the go
// command in use (so with the project's toolchain).
func installGovulncheck(dir string) (string, error) {
	cmd := exec.Command("go", "install", govulncheckPkg+"@"+govulncheckVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w", govulncheckPkg, govulncheckVersion, err)
	}
	return filepath.Join(dir, "govulncheck"), nil
}

// heading is any Markdown heading; policyHeading starts the README section
// that lists accepted findings.
var (
	heading       = regexp.MustCompile(`^(#+)\s`)
	policyHeading = regexp.MustCompile(`^(#+)\s+Vulnerability policy\s*$`)
)

// policyEntry is one accepted finding, a list item "- GO-2026-1234: reason"
// (the ID may be in backticks; the colon is required).
var policyEntry = regexp.MustCompile("^\\s*[-*]\\s+`?(GO-\\d{4}-\\d{4,})`?\\s*:\\s*(.*)$")

// parsePolicy returns the findings the README's "Vulnerability policy"
// section accepts, each with its reason. The section runs to the next
// heading of the same or a higher level (code blocks skipped). An entry
// without a reason is an error, and so is a README without the section.
func parsePolicy(readme string) (map[string]string, error) {
	accepted := map[string]string{}
	level := 0
	found, inCode := false, false
	for _, line := range strings.Split(readme, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inCode = !inCode
			continue
		}
		if inCode {
			continue
		}
		if h := heading.FindStringSubmatch(line); h != nil {
			if level > 0 && len(h[1]) <= level {
				level = 0
			}
			if m := policyHeading.FindStringSubmatch(line); m != nil {
				level, found = len(m[1]), true
			}
			continue
		}
		if level == 0 {
			continue
		}
		m := policyEntry.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		reason := strings.TrimSpace(m[2])
		if reason == "" {
			return nil, fmt.Errorf("%s is listed without a reason", m[1])
		}
		accepted[m[1]] = reason
	}
	if !found {
		return nil, errors.New(`no "Vulnerability policy" section`)
	}
	return accepted, nil
}

// frame and finding are the parts of govulncheck's JSON that are read.
type frame struct {
	Module   string `json:"module"`
	Version  string `json:"version"`
	Package  string `json:"package"`
	Function string `json:"function"`
	Receiver string `json:"receiver"`
}

func (f frame) String() string {
	s := f.Package
	if f.Receiver != "" {
		s += "." + strings.TrimPrefix(f.Receiver, "*")
	}
	if f.Function != "" {
		s += "." + f.Function
	}
	return s
}

type message struct {
	Config *struct {
		ScannerVersion string `json:"scanner_version"`
		GoVersion      string `json:"go_version"`
	} `json:"config"`
	OSV *struct {
		ID      string `json:"id"`
		Summary string `json:"summary"`
	} `json:"osv"`
	Finding *struct {
		OSV          string  `json:"osv"`
		FixedVersion string  `json:"fixed_version"`
		Trace        []frame `json:"trace"`
	} `json:"finding"`
}

// finding is one advisory as found: the deepest level it reached.
type finding struct {
	ID, Summary, Module, Version, Fixed string
	// Level: "symbol" (reachable: called from the project's code),
	// "package" (imported, not called) or "module" (required only).
	Level string
	// Example: a vulnerable symbol and the project's function that reaches it.
	Example string
}

type report struct {
	GoVersion, Scanner string
	Findings           map[string]*finding
}

var levelRank = map[string]int{"module": 0, "package": 1, "symbol": 2}

// readFindings reads govulncheck's -format json stream.
func readFindings(r io.Reader) (*report, error) {
	rep := &report{Findings: map[string]*finding{}}
	summaries := map[string]string{}
	dec := json.NewDecoder(r)
	for {
		var m message
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			return nil, err
		}
		switch {
		case m.Config != nil:
			rep.GoVersion, rep.Scanner = m.Config.GoVersion, m.Config.ScannerVersion
		case m.OSV != nil:
			summaries[m.OSV.ID] = m.OSV.Summary
		case m.Finding != nil && len(m.Finding.Trace) > 0:
			vuln := m.Finding.Trace[0]
			f := &finding{ID: m.Finding.OSV, Module: vuln.Module, Version: vuln.Version, Fixed: m.Finding.FixedVersion, Level: "module"}
			switch {
			case vuln.Function != "":
				f.Level = "symbol"
				f.Example = vuln.String()
				if entry := m.Finding.Trace[len(m.Finding.Trace)-1]; len(m.Finding.Trace) > 1 {
					f.Example += " from " + entry.String()
				}
			case vuln.Package != "":
				f.Level = "package"
			}
			if old := rep.Findings[f.ID]; old == nil || levelRank[f.Level] > levelRank[old.Level] {
				rep.Findings[f.ID] = f
			}
		}
	}
	for id, f := range rep.Findings {
		f.Summary = summaries[id]
	}
	return rep, nil
}

// print writes the findings and returns the reachable ones the policy does
// not accept.
func (rep *report) print(w io.Writer, policy map[string]string) (unlisted []string) {
	fmt.Fprintf(w, "govulncheck %s, %s\n", rep.Scanner, rep.GoVersion)
	ids := make([]string, 0, len(rep.Findings))
	for id := range rep.Findings {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	counts := map[string]int{}
	for _, id := range ids {
		f := rep.Findings[id]
		counts[f.Level]++
		fixed := f.Fixed
		if fixed == "" {
			fixed = "no fix"
		}
		where := fmt.Sprintf("%s %s@%s (fixed in %s): %s", f.ID, f.Module, f.Version, fixed, f.Summary)
		switch {
		case f.Level != "symbol":
			fmt.Fprintf(w, "  %s, not called: %s\n", f.Level, where)
		case policy[id] != "":
			fmt.Fprintf(w, "  REACHABLE, accepted: %s\n    via %s\n    README: %s\n", where, f.Example, policy[id])
		default:
			fmt.Fprintf(w, "  REACHABLE, NOT LISTED: %s\n    via %s\n", where, f.Example)
			unlisted = append(unlisted, id)
		}
	}
	accepted := make([]string, 0, len(policy))
	for id := range policy {
		accepted = append(accepted, id)
	}
	sort.Strings(accepted)
	for _, id := range accepted {
		if f := rep.Findings[id]; f == nil || f.Level != "symbol" {
			fmt.Fprintf(w, "  note: the README accepts %s, which is no longer reachable: remove it\n", id)
		}
	}
	fmt.Fprintf(w, "%d reachable (%d not listed), %d in imported packages not called, %d in required modules only\n",
		counts["symbol"], len(unlisted), counts["package"], counts["module"])
	return unlisted
}
