package httpapi

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// MaxImportBody is the limit of an import's body, apart from --max-body:
// about 40 million rows.
const MaxImportBody int64 = 2 << 30

// importIdle is how long an import may wait for more of its body.
const importIdle = time.Minute

// nominationImportRoutes registers the bulk import endpoints.
func (a *api) nominationImportRoutes(route func(string, http.Handler)) {
	route("POST /api/v1/nominations/import", a.authenticated(http.HandlerFunc(a.importNominations)))
}

// importNominations answers POST /api/v1/nominations/import: a streamed
// NDJSON (application/x-ndjson) or CSV (text/csv) file of nominations,
// applied row by row as PUT /api/v1/nominations/{nhs}/{type} would, with a
// summary and the rejected rows by line number.
func (a *api) importNominations(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if err := a.Registry.ImportAllowed(p); err != nil {
		a.writeError(w, r, err)
		return
	}
	select {
	case a.importSlots <- struct{}{}:
		defer func() { <-a.importSlots }()
	default:
		w.Header().Set("Retry-After", "60")
		a.writeError(w, r, fhir.Errorf(fhir.KindThrottled, "THROTTLED", "%d nomination imports are already running on this broker; retry later", cap(a.importSlots)))
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var format nomination.Format
	switch strings.ToLower(mt) {
	case "application/x-ndjson", "application/ndjson", "application/jsonl":
		format = nomination.NDJSON
	case "text/csv":
		format = nomination.CSV
	default:
		a.writeError(w, r, fhir.Errorf(fhir.KindUnsupportedMedia, fhir.CodeUnsupportedMedia,
			"Content-Type %q is not supported: send application/x-ndjson or text/csv", r.Header.Get("Content-Type")))
		return
	}
	tooLarge := fhir.Errorf(fhir.KindTooLarge, fhir.CodeTooLarge, "an import is limited to %d bytes: split the file (a re-run of rows already imported changes nothing)", MaxImportBody)
	if r.ContentLength > MaxImportBody {
		a.writeError(w, r, tooLarge)
		return
	}
	// The server's whole-request timeouts do not fit an upload of millions
	// of rows: instead the body must keep coming (importIdle), and the
	// answer has its own write timeout once the import is done.
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	body := &idleReader{r: http.MaxBytesReader(w, r.Body, MaxImportBody), rc: rc}
	body.extend()

	start := time.Now()
	res, err := a.Registry.Import(r.Context(), p, nomination.NewImportParser(body, format), service.ImportOptions{})
	_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		a.writeError(w, r, tooLarge)
		return
	case errors.Is(err, nomination.ErrImportHeader):
		a.writeError(w, r, fhir.Invalid(fhir.CodeInvalidValue, "structure", "", "%v", err))
		return
	case err != nil && fhir.ErrorKind(err) != fhir.KindInternal:
		a.writeError(w, r, err)
		return
	case err != nil && r.Context().Err() != nil:
		return // the client has gone
	case err != nil:
		a.writeError(w, r, fhir.Errorf(fhir.KindInvalid, fhir.CodeInvalidValue, "the import's body could not be read after line %d: %v; rows before it were applied, re-run the import", res.Rows, err))
		return
	}
	d := time.Since(start)
	a.Log.Info("nominations imported", zap.String("format", format.String()), zap.Int64("rows", res.Rows),
		zap.Int64("stored", res.Stored), zap.Int64("unchanged", res.Unchanged), zap.Int64("rejected", res.Rejected),
		zap.Duration("duration", d), zap.String("role", string(p.Role)), zap.String("org", p.ODS))
	writeJSON(w, http.StatusOK, res)
}

// idleReader moves the connection's read deadline on as the body comes.
type idleReader struct {
	r    io.Reader
	rc   *http.ResponseController
	last time.Time
}

func (b *idleReader) extend() {
	b.last = time.Now()
	_ = b.rc.SetReadDeadline(b.last.Add(importIdle))
}

func (b *idleReader) Read(p []byte) (int, error) {
	if time.Since(b.last) > time.Second {
		b.extend()
	}
	return b.r.Read(p)
}
