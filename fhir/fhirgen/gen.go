// Package fhirgen makes variations of real NHS messages for tests and load:
// the same bundle with fresh, consistent identifiers (message id, short and
// long prescription IDs with a right check character, line item ids, NHS
// number, sender and performer ODS codes).
//
// order-4-items.json is NHS England's example
// primary-care/acute/nominated-pharmacy/medical-prescriber/1-Process-Request-Send-200_OK.json
// from NHSDigital/electronic-prescription-service-api (examples/, commit
// 77e80e11f58013e89c6b4f1c3d767373faa8c29d), MIT and Open Government Licence
// v3, Crown copyright; unchanged.
package fhirgen

import (
	"bytes"
	"cmp"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Order4Items is the NHS example order with four line items, nominated to
// pharmacy FA565 by GP practice A83008.
//
//go:embed order-4-items.json
var Order4Items []byte

// Template is an order message whose identifiers can be replaced.
type Template struct {
	raw       []byte
	bundleID  string
	shortID   string
	longID    string
	nhsNumber string
	sender    string
	performer string
	itemIDs   []string // the line item ids, in the order of the MedicationRequests
	uuids     []string // every other UUID in the message (fullUrls, item ids)
}

var uuidRe = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)

// NewTemplate reads the identifiers of a valid prescription-order. The
// order is validated as of its own date (MessageDate): an NHS example
// written in 2022 was valid then, and generated orders are redated.
func NewTemplate(order []byte) (*Template, error) {
	msg, err := fhir.DecodeMessage(order)
	if err != nil {
		return nil, err
	}
	at, ok := MessageDate(order)
	if !ok {
		at = time.Now()
	}
	o, err := msg.Order(at)
	if err != nil {
		return nil, err
	}
	t := &Template{raw: order, bundleID: o.BundleID, shortID: o.PrescriptionID, longID: o.LongID,
		nhsNumber: o.NHSNumber, sender: o.Sender, performer: o.Performer}
	for _, it := range o.Items {
		t.itemIDs = append(t.itemIDs, it.ID)
	}
	seen := map[string]bool{strings.ToLower(o.BundleID): true, strings.ToLower(o.LongID): true}
	for _, u := range uuidRe.FindAll(order, -1) {
		s := strings.ToLower(string(u))
		if !seen[s] {
			seen[s] = true
			t.uuids = append(t.uuids, string(u))
		}
	}
	return t, nil
}

// Options choose the identifiers of a generated order; empty fields are
// generated (sender and performer keep the template's).
type Options struct {
	Sender    string // ODS code of the prescriber (MessageHeader.sender, Organization, ID's middle part)
	Performer string // nominated dispenser ODS code
	NHSNumber string
	ShortID   string
	BundleID  string
	// Now dates the order (see Redate): its dates move by whole days so
	// that it is written on Now's date. Zero means time.Now().
	Now time.Time
	// KeepDates leaves the template's dates as they are (an old order, for
	// testing expiry).
	KeepDates bool
}

// Generated is an order made from a template and the identifiers it got.
type Generated struct {
	Body      []byte
	BundleID  string
	ShortID   string
	LongID    string
	NHSNumber string
	Sender    string
	Performer string
	// ItemIDs are the line item ids (MedicationRequest identifiers), in the
	// order of the MedicationRequests.
	ItemIDs []string
}

// Order makes a new order from the template.
func (t *Template) Order(o Options) (*Generated, error) {
	g := &Generated{Sender: o.Sender, Performer: o.Performer, NHSNumber: o.NHSNumber, ShortID: o.ShortID, BundleID: o.BundleID}
	if g.Sender == "" {
		g.Sender = t.sender
	}
	if g.Performer == "" {
		g.Performer = t.performer
	}
	if g.NHSNumber == "" {
		g.NHSNumber = NHSNumber()
	}
	if g.ShortID == "" {
		g.ShortID = ShortID(g.Sender)
	}
	if g.BundleID == "" {
		g.BundleID = uuid.NewString()
	}
	g.LongID = uuid.NewString()
	pairs := []string{
		t.bundleID, g.BundleID,
		t.longID, g.LongID,
		`"` + t.shortID + `"`, `"` + g.ShortID + `"`,
		`"` + t.nhsNumber + `"`, `"` + g.NHSNumber + `"`,
	}
	if t.sender != g.Sender {
		pairs = append(pairs, `"`+t.sender+`"`, `"`+g.Sender+`"`, "/"+t.sender+`"`, "/"+g.Sender+`"`)
	}
	if t.performer != "" && t.performer != g.Performer {
		pairs = append(pairs, `"`+t.performer+`"`, `"`+g.Performer+`"`)
	}
	fresh := make(map[string]string, len(t.uuids))
	for _, u := range t.uuids {
		n := uuid.NewString()
		fresh[strings.ToLower(u)] = n
		pairs = append(pairs, u, n)
	}
	for _, id := range t.itemIDs {
		n, ok := fresh[strings.ToLower(id)]
		switch {
		case ok:
		case strings.EqualFold(id, t.bundleID):
			n = g.BundleID
		case strings.EqualFold(id, t.longID):
			n = g.LongID
		default:
			n = id
		}
		g.ItemIDs = append(g.ItemIDs, n)
	}
	g.Body = []byte(strings.NewReplacer(pairs...).Replace(string(t.raw)))
	if !o.KeepDates {
		g.Body = Redate(g.Body, cmp.Or(o.Now, time.Now()))
	}
	return g, nil
}

// Mutate decodes a message into generic JSON, lets edit change it, and
// encodes it again (for generating bad inputs from a good one).
func Mutate(body []byte, edit func(m map[string]any)) []byte {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		panic(fmt.Sprintf("fhirgen.Mutate: %v", err))
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("fhirgen.Mutate: %v", err))
	}
	return out
}

// NHSNumber returns a random NHS number with a right modulus 11 check digit.
func NHSNumber() string {
	for {
		n, _ := rand.Int(rand.Reader, big.NewInt(1_000_000_000))
		s := fmt.Sprintf("9%08d", n.Int64()%100_000_000)
		sum := 0
		for i := 0; i < 9; i++ {
			sum += int(s[i]-'0') * (10 - i)
		}
		check := 11 - sum%11
		if check == 10 {
			continue
		}
		if check == 11 {
			check = 0
		}
		return s + string(rune('0'+check))
	}
}

// ShortID returns a random short-form prescription ID for a prescriber ODS
// code, with its MOD 37-2 check character.
func ShortID(ods string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	h := strings.ToUpper(hex.EncodeToString(b[:]))
	mid := ods
	if len(mid) < 6 {
		mid = strings.Repeat("0", 6-len(mid)) + mid
	}
	body := h[:6] + "-" + mid[:6] + "-" + h[6:11]
	return body + string(fhir.ShortIDCheckChar(body))
}
