package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

// xssOrders is how many orders carry the payloads: payload i goes into
// order i mod xssOrders, in every free-text field the page shows.
const xssOrders = 4

// xssExpect is a text the page must show literally (textContent) inside
// the element sel.
type xssExpect struct {
	Sel  string `json:"sel"`
	Text string `json:"text"`
	What string `json:"what"`
}

// xssFindings is what xssCheckJS found on the page.
type xssFindings struct {
	Missing  []string `json:"missing"`  // expected texts not shown literally
	Elements []string `json:"elements"` // elements the page does not make, in #results, #detail or #session
	Attrs    []string `json:"attrs"`    // attributes the page does not set, there
	Live     []string `json:"live"`     // active elements anywhere in the body
	Marker   string   `json:"marker"`   // window.__xss, "" when unset
	Title    string   `json:"title"`    // document.title
	CSP      []string `json:"csp"`      // Content-Security-Policy violations seen
}

// xssWatchJS runs in the page before its own scripts: it records every
// Content-Security-Policy violation, so that a payload that the policy
// stopped still shows that it reached the DOM as markup.
const xssWatchJS = `document.addEventListener('securitypolicyviolation', (e) => {
  (window.__cspViolations = window.__cspViolations || []).push(e.violatedDirective + ' ' + (e.sample || e.blockedURI || ''));
}, true);`

// xssCheckJS inspects the page: every expected text is in its element's
// textContent; #results, #detail and #session hold only the elements and
// attributes the page itself makes (h() in app.js); the body holds no
// active element (script, frame, object, image, SVG, style...) nor any
// event handler attribute; the marker is unset (it is cleared after each
// look). It is called with the list of xssExpect.
const xssCheckJS = `(expect) => {
  const tags = new Set(['h2', 'h3', 'p', 'section', 'table', 'caption', 'thead', 'tbody', 'tr', 'th', 'td',
    'button', 'dl', 'div', 'dt', 'dd', 'span', 'time', 'ol', 'li', 'nav']);
  const attrs = new Set(['class', 'id', 'scope', 'type', 'tabindex', 'role', 'datetime', 'disabled', 'data-id', 'data-issue', 'hidden']);
  const out = { missing: [], elements: [], attrs: [], live: [], marker: '', title: document.title, csp: window.__cspViolations || [] };
  for (const e of expect) {
    const n = document.querySelector(e.sel);
    if (!n) out.missing.push(e.what + ': no ' + e.sel + ' on the page');
    else if (!n.textContent.includes(e.text)) out.missing.push(e.what + ' not shown literally in ' + e.sel);
  }
  for (const id of ['results', 'detail', 'session']) {
    const root = document.getElementById(id);
    for (const el of root.querySelectorAll('*')) {
      if (!tags.has(el.localName)) out.elements.push('#' + id + ' holds <' + el.localName + '>');
      for (const a of el.attributes) {
        if (!attrs.has(a.name) && !a.name.startsWith('aria-')) out.attrs.push('#' + id + ' <' + el.localName + ' ' + a.name + '="' + a.value.slice(0, 60) + '">');
      }
    }
  }
  for (const el of document.body.querySelectorAll('script, iframe, frame, frameset, object, embed, img, image, svg, math, video, audio, source, picture, style, link, meta, base, template, marquee, a[href]:not(.skip-link), [style], [srcdoc]')) {
    out.live.push('<' + el.localName + '> in #' + ((el.closest('[id]') || {}).id || '?'));
  }
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) if (/^on/i.test(a.name)) out.live.push('<' + el.localName + ' ' + a.name + '>');
  }
  if (typeof window.__xss !== 'undefined') out.marker = String(window.__xss);
  delete window.__xss; // so that the next look says which payload ran since

  return out;
}`

// TestTrackerPageXSS drives the tracker page in headless Chromium with
// prescriptions whose every free-text field the page shows holds classic
// cross-site scripting payloads (xssPayloads): the patient's name (prefix,
// given names, family name), the order's authoredOn (the issue date: EPS
// does not refuse one that is not a date, and the page then shows it as
// written), the prescriber's name, the prescribing organisation's name, the
// prescription type's display, for each of the four items the medication's
// display, the quantity's unit and its dosage instructions, and a dispense
// notification's non-dispensing reason code (shown when the page does not
// know it); also the user names (token sub) the page shows: the signed-in
// user in the header, and the prescriber, releasing and dispensing users in
// the history. It signs in, finds each prescription, opens it (the page
// has nothing collapsed to expand), and asserts that no payload ran (no
// marker, the title unchanged, no Content-Security-Policy violation), that
// no element or attribute the page does not make appeared, and that every
// payload is shown as the text it is (textContent). It ends by putting one
// payload into the page with innerHTML itself, to show that these checks
// see an injection (and that the page's Content-Security-Policy stops it
// from running).
func TestTrackerPageXSS(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		t.Skip("no Chromium or Chrome binary (looked for /usr/bin/chromium and chromium, chromium-browser, google-chrome, headless-shell on PATH): install one (Debian: apt-get install chromium) to run the browser test")
	}
	payloads := payloadsNumbered()
	if len(payloads) < 50 {
		t.Fatalf("only %d payloads", len(payloads))
	}
	var subs []string // payloads that can be a token's sub
	for _, p := range payloads {
		if validSub(p) {
			subs = append(subs, p)
		}
	}
	if len(subs) < xssOrders+3 {
		t.Fatalf("only %d payloads can be a sub", len(subs))
	}

	b := startBroker(t, "")
	mint := func(role auth.Role, ods, sub string) string {
		t.Helper()
		tok, err := auth.Mint(b.App.IssuerKey, auth.DefaultIssuer, auth.DefaultAudience,
			auth.Principal{Subject: sub, ODS: ods, Role: role}, time.Hour, time.Now())
		if err != nil {
			t.Fatalf("minting a token for %q: %v", sub, err)
		}
		return tok
	}
	tmpl, err := fhirgen.NewTemplate(fhirgen.Order4Items)
	if err != nil {
		t.Fatal(err)
	}

	type xssOrder struct {
		g       *fhirgen.Generated
		results []xssExpect // what the search results must show
		detail  []xssExpect // what the detail must show
	}
	orders := make([]*xssOrder, xssOrders)
	for k := range orders {
		var mine []int // the payloads of order k, by index
		for i := k; i < len(payloads); i += xssOrders {
			mine = append(mine, i)
		}
		o := &xssOrder{}
		// tagged gives each payload, in one field, a label naming both, so
		// that the check says which payload did not show in which field.
		tagged := func(field string, i int) string { return fmt.Sprintf("«%s %d»%s", field, i+1, payloads[i]) }
		list := func(field string) []any {
			var out []any
			for _, i := range mine {
				out = append(out, tagged(field, i))
			}
			return out
		}
		joined := func(field string) string {
			var out []string
			for _, i := range mine {
				out = append(out, tagged(field, i))
			}
			return strings.Join(out, " ")
		}
		expect := func(dst *[]xssExpect, sel, field string) {
			for _, i := range mine {
				*dst = append(*dst, xssExpect{Sel: sel, Text: tagged(field, i), What: fmt.Sprintf("payload %d in the %s", i+1, field)})
			}
		}
		g, err := tmpl.Order(fhirgen.Options{})
		if err != nil {
			t.Fatal(err)
		}
		g.Body = fhirgen.Mutate(g.Body, func(m map[string]any) {
			item := 0
			for _, e := range m["entry"].([]any) {
				r := e.(map[string]any)["resource"].(map[string]any)
				switch r["resourceType"] {
				case "Patient":
					r["name"] = []any{map[string]any{"use": "usual", "prefix": list("name prefix"), "given": list("given name"), "family": joined("family name")}}
				case "Practitioner":
					r["name"] = []any{map[string]any{"text": joined("prescriber name"), "family": "BOIN", "given": []any{"C"}}}
				case "Organization":
					r["name"] = joined("organisation name")
				case "MedicationRequest":
					item++
					r["authoredOn"] = joined("issue date")
					for _, x := range r["extension"].([]any) {
						if x := x.(map[string]any); strings.HasSuffix(x["url"].(string), "Extension-DM-PrescriptionType") {
							x["valueCoding"].(map[string]any)["display"] = joined("prescription type")
						}
					}
					c := r["medicationCodeableConcept"].(map[string]any)["coding"].([]any)[0].(map[string]any)
					c["display"] = joined(fmt.Sprintf("medication %d", item))
					r["dispenseRequest"].(map[string]any)["quantity"].(map[string]any)["unit"] = joined(fmt.Sprintf("unit %d", item))
					first := r["dosageInstruction"].([]any)[0].(map[string]any)
					var dosages []any
					for n, text := range list(fmt.Sprintf("dosage %d", item)) {
						d := map[string]any{}
						for k, v := range first {
							d[k] = v
						}
						d["sequence"] = n + 1
						d["text"] = text
						dosages = append(dosages, d)
					}
					r["dosageInstruction"] = dosages
				}
			}
		})
		o.g = g
		for _, f := range []string{"name prefix", "given name", "family name"} {
			expect(&o.results, "#results", f)
			expect(&o.detail, "#patient", f)
		}
		expect(&o.detail, "#detail", "issue date")
		for _, f := range []string{"prescriber name", "organisation name", "prescription type"} {
			expect(&o.detail, "#organisations", f)
		}
		for item := 1; item <= 4; item++ {
			for _, f := range []string{"medication %d", "unit %d", "dosage %d"} {
				expect(&o.detail, "#items", fmt.Sprintf(f, item))
			}
		}
		// The prescriber's user name shows in the history.
		sub := subs[k]
		if res := b.post(mint(auth.RolePrescriber, g.Sender, sub), g.Body); res.Status != 200 {
			t.Fatalf("posting order %d (payloads %v): %d %s", k+1, mine, res.Status, res.Body)
		}
		o.detail = append(o.detail, xssExpect{Sel: "#history", Text: sub, What: "the prescriber's user name " + sub})
		orders[k] = o
	}
	// The first is released, and not dispensed, by users whose names are
	// payloads; the notification's non-dispensing reason code, which the page
	// shows when it is not one it knows, holds the order's payloads. (The
	// notification also carries the order's medication texts; the page does
	// not show a notification's own item fields, only the history.)
	first := orders[0]
	releaser, dispenser := subs[xssOrders], subs[xssOrders+1]
	if res := b.do("POST", "/FHIR/R4/Task/$release", mint(auth.RoleDispenser, first.g.Performer, releaser), releaseBody(t, first.g.Performer, first.g.ShortID)); res.Status != 200 {
		t.Fatalf("release: %d %s", res.Status, res.Body)
	}
	status, reasons := map[string]string{}, map[string]string{}
	for _, id := range first.g.ItemIDs {
		status[id] = "0002"
		reasons[strings.ToLower(id)] = "0002"
	}
	var rx []string
	for i := 0; i < len(payloads); i += xssOrders {
		rx = append(rx, fmt.Sprintf("«reason not dispensed %d»%s", i+1, payloads[i]))
		first.detail = append(first.detail, xssExpect{Sel: "#detail", Text: rx[len(rx)-1], What: fmt.Sprintf("payload %d in the reason not dispensed", i+1)})
	}
	dn, _ := fhirgen.DispenseNotification(first.g, first.g.Performer, status, "0007", "")
	dn = withNonDispensingReasons(dn, reasons, strings.Join(rx, " "))
	if res := b.post(mint(auth.RoleDispenser, first.g.Performer, dispenser), dn); res.Status != 200 {
		t.Fatalf("dispense notification: %d %s", res.Status, res.Body)
	}
	first.detail = append(first.detail,
		xssExpect{Sel: "#history", Text: releaser, What: "the releasing user's name " + releaser},
		xssExpect{Sel: "#history", Text: dispenser, What: "the dispensing user's name " + dispenser})
	b.settle()
	trackerSub := subs[xssOrders+2]
	trackerToken := mint(auth.RoleTracker, "A83008", trackerSub)
	for _, o := range orders {
		waitSearchable(t, b, trackerToken, o.g.ShortID)
	}

	bctx, log, stop := startChromium(t, chromium, 90*time.Second)
	defer stop()
	defer log.report(t)
	if _, err := chromedp.Call(bctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: xssWatchJS}); err != nil {
		t.Fatalf("installing the CSP violation watch: %v", err)
	}

	text := func(sel string) string {
		sctx, c := context.WithTimeout(bctx, 5*time.Second)
		defer c()
		s, err := chromedp.Run(sctx, chromedp.Evaluate[string](fmt.Sprintf(`(n => n ? n.textContent : '(no %s)')(document.querySelector(%q))`, sel, sel)))
		if err != nil {
			return fmt.Sprintf("(%s not readable: %v)", sel, err)
		}
		return s
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, c := context.WithTimeout(bctx, 15*time.Second)
		defer c()
		if err := chromedp.Do(sctx, actions...); err != nil {
			if errors.Is(bctx.Err(), context.DeadlineExceeded) {
				t.Fatalf("%s: the test ran out of its 90s: %v", what, err)
			}
			t.Fatalf("%s: %v\n#message: %q\n#query-error: %q", what, err, text("#message"), text("#query-error"))
		}
	}
	poll := func(what, expr string) {
		t.Helper()
		step(what, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(14*time.Second), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			return chromedp.Void{}, err
		})
	}
	check := func(where string, expect []xssExpect) xssFindings {
		t.Helper()
		if expect == nil {
			expect = []xssExpect{}
		}
		arg, err := json.Marshal(expect)
		if err != nil {
			t.Fatal(err)
		}
		sctx, c := context.WithTimeout(bctx, 15*time.Second)
		defer c()
		f, err := chromedp.Run(sctx, chromedp.Evaluate[xssFindings](fmt.Sprintf("(%s)(%s)", xssCheckJS, arg)))
		if err != nil {
			t.Fatalf("%s: inspecting the page: %v", where, err)
		}
		return f
	}
	var title string // the page's own, read before any payload is on it
	// clean fails the test for what f found: at most a few lines of each
	// kind, and each Content-Security-Policy violation once.
	cspSeen := 0
	clean := func(where string, f xssFindings) {
		t.Helper()
		if f.Marker != "" {
			t.Errorf("%s: payload %s ran (window.__xss is set)", where, f.Marker)
		}
		if f.Title != title {
			t.Errorf("%s: the title is %q: a payload ran", where, f.Title)
		}
		var csp []string
		if len(f.CSP) > cspSeen {
			csp = f.CSP[cspSeen:]
			cspSeen = len(f.CSP)
		}
		for _, k := range []struct {
			what  string
			found []string
		}{
			{"the Content-Security-Policy stopped what the page did not write", csp},
			{"elements the page does not make", f.Elements},
			{"attributes the page does not set", f.Attrs},
			{"active elements or event handlers", f.Live},
			{"payloads not shown as text", f.Missing},
		} {
			if len(k.found) == 0 {
				continue
			}
			const most = 8
			shown := k.found[:min(len(k.found), most)]
			more := ""
			if len(k.found) > most {
				more = fmt.Sprintf("\n\t... and %d more", len(k.found)-most)
			}
			t.Errorf("%s: %d %s:\n\t%s%s", where, len(k.found), k.what, strings.Join(shown, "\n\t"), more)
		}
	}

	step("open the page",
		chromedp.EmulateViewport(1366, 768),
		chromedp.Navigate(b.URL+"/tracker"),
		chromedp.WaitVisible(chromedp.ID("token")),
	)
	title, err = chromedp.Run(bctx, chromedp.Title())
	if err != nil || title == "" {
		t.Fatalf("the page's title: %q %v", title, err)
	}
	step("sign in",
		chromedp.SetValue(chromedp.ID("token"), trackerToken),
		chromedp.Click(chromedp.ID("sign-in")),
		chromedp.WaitVisible(chromedp.ID("query")),
		chromedp.WaitVisible(chromedp.ID("sign-out")),
	)
	clean("signed in", check("signed in", []xssExpect{{Sel: "#session-user", Text: trackerSub, What: "the signed-in user's name " + trackerSub}}))

	for k, o := range orders {
		id := o.g.ShortID
		row := chromedp.CSS(`#results button[data-id="` + id + `"]`)
		step(fmt.Sprintf("search order %d (%s)", k+1, id),
			clearField("query"),
			chromedp.SendKeys(chromedp.ID("query"), id+kb.Enter),
			chromedp.WaitVisible(row),
		)
		clean(fmt.Sprintf("order %d results", k+1), check("results", o.results))
		step(fmt.Sprintf("open order %d", k+1),
			chromedp.Click(row),
			chromedp.WaitVisible(chromedp.ID("detail")),
			chromedp.WaitVisible(chromedp.CSS("#timeline li")),
		)
		poll(fmt.Sprintf("order %d's detail", k+1), fmt.Sprintf(`(n => !!n && n.textContent.includes(%q))(document.getElementById('detail-heading'))`, id))
		clean(fmt.Sprintf("order %d detail", k+1), check("detail", o.detail))
	}
	// A payload whose handler waits for something (an image error, a
	// frame's load) has had every step above to run; look once more.
	clean("at the end", check("at the end", nil))
	if t.Failed() {
		return
	}

	// The checks see an injection: put one payload into the detail with
	// innerHTML, as a page that wrote HTML would.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`(() => {
  const d = document.createElement('div');
  document.getElementById('items').append(d);
  d.innerHTML = '<img src="data:," onerror="window.__xss=-1">';
  return true;
})()`)); err != nil {
		t.Fatal(err)
	}
	poll("the policy stops the injected handler", `(window.__cspViolations || []).length > 0`)
	f := check("self-test", nil)
	if len(f.Elements) == 0 || len(f.Live) == 0 {
		t.Errorf("an <img onerror> put into #detail with innerHTML was not seen: %+v", f)
	}
	if f.Marker != "" {
		t.Errorf("the page's Content-Security-Policy did not stop an inline handler: window.__xss = %s", f.Marker)
	}
	shown := 0
	for _, o := range orders {
		shown += len(o.results) + len(o.detail)
	}
	t.Logf("%d payloads in %d orders: %d placements shown as text; the injected <img onerror> was seen (%d findings) and stopped by the policy: %v",
		len(payloads), len(orders), shown, len(f.Elements)+len(f.Attrs)+len(f.Live), f.CSP)
}
