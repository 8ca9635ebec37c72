package fhir

import (
	"fmt"
	"testing"
)

// BenchmarkHostile decodes each hostile body at sizes from 10 KB to 1 MiB.
// The time per byte (the MB/s column) must stay flat as the size grows:
// decoding is linear in the body.
func BenchmarkHostile(b *testing.B) {
	for _, h := range hostiles {
		for _, size := range hostileSizes {
			body := h.sized(b, size)
			b.Run(fmt.Sprintf("%s/%dKB", h.name, size>>10), func(b *testing.B) {
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

var hostileSizes = []int{10 << 10, 40 << 10, 160 << 10, 640 << 10, 1 << 20}
