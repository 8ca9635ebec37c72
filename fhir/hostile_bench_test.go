package fhir

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

// BenchmarkHostile decodes each hostile body at sizes from 10 KB to 1 MiB,
// with the array bound lifted (so that every element reaches the readers)
// and with it (the broker's case: refused at element MaxJSONArray+1). The
// time per byte (the MB/s column) must stay flat as the size grows: decoding
// is linear in the body.
func BenchmarkHostile(b *testing.B) {
	for _, bound := range []bool{false, true} {
		for _, h := range hostiles {
			for _, size := range hostileSizes {
				body := h.sized(b, size)
				name := fmt.Sprintf("bounded=%v/%s/%dKB", bound, strings.ReplaceAll(h.name, " ", "_"), size>>10)
				b.Run(name, func(b *testing.B) {
					if !bound {
						liftArrayBound(b)
					}
					b.SetBytes(int64(len(body)))
					for b.Loop() {
						if decodeKind(h.kind, body) == nil {
							b.Fatal("accepted")
						}
					}
				})
			}
		}
	}
}

var hostileSizes = []int{10 << 10, 40 << 10, 160 << 10, 640 << 10, 1 << 20}

// BenchmarkHostileWithinBounds decodes the costliest body found that keeps
// within the bounds: claim items each of 1000 empty details (each detail
// costs a struct of the reader), up to 1 MiB.
func BenchmarkHostileWithinBounds(b *testing.B) {
	details := "[" + strings.Repeat("{},", MaxJSONArray-1) + "{}]"
	h := hostile{name: "Claim item [{detail:[{} x 1000]}]", array: "Claim.item", kind: asClaim, base: claimFixture,
		at: func(b bundle) { b["item"] = sentinel }, elem: `{"detail":` + details + `}`}
	for _, size := range hostileSizes {
		body := h.sized(b, size)
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if decodeKind(h.kind, body) == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}

// liftArrayBound lifts the bound on array lengths for the rest of b.
func liftArrayBound(b testing.TB) {
	saved := limits
	limits.array = math.MaxInt
	b.Cleanup(func() { limits = saved })
}

// BenchmarkJSONCheck compares the syntax check (checkJSON: JSON, UTF-8,
// limits, duplicate names) with encoding/json/jsontext
// (github.com/go-json-experiment/json), which refuses duplicate names by
// default: its Value.IsValid (no limits, no path), and a Decoder reading
// every token and checking the limits (what the broker would need of it).
func BenchmarkJSONCheck(b *testing.B) {
	order := readFixture(b, order4Items)
	var big bytes.Buffer // a Bundle of about 1 MiB of orders
	big.WriteString(`{"resourceType":"Bundle","entry":[`)
	for big.Len() < 1<<20 {
		big.Write(order)
		big.WriteByte(',')
	}
	big.Truncate(big.Len() - 1)
	big.WriteString("]}")
	hostile := hostiles[0].sized(b, 1<<20)
	for _, in := range []struct {
		name string
		body []byte
		lim  jsonLimits
	}{
		{"order4Items", order, limits},
		{"orders1MiB", big.Bytes(), limits},
		{"entry{}1MiB", hostile, unlimited},
	} {
		check := func(b *testing.B, fn func([]byte) bool) {
			b.SetBytes(int64(len(in.body)))
			b.ReportAllocs()
			for b.Loop() {
				if !fn(in.body) {
					b.Fatal("refused")
				}
			}
		}
		b.Run(in.name+"/checkJSON", func(b *testing.B) {
			check(b, func(body []byte) bool { return checkJSON(body, in.lim, false).fault == faultNone })
		})
		b.Run(in.name+"/jsontext.IsValid", func(b *testing.B) {
			check(b, func(body []byte) bool { return jsontext.Value(body).IsValid() })
		})
		b.Run(in.name+"/jsontext.Decoder", func(b *testing.B) {
			check(b, func(body []byte) bool { return jsontextCheck(body, in.lim) == nil })
		})
	}
}

// jsontextCheck is checkJSON written with a jsontext.Decoder: each token is
// read, the depth and the length of the innermost array checked; its errors
// carry the JSON Pointer of the value at fault.
func jsontextCheck(body []byte, lim jsonLimits) error {
	d := jsontext.NewDecoder(bytes.NewBuffer(body))
	for {
		tok, err := d.ReadToken()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		depth := d.StackDepth()
		if k := tok.Kind(); (k == '{' || k == '[') && depth > lim.depth {
			return fmt.Errorf("%s: too deep", d.StackPointer())
		}
		if kind, n := d.StackIndex(depth); kind == '[' && n > int64(lim.array) {
			return fmt.Errorf("%s: too long", d.StackPointer())
		}
	}
}
