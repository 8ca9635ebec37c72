package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
)

func init() {
	register(command{
		name:    "nominations import",
		summary: "import nominations in bulk from an NDJSON or CSV file",
		run:     runNominationsImport,
	})
}

const nominationsImportDescription = `
Streams FILE to the broker's POST /api/v1/nominations/import, with a progress
bar on the bytes sent, and prints the summary and every rejected row with its
line number. FILE is NDJSON, one {"nhsNumber": "...", "type": "P1", "ods": "..."}
a line, or CSV with the header nhsNumber,type,ods (by its .csv extension, or
--format). Each row is applied as a PUT of that nomination would be: a row
already so on record changes nothing, so re-running an interrupted import
gives the same final state. Rejected rows do not fail the command: it exits 1
only when the import could not be done.

Authenticate with --token (env EPS_TOKEN), or --data-dir DIR to sign an admin
token with the issuer key of a broker running on DIR.`

// importAnswer is the broker's answer to an import.
type importAnswer struct {
	Rows       int64 `json:"rows"`
	Stored     int64 `json:"stored"`
	Unchanged  int64 `json:"unchanged"`
	Rejected   int64 `json:"rejected"`
	Rejections []struct {
		Line   int    `json:"line"`
		Reason string `json:"reason"`
	} `json:"rejections"`
	MoreRejections int64 `json:"moreRejections"`
}

// runNominationsImport implements "epsctl nominations import FILE".
func runNominationsImport(ctx context.Context, e *env, args []string) int {
	const name = "nominations import"
	fset := newFlagSet(name, "FILE [--url URL] [--token T | --data-dir DIR] [flags]", nominationsImportDescription)
	url := fset.String("url", envOr(e, "EPS_URL", "http://127.0.0.1:8080"), "the broker's base `URL` (env EPS_URL)")
	token := fset.String("token", e.getenv("EPS_TOKEN"), "bearer `T` of an admin, prescriber or dispenser (env EPS_TOKEN)")
	dataDir := fset.String("data-dir", "", "sign an admin token with the issuer key in the broker's data `DIR` instead of --token")
	ods := fset.String("ods", "X26", "the `ODS` code of the admin's organisation, with --data-dir")
	format := fset.String("format", "", "the file's `FORMAT`: ndjson or csv (default by the extension: .csv is csv, else ndjson)")
	quiet := fset.Bool("quiet", false, "no progress bar")
	// Flags may follow FILE.
	var file string
	rest := args
	for len(rest) > 0 && file == "" {
		if code, ok := parseFlags(fset, e, rest); !ok {
			return code
		}
		if fset.NArg() == 0 {
			break
		}
		file, rest = fset.Arg(0), fset.Args()[1:]
		if len(rest) > 0 {
			if code, ok := parseFlags(fset, e, rest); !ok {
				return code
			}
			if fset.NArg() > 0 {
				return usageError(e, name, "unexpected argument %q", fset.Arg(0))
			}
		}
	}
	if file == "" {
		return usageError(e, name, "give the FILE to import")
	}
	if *format == "" {
		*format = "ndjson"
		if strings.HasSuffix(strings.ToLower(file), ".csv") {
			*format = "csv"
		}
	}
	var contentType string
	switch *format {
	case "ndjson", "jsonl":
		contentType = "application/x-ndjson"
	case "csv":
		contentType = "text/csv"
	default:
		return usageError(e, name, "--format %q: want ndjson or csv", *format)
	}
	if *token == "" && *dataDir == "" {
		return usageError(e, name, "give --token (or env EPS_TOKEN), or --data-dir to sign an admin token")
	}
	if *token == "" {
		if _, err := os.Stat(auth.IssuerKeyPath(*dataDir)); err != nil {
			return failure(e, name, fmt.Errorf("no issuer key in --data-dir %s: %w", *dataDir, err))
		}
		if !fhir.ValidODSCode(*ods) {
			return usageError(e, name, "--ods %q is not an ODS code", *ods)
		}
		key, err := auth.LoadOrCreateIssuerKey(*dataDir)
		if err != nil {
			return failure(e, name, err)
		}
		*token, err = auth.Mint(key, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: "epsctl-import", ODS: *ods, Role: auth.RoleAdmin}, 24*time.Hour, e.now())
		if err != nil {
			return failure(e, name, err)
		}
	}

	f, err := os.Open(file)
	if err != nil {
		return failure(e, name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return failure(e, name, err)
	}
	var body io.Reader = f
	var bar *progressbar.ProgressBar
	if !*quiet {
		bar = progressbar.NewOptions64(st.Size(), progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription("sending"), progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetPredictTime(true))
		r := progressbar.NewReader(f, bar)
		body = &r
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*url, "/")+"/api/v1/nominations/import", body)
	if err != nil {
		return usageError(e, name, "--url: %v", err)
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+*token)
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(e.stderr)
	}
	if err != nil {
		return failure(e, name, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return failure(e, name, err)
	}
	if res.StatusCode != http.StatusOK {
		return failure(e, name, fmt.Errorf("%s: %s", res.Status, diagnostics(b)))
	}
	var a importAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return failure(e, name, fmt.Errorf("answer: %w", err))
	}
	d := time.Since(start)
	for _, rj := range a.Rejections {
		fmt.Fprintf(e.stdout, "line %d: %s\n", rj.Line, rj.Reason)
	}
	if a.MoreRejections > 0 {
		fmt.Fprintf(e.stdout, "... and %d more rejected rows\n", a.MoreRejections)
	}
	fmt.Fprintf(e.stdout, "%d rows: %d stored, %d unchanged, %d rejected in %s (%.0f rows/s)\n",
		a.Rows, a.Stored, a.Unchanged, a.Rejected, d.Round(time.Millisecond), float64(a.Rows)/d.Seconds())
	return exitOK
}

// diagnostics returns the words of an OperationOutcome, or the body.
func diagnostics(b []byte) string {
	var oo struct {
		Issue []struct {
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) == nil && len(oo.Issue) > 0 && oo.Issue[0].Diagnostics != "" {
		return oo.Issue[0].Diagnostics
	}
	if len(b) > 500 {
		b = b[:500]
	}
	return strings.TrimSpace(string(b))
}

func envOr(e *env, key, def string) string {
	if v := e.getenv(key); v != "" {
		return v
	}
	return def
}
