package fhir

import (
	"bytes"
	"strconv"
	"strings"
)

// pathSeg is one step of a JSON path: an array index when index >= 0, an
// object key otherwise.
type pathSeg struct {
	key   []byte
	index int
}

// fhirPath formats path as a FHIRPath expression under root, e.g.
// Bundle.entry[3].resource.subject. Keys that are not plain identifiers are
// written between backticks.
func fhirPath(root string, path []pathSeg) string {
	var sb strings.Builder
	sb.WriteString(root)
	for _, seg := range path {
		if seg.index >= 0 {
			sb.WriteByte('[')
			sb.WriteString(strconv.Itoa(seg.index))
			sb.WriteByte(']')
			continue
		}
		sb.WriteByte('.')
		key := clip(string(seg.key))
		if isIdentifier(key) {
			sb.WriteString(key)
		} else {
			sb.WriteByte('`')
			sb.WriteString(strings.ReplaceAll(key, "`", "\\`"))
			sb.WriteByte('`')
		}
	}
	return sb.String()
}

// isIdentifier reports whether s is a simple FHIRPath identifier.
func isIdentifier(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// refIndex resolves references against the entries of a Bundle.
type refIndex struct {
	entries   []Entry
	fullURL   map[string]int          // entry index by fullUrl
	relative  map[string]int          // entry index by "Type/id", built on first use
	contained map[int]map[string]bool // contained ids by entry index, built on first use
}

// newRefIndex indexes entries by fullUrl. Two entries with the same fullUrl
// make references ambiguous: that is an error (FHIR rule bdl-7).
func newRefIndex(entries []Entry) (*refIndex, *Error) {
	x := &refIndex{entries: entries, fullURL: make(map[string]int, len(entries))}
	for k, e := range entries {
		if e.FullURL == "" {
			continue
		}
		if first, dup := x.fullURL[e.FullURL]; dup {
			return nil, Invalid(CodeInvalidValue, "duplicate", "Bundle.entry["+strconv.Itoa(k)+"].fullUrl",
				"Bundle.entry[%d].fullUrl %s is also the fullUrl of Bundle.entry[%d]: fullUrls must be unique in a Bundle",
				k, quote(e.FullURL), first)
		}
		x.fullURL[e.FullURL] = k
	}
	return x, nil
}

// resolve returns the index of the entry that ref designates, or -1. holder
// is the index of the entry whose resource holds the reference (-1 if none):
// a local reference "#id" designates a resource contained in it, and then
// resolve returns holder.
//
//   - "#id": a resource in the holder's contained array with that id ("#"
//     alone is the holder itself);
//   - an absolute reference (urn:uuid:..., https://...): the entry with that
//     fullUrl;
//   - a relative reference "Type/id" (optionally followed by /_history/v):
//     the entry whose resource has that type and id, or whose fullUrl ends
//     with /Type/id.
func (x *refIndex) resolve(ref []byte, holder int) int {
	switch {
	case len(ref) == 0:
		return -1
	case ref[0] == '#':
		if holder >= 0 && holder < len(x.entries) && (len(ref) == 1 || x.containsID(holder, ref[1:])) {
			return holder
		}
		return -1
	case bytes.IndexByte(ref, ':') >= 0:
		if k, ok := x.fullURL[string(ref)]; ok {
			return k
		}
		return -1
	}
	if i := bytes.Index(ref, []byte("/_history/")); i >= 0 {
		ref = ref[:i]
	}
	if x.relative == nil {
		x.indexRelative()
	}
	if k, ok := x.relative[string(ref)]; ok {
		return k
	}
	return -1
}

// indexRelative fills x.relative from each entry's resourceType and id and
// from the last two segments of RESTful fullUrls.
func (x *refIndex) indexRelative() {
	x.relative = make(map[string]int, len(x.entries))
	add := func(key string, k int) {
		if _, seen := x.relative[key]; !seen {
			x.relative[key] = k
		}
	}
	for k, e := range x.entries {
		if e.ID != "" {
			add(e.ResourceType+"/"+e.ID, k)
		}
		if i := strings.LastIndexByte(e.FullURL, '/'); i > 0 {
			if j := strings.LastIndexByte(e.FullURL[:i], '/'); j >= 0 {
				add(e.FullURL[j+1:], k)
			}
		}
	}
}

// containsID reports whether the resource of entry k has a contained
// resource with the given id. Each resource is read once, however many
// local references it holds.
func (x *refIndex) containsID(k int, id []byte) bool {
	ids, ok := x.contained[k]
	if !ok {
		ids = containedIDs(x.entries[k].Resource)
		if x.contained == nil {
			x.contained = make(map[int]map[string]bool)
		}
		x.contained[k] = ids
	}
	return ids[string(id)]
}

// containedIDs returns the ids of the contained resources of res.
func containedIDs(res []byte) map[string]bool {
	ids := make(map[string]bool)
	r := newReader(res, "")
	r.object(func(key []byte) {
		if string(key) != "contained" {
			return
		}
		r.array(func(int) {
			r.object(func(key []byte) {
				if string(key) == "id" {
					ids[r.str()] = true
				}
			})
		})
	})
	return ids
}
