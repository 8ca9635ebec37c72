package fhirgen

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/fhir"
)

// nhsExamples is where the repository keeps the NHS example messages.
const nhsExamples = "../../test/testdata/nhs/nhs-eps-api"

// The examples kept in lifecycle.go are the repository's NHS fixtures,
// unchanged.
func TestLifecycleExamplesUnchanged(t *testing.T) {
	for path, text := range map[string]string{
		"spec/dispensing/dispense-notification/acute-primary-example-01-req.json":                                     dispenseNotificationExample,
		"spec/dispensing/return/acute-primary-example-req.json":                                                       returnExample,
		"spec/dispensing/withdraw/acute-primary-example-req.json":                                                     withdrawExample,
		"spec/dispensing/claim/acute-primary-example-req.json":                                                        claimExample,
		"primary-care/acute/nominated-pharmacy/medical-prescriber/cancellations/1-Process-Request-Cancel-200_OK.json": cancellationExample,
		"spec/dispense/Nominated-Pharmacy-Request-Release-200_OK.json":                                                releaseExample,
	} {
		b, err := os.ReadFile(filepath.Join(nhsExamples, path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.TrimSpace(b), bytes.TrimSpace([]byte(text))) {
			t.Errorf("the copy of %s in lifecycle.go differs from the fixture", path)
		}
	}
}

// templates are orders of each kind: nominated acute (4 items), nominated
// repeat prescribing (4 items), non-nominated acute (2 items).
func templates(t *testing.T) map[string]*Template {
	t.Helper()
	out := map[string]*Template{}
	for name, path := range map[string]string{
		"repeat":        "primary-care/repeat-prescribing/1-Process-Request-Send-200_OK.json",
		"non-nominated": "primary-care/acute/no-nominated-pharmacy/medical-prescriber/author/gmc/responsible-party/din/1-Process-Request-Send-200_OK.json",
	} {
		b, err := os.ReadFile(filepath.Join(nhsExamples, path))
		if err != nil {
			t.Fatal(err)
		}
		if out[name], err = NewTemplate(b); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	var err error
	if out["acute"], err = NewTemplate(Order4Items); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestGeneratedItemIDs(t *testing.T) {
	for name, tmpl := range templates(t) {
		g, err := tmpl.Order(Options{Performer: "FCG71"})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := fhir.DecodeMessage(g.Body)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		o, err := msg.Order(time.Now())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var ids []string
		for _, it := range o.Items {
			ids = append(ids, it.ID)
		}
		if !slices.Equal(ids, g.ItemIDs) || len(ids) == 0 {
			t.Errorf("%s: ItemIDs %v, the order has %v", name, g.ItemIDs, ids)
		}
		for _, id := range tmpl.itemIDs {
			if slices.Contains(g.ItemIDs, id) {
				t.Errorf("%s: line item id %s not replaced", name, id)
			}
		}
	}
}

// Every lifecycle message decodes and names the generated order's
// identifiers.
func TestLifecycleMessagesDecode(t *testing.T) {
	for name, tmpl := range templates(t) {
		g, _ := tmpl.Order(Options{})
		t.Run(name, func(t *testing.T) {
			statuses := map[string]string{}
			for i, id := range g.ItemIDs {
				statuses[id] = []string{"0001", "0003", "0004", "0002"}[i%4]
			}
			body, id := DispenseNotification(g, "FCG71", statuses, "0003", "")
			checkDispense(t, body, id, g, statuses, "0003", "")
			prev := id
			body, id = DispenseNotification(g, "FCG71", map[string]string{g.ItemIDs[0]: "0001"}, "0006", prev)
			checkDispense(t, body, id, g, map[string]string{g.ItemIDs[0]: "0001"}, "0006", prev)

			ret, err := fhir.DecodeTaskRequest(ReturnTask(g, "FCG71", "0003"))
			if err != nil {
				t.Fatalf("return: %v", err)
			}
			if ret.Kind != fhir.TaskKindReturn || ret.PrescriptionID != g.ShortID || ret.LongID != g.LongID || ret.NHSNumber != g.NHSNumber ||
				ret.Owner != "FCG71" || ret.Reason != "0003" || ret.ID == "" {
				t.Errorf("return: %+v", ret)
			}
			wd, err := fhir.DecodeTaskRequest(WithdrawTask(g, "FCG71", prev, "QU"))
			if err != nil {
				t.Fatalf("withdraw: %v", err)
			}
			if wd.Kind != fhir.TaskKindWithdraw || wd.PrescriptionID != g.ShortID || wd.LongID != g.LongID || wd.NHSNumber != g.NHSNumber ||
				wd.Owner != "FCG71" || wd.Reason != "QU" || wd.FocusID != prev || wd.ID == "" || wd.ID == ret.ID {
				t.Errorf("withdraw: %+v", wd)
			}

			for _, replaces := range []string{"", "0f0e1d2c-3b4a-4958-8776-655443322110"} {
				body, claimID := Claim(g, "FCG71", replaces)
				c, err := fhir.DecodeClaim(body)
				if err != nil {
					t.Fatalf("claim: %v", err)
				}
				var items []string
				for _, it := range c.Items {
					items = append(items, it.LineItemID)
					if it.Status != "0001" {
						t.Errorf("claim item %+v", it)
					}
				}
				if c.ID != claimID || c.PrescriptionID != g.ShortID || c.LongID != g.LongID || c.NHSNumber != g.NHSNumber ||
					c.Provider != "FCG71" || c.ReplacementOf != replaces || c.PrescriptionStatus != "0006" || !slices.Equal(items, g.ItemIDs) {
					t.Errorf("claim: %+v", c)
				}
			}

			body, claimID := ClaimItems(g, "FCG71", "", map[string]string{g.ItemIDs[0]: "0002"}, "0007")
			c, err := fhir.DecodeClaim(body)
			if err != nil {
				t.Fatalf("claim: %v", err)
			}
			if c.ID != claimID || c.PrescriptionStatus != "0007" || c.Items[0].Status != "0002" || c.Items[len(c.Items)-1].Status != "0001" && len(c.Items) > 1 {
				t.Errorf("claim of items not dispensed: %+v", c)
			}

			for _, item := range g.ItemIDs {
				body, id := Cancellation(g, item, "0002")
				msg, err := fhir.DecodeMessage(body)
				if err != nil {
					t.Fatalf("cancellation: %v", err)
				}
				c, err := msg.Cancellation()
				if err != nil {
					t.Fatalf("cancellation: %v", err)
				}
				if c.BundleID != id || c.Sender != g.Sender || c.PrescriptionID != g.ShortID || c.LongID != g.LongID ||
					c.NHSNumber != g.NHSNumber || c.LineItemID != item || c.Reason != "0002" {
					t.Errorf("cancellation: %+v", c)
				}
			}
		})
	}
}

func checkDispense(t *testing.T, body []byte, id string, g *Generated, statuses map[string]string, status, replaces string) {
	t.Helper()
	msg, err := fhir.DecodeMessage(body)
	if err != nil {
		t.Fatalf("dispense notification: %v", err)
	}
	dn, err := msg.DispenseNotification()
	if err != nil {
		t.Fatalf("dispense notification: %v", err)
	}
	if dn.BundleID != id || dn.Sender != "FCG71" || dn.PrescriptionID != g.ShortID || dn.NHSNumber != g.NHSNumber ||
		dn.PrescriptionStatus != status || dn.ReplacementOf != replaces || len(dn.Items) != len(statuses) {
		t.Fatalf("dispense notification: %+v", dn)
	}
	for _, it := range dn.Items {
		if statuses[it.LineItemID] != it.Status || it.MedicationCode == "" {
			t.Errorf("dispensed item %+v, want status %s", it, statuses[it.LineItemID])
		}
	}
}

// Release makes the release the EPS FHIR API accepts: by ID or nominated,
// from the owner given.
func TestRelease(t *testing.T) {
	id := ShortID("A83008")
	for _, tc := range []struct{ owner, id string }{{"FA565", id}, {"VNE51", ""}} {
		rr, err := fhir.DecodeReleaseRequest(Release(tc.owner, tc.id))
		if err != nil || rr.Owner != tc.owner || rr.PrescriptionID != tc.id || rr.AgentUserID == "" {
			t.Errorf("Release(%s, %q): %+v %v", tc.owner, tc.id, rr, err)
		}
	}
}
