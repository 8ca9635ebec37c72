package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/broker/service"
	"github.com/nhs-eps/epsbroker/fhir"
)

// benchOrder is the 4-item NHS order (15.6 KB) the load generator sends.
const benchOrder = "../../test/testdata/nhs/nhs-eps-api/primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json"

// productionLog is a logger built as the broker's (cmd/epsbroker newLogger:
// JSON, caller, ISO 8601 time, stack traces on errors) that writes to
// io.Discard, so that a benchmark measures the encoding, not the terminal.
func productionLog() *zap.Logger {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "time"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(io.Discard), zap.InfoLevel)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zap.ErrorLevel))
}

// benchWriter is a ResponseWriter that keeps nothing but its headers.
type benchWriter struct{ h http.Header }

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *benchWriter) WriteHeader(int)             {}

// BenchmarkObserve is the request middleware alone (metrics, the echoed
// IDs and the access log line, with the broker's logger encoding to
// io.Discard) around a handler that only answers 200.
func BenchmarkObserve(b *testing.B) {
	a := &api{Deps: Deps{Metrics: testMetrics(), Log: productionLog(), Now: time.Now}}
	p := auth.Principal{Subject: "555086689106", Role: auth.RolePrescriber, ODS: "A83008"}
	h := a.observe("POST /FHIR/R4/$process-message", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if o, ok := w.(*observedWriter); ok {
			o.principal = p
		}
		w.WriteHeader(http.StatusOK)
	}))
	r := httptest.NewRequest(http.MethodPost, "/FHIR/R4/$process-message", nil)
	r.Header.Set("X-Request-ID", "8b4e3f52-51b3-4c43-a3b3-4c4a7cbe6c51")
	r.Header.Set("X-Correlation-ID", "11c4c5f7-0b0e-4a1f-9b2d-6a3b1c2d3e4f")
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
	}
}

// BenchmarkWithBody reads the 4-item NHS order's body (with its
// Content-Length, as clients send it) through withBody.
func BenchmarkWithBody(b *testing.B) {
	body, err := os.ReadFile(benchOrder)
	if err != nil {
		b.Fatal(err)
	}
	a := &api{Deps: Deps{Metrics: testMetrics(), Log: zap.NewNop(), MaxBody: 1 << 20, Now: time.Now}}
	h := a.withBody(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		if got := bodyFrom(r.Context()); !bytes.Equal(got, body) {
			b.Fatalf("body of %d bytes read, want %d", len(got), len(body))
		}
	}))
	r := httptest.NewRequest(http.MethodPost, "/FHIR/R4/$process-message", nil)
	r.Header.Set("Content-Type", "application/fhir+json")
	r.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		rd.Reset(body)
		r.Body = io.NopCloser(rd)
		h.ServeHTTP(w, r)
	}
}

// TestReadBody reads bodies of a declared size, of none, and of another
// size than declared: every byte is read, whatever the declaration.
func TestReadBody(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	for _, size := range []int64{-1, 0, 1, 512, int64(len(body)) - 1, int64(len(body)), int64(len(body)) + 1, 3 * int64(len(body)), 1 << 30} {
		got, err := readBody(iotest.OneByteReader(bytes.NewReader(body)), size)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("size %d: read %d bytes, %v; want %d bytes", size, len(got), err, len(body))
		}
		got, err = readBody(bytes.NewReader(body), size)
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("size %d: read %d bytes, %v; want %d bytes", size, len(got), err, len(body))
		}
	}
	if _, err := readBody(iotest.ErrReader(io.ErrUnexpectedEOF), 10); err != io.ErrUnexpectedEOF {
		t.Errorf("error %v, want %v", err, io.ErrUnexpectedEOF)
	}
	// A declared size past presizeLimit is not allocated before the bytes
	// arrive.
	if b, _ := readBody(iotest.ErrReader(io.ErrUnexpectedEOF), 16<<20); cap(b) > presizeLimit+1 {
		t.Errorf("a body declared as 16 MiB and not sent holds a buffer of %d bytes", cap(b))
	}
}

// benchIntake accepts every message with the same answer.
type benchIntake struct{ out *service.Outcome }

func (i benchIntake) ProcessMessage(context.Context, auth.Principal, []byte) (*service.Outcome, error) {
	return i.out, nil
}

// BenchmarkProcessMessageHandler is the whole HTTP layer of an accepted
// order, without the intake behind it: the broker's handler (routing,
// access log and metrics, security headers, limits, bearer token, body,
// answer) for POST $process-message with the 4-item NHS order, the intake a
// stub that accepts it.
func BenchmarkProcessMessageHandler(b *testing.B) {
	body, err := os.ReadFile(benchOrder)
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(Deps{
		Intake:   benchIntake{&service.Outcome{Body: fhir.InformationalOutcome(time.Now())}},
		Verifier: testPrincipals, Metrics: testMetrics(), Log: productionLog(),
		MaxBody: 1 << 20, Now: time.Now,
	})
	r := httptest.NewRequest(http.MethodPost, "/FHIR/R4/$process-message", nil)
	r.Header.Set("Content-Type", "application/fhir+json")
	r.Header.Set("Authorization", "Bearer "+tokPrescriber)
	r.Header.Set("X-Correlation-ID", "11c4c5f7-0b0e-4a1f-9b2d-6a3b1c2d3e4f")
	r.ContentLength = int64(len(body))
	rd := bytes.NewReader(body)
	w := &benchWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		rd.Reset(body)
		r.Body = io.NopCloser(rd)
		h.ServeHTTP(w, r)
	}
}
