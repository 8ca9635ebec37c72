package test

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/nhs-eps/epsbroker/tracker/web"
)

// TestTrackerAssetsIgnoreRange: the tracker's assets are served without a
// token, so a Range header must not turn a small request into a large
// answer (go1.26.8 answered 58 KB of one-byte ranges with 916 KB of
// multipart parts, GO-2026-6609). Every Range header is ignored: the answer
// is the whole file, once, with status 200.
func TestTrackerAssetsIgnoreRange(t *testing.T) {
	b := startBroker(t, t.TempDir())
	asset, err := fs.ReadFile(web.FS(), "app.js")
	if err != nil {
		t.Fatal(err)
	}
	size := len(asset)
	oneByteRanges := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf("%d-%d", i%size, i%size)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	tests := []struct {
		name  string
		rng   string
		extra []string
	}{
		{name: "no range"},
		{name: "one range", rng: "bytes=0-99"},
		{name: "suffix range", rng: "bytes=-10"},
		{name: "two ranges", rng: "bytes=0-0,10-20"},
		{name: "200 one-byte ranges", rng: oneByteRanges(200)},
		{name: "7000 one-byte ranges", rng: oneByteRanges(7000)},
		{name: "overlapping whole-file ranges", rng: "bytes=" + strings.Repeat("0-,", 50) + "0-"},
		{name: "range past the end", rng: fmt.Sprintf("bytes=%d-", size+10)},
		{name: "if-range", rng: "bytes=0-0,2-2", extra: []string{"If-Range", "Mon, 01 Jan 2024 00:00:00 GMT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			headers := tc.extra
			if tc.rng != "" {
				headers = append([]string{"Range", tc.rng}, headers...)
			}
			res := b.do("GET", "/tracker/assets/app.js", "", nil, headers...)
			if res.Status != 200 {
				t.Fatalf("status %d, want 200 (the whole file)", res.Status)
			}
			if !bytes.Equal(res.Body, asset) {
				t.Errorf("answered %d bytes, want the file's %d bytes once", len(res.Body), size)
			}
			if ct := res.Header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/") {
				t.Errorf("Content-Type %q: ranges were served", ct)
			}
			if cr := res.Header.Get("Content-Range"); cr != "" {
				t.Errorf("Content-Range %q: a range was served", cr)
			}
			if ar := res.Header.Get("Accept-Ranges"); ar != "" && ar != "none" {
				t.Errorf("Accept-Ranges %q, want none or absent", ar)
			}
		})
	}
	// Only the files are served: no directory listing, nothing outside.
	for _, p := range []string{"/tracker/assets/", "/tracker/assets/nope.js", "/tracker/assets/../../go.mod", "/tracker/other"} {
		if res := b.do("GET", p, "", nil, "Range", "bytes=0-0,1-1"); res.Status != 404 {
			t.Errorf("GET %s: status %d, want 404", p, res.Status)
		}
	}
	if res := b.do("GET", "/tracker/assets/app.css", "", nil); res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/css") {
		t.Errorf("app.css: status %d, Content-Type %q", res.Status, res.Header.Get("Content-Type"))
	}
}
