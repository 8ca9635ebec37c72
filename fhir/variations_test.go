package fhir_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// decoded is what the broker reads of a message: the decoder's result for
// its kind, with the raw bytes left out (they differ between variations by
// construction).
type decoded struct {
	Kind  string
	Value any
	Err   error
}

// decodeAny decodes body as the broker would on the endpoint its resource
// type and event belong to.
func decodeAny(body []byte, now time.Time) decoded {
	var head struct {
		ResourceType string `json:"resourceType"`
	}
	_ = json.Unmarshal(body, &head)
	switch head.ResourceType {
	case "Parameters":
		v, err := fhir.DecodeReleaseRequest(body)
		return decoded{"release", v, err}
	case "Task":
		v, err := fhir.DecodeTaskRequest(body)
		return decoded{"task", v, err}
	case "Claim":
		v, err := fhir.DecodeClaim(body)
		return decoded{"claim", v, err}
	case "Bundle":
		m, err := fhir.DecodeMessage(body)
		if err != nil {
			return decoded{"message", nil, err}
		}
		switch m.Event {
		case fhir.EventPrescriptionOrder:
			v, err := orderOf(m, now)
			return decoded{m.Event, v, err}
		case fhir.EventPrescriptionOrderUpdate:
			v, err := m.Cancellation()
			return decoded{m.Event, v, err}
		case fhir.EventDispenseNotification:
			v, err := m.DispenseNotification()
			return decoded{m.Event, v, err}
		}
		return decoded{m.Event, nil, nil}
	}
	return decoded{"", nil, nil}
}

// orderOf validates the order of m as at now.
func orderOf(m *fhir.Message, now time.Time) (*fhir.Order, error) { return m.Order(now) }

// Every NHS example message that the broker accepts is accepted in each of
// its variations (members, entries and codings in other orders, other
// whitespace, elements EPS does not read), and read the same: real systems
// send what EPS accepts, not what the examples look like.
func TestNHSExampleVariationsReadTheSame(t *testing.T) {
	const dir = "../test/testdata/nhs/nhs-eps-api"
	now := time.Now()
	accepted := map[string]int{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !isRequest(path) {
			return err
		}
		raw := fhirgen.Redate(mustRead(t, path), now)
		want := decodeAny(raw, now)
		if want.Err != nil || want.Value == nil {
			return nil // refused or not a message the broker reads: nothing to vary
		}
		accepted[want.Kind]++
		name, _ := filepath.Rel(dir, path)
		for i, v := range fhirgen.Variations(raw, uint64(len(path))) {
			got := decodeAny(v.Body, now)
			if got.Err != nil {
				t.Errorf("%s, %s (variation %d): refused: %v", name, v.Name, i, got.Err)
				continue
			}
			if !reflect.DeepEqual(comparable(got.Value), comparable(want.Value)) {
				t.Errorf("%s, %s: read differently\n got %+v\nwant %+v", name, v.Name, got.Value, want.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The examples hold orders, cancellations, dispense notifications,
	// releases, returns/withdrawals and claims: each kind must be covered.
	for _, kind := range []string{fhir.EventPrescriptionOrder, fhir.EventPrescriptionOrderUpdate, fhir.EventDispenseNotification, "release", "task", "claim"} {
		if accepted[kind] == 0 {
			t.Errorf("no accepted NHS example of %s was varied (accepted: %v)", kind, accepted)
		}
	}
	t.Logf("varied accepted examples: %v", accepted)
}

// isRequest reports whether path is an NHS example of a request (the
// examples name them *Request* or *-req.json).
func isRequest(path string) bool {
	return strings.HasSuffix(path, ".json") && (strings.Contains(path, "Request") || strings.HasSuffix(path, "-req.json"))
}

// comparable returns a copy of v, a pointer to a decoded struct, without the
// fields that hold bytes of the message, and with its line items in the
// order of their ids (an order's items follow the order of its entries,
// which says nothing).
func comparable(v any) any {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return v
	}
	c := reflect.New(rv.Elem().Type()).Elem()
	c.Set(rv.Elem())
	for i := 0; i < c.NumField(); i++ {
		f := c.Field(i)
		switch {
		case !f.CanSet():
		case f.Type() == reflect.TypeFor[[]byte]():
			f.SetBytes(nil)
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct && f.Len() > 1:
			for _, key := range []string{"ID", "LineItemID"} {
				if _, ok := f.Type().Elem().FieldByName(key); ok {
					s := reflect.MakeSlice(f.Type(), f.Len(), f.Len())
					reflect.Copy(s, f)
					sort.Slice(s.Interface(), func(i, j int) bool {
						return s.Index(i).FieldByName(key).String() < s.Index(j).FieldByName(key).String()
					})
					f.Set(s)
					break
				}
			}
		}
	}
	return c.Interface()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
