package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sort"
	"strings"

	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// oneItemOrder is the smallest valid NHS order epsctl load stores for
// --stored: NHS England's 4-item example (fhirgen.Order4Items) with its
// first MedicationRequest only (the others dropped, with their
// MessageHeader.focus and Provenance.target references). NewTemplate
// validates it, so it is accepted as any order.
func oneItemOrder() (*fhirgen.Template, error) {
	var dropped []string
	body := fhirgen.Mutate(fhirgen.Order4Items, func(m map[string]any) {
		entries, _ := m["entry"].([]any)
		kept := entries[:0:0]
		items := 0
		for _, e := range entries {
			em, _ := e.(map[string]any)
			res, _ := em["resource"].(map[string]any)
			if res["resourceType"] == "MedicationRequest" {
				items++
				if items > 1 {
					dropped = append(dropped, fmt.Sprint(em["fullUrl"]))
					continue
				}
			}
			kept = append(kept, e)
		}
		m["entry"] = kept
		gone := map[string]bool{}
		for _, u := range dropped {
			gone[u] = true
		}
		for _, e := range kept {
			res, _ := e.(map[string]any)["resource"].(map[string]any)
			for _, key := range []string{"focus", "target"} {
				refs, ok := res[key].([]any)
				if !ok {
					continue
				}
				keep := refs[:0:0]
				for _, r := range refs {
					if rm, _ := r.(map[string]any); !gone[fmt.Sprint(rm["reference"])] {
						keep = append(keep, r)
					}
				}
				res[key] = keep
			}
		}
	})
	if len(dropped) != 3 {
		return nil, fmt.Errorf("1-item order: dropped %d items of the 4-item example, want 3", len(dropped))
	}
	t, err := fhirgen.NewTemplate(body)
	if err != nil {
		return nil, fmt.Errorf("1-item order: %w", err)
	}
	return t, nil
}

// orderGen makes orders like fhirgen.Template.Order, fast: the body of one
// generated order (redated once, at start) is cut at every identifier the
// template replaces (each UUID, the short prescription ID, the NHS number),
// and each order joins the pieces with fresh identifiers. Template.Order
// costs 0.3-0.8 ms of CPU an order (a strings.Replacer over the whole body
// and a redating), which the load generator would take from the broker it
// shares the two cores with; this costs a copy of the body.
type orderGen struct {
	base   *fhirgen.Generated
	segs   [][]byte // literal pieces, one more than slots
	slots  []int    // which identifier goes between segs[i] and segs[i+1]
	nUUID  int      // identifiers 0..nUUID-1 are UUIDs
	short  int      // the short prescription ID's identifier
	nhs    int      // the NHS number's
	bundle int      // the Bundle.identifier's (a UUID)
	long   int      // the long prescription ID's (a UUID)
	items  []int    // the line item ids' (UUIDs), in order; -1: kept as is
	size   int
}

func newOrderGen(t *fhirgen.Template, sender, performer string) (*orderGen, error) {
	g0, err := t.Order(fhirgen.Options{Sender: sender, Performer: performer})
	if err != nil {
		return nil, err
	}
	body := g0.Body
	og := &orderGen{base: g0, bundle: -1, long: -1}
	type match struct{ start, end, slot int }
	var ms []match
	index := map[string]int{}
	for _, loc := range uuidRe.FindAllIndex(body, -1) {
		u := strings.ToLower(string(body[loc[0]:loc[1]]))
		n, ok := index[u]
		if !ok {
			n = len(index)
			index[u] = n
		}
		ms = append(ms, match{loc[0], loc[1], n})
	}
	og.nUUID = len(index)
	og.short, og.nhs = og.nUUID, og.nUUID+1
	for _, q := range []struct {
		value string
		slot  int
	}{{g0.ShortID, og.short}, {g0.NHSNumber, og.nhs}} {
		quoted := []byte(`"` + q.value + `"`)
		for off := 0; ; {
			i := bytes.Index(body[off:], quoted)
			if i < 0 {
				break
			}
			start := off + i + 1
			ms = append(ms, match{start, start + len(q.value), q.slot})
			off = start + len(q.value)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].start < ms[j].start })
	prev := 0
	for _, m := range ms {
		if m.start < prev {
			return nil, fmt.Errorf("order generator: identifiers overlap at byte %d", m.start)
		}
		og.segs = append(og.segs, body[prev:m.start])
		og.slots = append(og.slots, m.slot)
		prev = m.end
	}
	og.segs = append(og.segs, body[prev:])
	slotOf := func(u string) int {
		if n, ok := index[strings.ToLower(u)]; ok {
			return n
		}
		return -1
	}
	og.bundle, og.long = slotOf(g0.BundleID), slotOf(g0.LongID)
	if og.bundle < 0 || og.long < 0 {
		return nil, fmt.Errorf("order generator: the Bundle or prescription UUID is not in the order")
	}
	for _, id := range g0.ItemIDs {
		og.items = append(og.items, slotOf(id))
	}
	og.size = len(body) + 64
	return og, nil
}

// order makes a new order.
func (og *orderGen) order() *fhirgen.Generated {
	vals := make([]string, og.nUUID+2)
	for i := 0; i < og.nUUID; i++ {
		vals[i] = fastUUID()
	}
	vals[og.short] = fhirgen.ShortID(og.base.Sender)
	vals[og.nhs] = fhirgen.NHSNumber()
	out := make([]byte, 0, og.size)
	for i, s := range og.slots {
		out = append(out, og.segs[i]...)
		out = append(out, vals[s]...)
	}
	out = append(out, og.segs[len(og.segs)-1]...)
	g := &fhirgen.Generated{Body: out, BundleID: vals[og.bundle], LongID: vals[og.long], ShortID: vals[og.short],
		NHSNumber: vals[og.nhs], Sender: og.base.Sender, Performer: og.base.Performer}
	for i, s := range og.items {
		if s < 0 {
			g.ItemIDs = append(g.ItemIDs, og.base.ItemIDs[i])
		} else {
			g.ItemIDs = append(g.ItemIDs, vals[s])
		}
	}
	return g
}

var uuidRe = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

// fastUUID is a random version 4 UUID from math/rand/v2's per-goroutine
// ChaCha8 (unique enough for load; not for secrets).
func fastUUID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
