package httpapi

import (
	"context"
	"encoding/csv"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir"
	"github.com/nhs-eps/epsbroker/nomination"
)

// nominationReportRoutes registers the nomination report endpoints (admin
// only):
//
//	GET /api/v1/nominations/reports/dispensers/{ods}?from=YYYY-MM-DD&to=YYYY-MM-DD[&detail=true][&format=csv]
//	GET /api/v1/nominations/reports/summary?from=YYYY-MM-DD&to=YYYY-MM-DD[&history=N][&selfNominated=true][&format=csv]
//
// from and to are UTC days, both included. Both count each dispenser's
// self-nominations (a dispenser nominating its own organisation); the
// summary with selfNominated=true lists only the dispensers that did, the
// most first. Every report read is audited before it is answered: once per
// request, and for a dispenser report that shows NHS numbers (its detail,
// and its CSV) once per patient shown.
func (a *api) nominationReportRoutes(route func(string, http.Handler)) {
	route("GET /api/v1/nominations/reports/dispensers/{ods}", a.authenticated(http.HandlerFunc(a.dispenserReport)))
	route("GET /api/v1/nominations/reports/summary", a.authenticated(http.HandlerFunc(a.nominationSummary)))
}

const reportDate = "2006-01-02"

type reportChange struct {
	NHSNumber  string    `json:"nhsNumber"`
	Type       string    `json:"type"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Time       time.Time `json:"time"`
	User       string    `json:"user"`
	Org        string    `json:"org"`
	Role       string    `json:"role"`
	OnBehalfOf bool      `json:"onBehalfOfPatient"`
	// SelfNomination: the dispenser that made the change nominated itself.
	SelfNomination bool `json:"selfNomination"`
}

type dispenserReportAnswer struct {
	ODS    string `json:"ods"`
	From   string `json:"from"`
	To     string `json:"to"`
	Gained int    `json:"gained"`
	Lost   int    `json:"lost"`
	// SelfNominated is how many of the gains the dispenser made itself.
	SelfNominated int            `json:"selfNominated"`
	Detail        []reportChange `json:"detail,omitempty"`
}

type summaryLine struct {
	ODS           string  `json:"ods"`
	Gained        int     `json:"gained"`
	Lost          int     `json:"lost"`
	SelfNominated int     `json:"selfNominated"`
	MaxDailyGain  int     `json:"maxDailyGain"`
	Day           string  `json:"day"` // "" when it gained none
	Score         float64 `json:"score"`
	Baseline      float64 `json:"baseline"`
	Spread        float64 `json:"spread"`
	Basis         string  `json:"basis"`
	HistoryDays   int     `json:"historyDays"`
}

// reportQuery reads and checks the parameters every report takes.
type reportQuery struct {
	from, to string
	period   nomination.Period
	csv      bool
}

func (a *api) reportQuery(w http.ResponseWriter, r *http.Request) (reportQuery, bool) {
	p := principalFrom(r.Context())
	if p.Role != auth.RoleAdmin {
		a.writeError(w, r, fhir.Errorf(fhir.KindForbidden, fhir.CodeAccessDenied, "only the admin role may read nomination reports"))
		return reportQuery{}, false
	}
	var q reportQuery
	var days [2]time.Time
	for i, name := range []string{"from", "to"} {
		v, found, err := rawQueryParam(r.URL.RawQuery, name)
		if err != nil || !found || v == "" {
			a.writeError(w, r, badParam(name, "%s: want a date YYYY-MM-DD", name))
			return q, false
		}
		d, err := time.Parse(reportDate, v)
		if err != nil {
			a.writeError(w, r, badParam(name, "%s %q: want a date YYYY-MM-DD", name, v))
			return q, false
		}
		days[i] = d
	}
	if days[1].Sub(days[0]) > 366*24*time.Hour {
		a.writeError(w, r, badParam("to", "a report covers at most 366 days"))
		return q, false
	}
	if days[0].After(days[1]) {
		a.writeError(w, r, badParam("from", "from %s is after to %s", days[0].Format(reportDate), days[1].Format(reportDate)))
		return q, false
	}
	q.from, q.to = days[0].Format(reportDate), days[1].Format(reportDate)
	q.period = nomination.Days(days[0], days[1])
	switch f, _, err := rawQueryParam(r.URL.RawQuery, "format"); {
	case err != nil || f != "" && f != "json" && f != "csv":
		a.writeError(w, r, badParam("format", "format: want json or csv"))
		return q, false
	default:
		q.csv = f == "csv"
	}
	if a.NominationReports == nil {
		a.writeError(w, r, &fhir.Error{Kind: fhir.KindUnavailable, Code: fhir.CodeServiceUnavailable, Diagnostics: "nomination reports are not available"})
		return q, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := a.NominationReports.Wait(ctx); err != nil {
		a.writeError(w, r, &fhir.Error{Kind: fhir.KindUnavailable, Op: "nomination reports", Code: fhir.CodeServiceUnavailable,
			Diagnostics: "the nomination reports are catching up; retry", Err: err})
		return q, false
	}
	return q, true
}

// dispenserReport answers the nominations a dispenser gained and lost in a
// period; the detail with detail=true (always in CSV).
func (a *api) dispenserReport(w http.ResponseWriter, r *http.Request) {
	ods := r.PathValue("ods")
	if p := principalFrom(r.Context()); p.Role == auth.RoleAdmin && !fhir.ValidODSCode(ods) {
		a.writeError(w, r, badParam("ods", "%q is not a valid ODS code (3 to 8 capital letters and digits)", ods))
		return
	}
	q, ok := a.reportQuery(w, r)
	if !ok {
		return
	}
	detail := false
	switch v, _, err := rawQueryParam(r.URL.RawQuery, "detail"); {
	case err != nil || v != "" && v != "true" && v != "false":
		a.writeError(w, r, badParam("detail", "detail: want true or false"))
		return
	default:
		detail = v == "true"
	}
	rep := nomination.ForDispenser(a.NominationReports.Changes(), ods, q.period)
	shown := 0 // rows answered
	if q.csv || detail {
		shown = len(rep.Detail)
	}
	// One audit write per patient shown (each fsynced, about 2 ms): a
	// detail of thousands of patients takes seconds before its answer, so
	// the answer's write deadline starts when the audit is done.
	rc := http.NewResponseController(w)
	if shown > 0 {
		_ = rc.SetWriteDeadline(time.Time{})
	}
	err := a.auditReport(r, auditNominationReport, shown, rep.Detail[:shown])
	if shown > 0 {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	}
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if q.csv {
		rows := [][]string{{"ods", "direction", "nhsNumber", "type", "from", "to", "time", "user", "org", "role", "onBehalfOfPatient", "selfNomination"}}
		for _, c := range rep.Detail {
			dir := "gained"
			if c.Loss(ods) {
				dir = "lost"
			}
			rows = append(rows, []string{ods, dir, c.NHSNumber, string(c.Type), c.From, c.To, c.Time.UTC().Format(time.RFC3339),
				c.By.User, c.By.Org, c.By.Role, strconv.FormatBool(c.By.OnBehalfOf), strconv.FormatBool(c.IsSelfNomination())})
		}
		writeCSV(w, "nominations-"+ods+"-"+q.from+"-"+q.to+".csv", rows)
		return
	}
	ans := dispenserReportAnswer{ODS: ods, From: q.from, To: q.to, Gained: rep.Gained, Lost: rep.Lost, SelfNominated: rep.SelfNominated}
	if detail {
		ans.Detail = make([]reportChange, 0, len(rep.Detail))
		for _, c := range rep.Detail {
			ans.Detail = append(ans.Detail, reportChange{NHSNumber: c.NHSNumber, Type: string(c.Type), From: c.From, To: c.To,
				Time: c.Time.UTC(), User: c.By.User, Org: c.By.Org, Role: c.By.Role, OnBehalfOf: c.By.OnBehalfOf,
				SelfNomination: c.IsSelfNomination()})
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

// auditReport records a report read before it is answered: one entry for
// the request (results: the rows answered), and one per patient whose NHS
// number the answer shows (results: that patient's rows).
func (a *api) auditReport(r *http.Request, action string, shown int, patients []nomination.Record) error {
	p := principalFrom(r.Context())
	query := r.URL.RequestURI()
	if err := a.auditRead(r.Context(), p, action, "", query, shown); err != nil {
		return err
	}
	if len(patients) == 0 {
		return nil
	}
	rows := map[string]int{}
	for _, c := range patients {
		rows[c.NHSNumber]++
	}
	return a.auditPatients(r.Context(), p, action, query, rows)
}

// nominationSummary answers every dispenser that gained or lost a
// nomination in the period, the most unusual daily gain first (see
// nomination.Summary for the score).
func (a *api) nominationSummary(w http.ResponseWriter, r *http.Request) {
	q, ok := a.reportQuery(w, r)
	if !ok {
		return
	}
	history := nomination.DefaultHistoryDays
	if v, found, err := rawQueryParam(r.URL.RawQuery, "history"); err != nil || found {
		n, err2 := strconv.Atoi(v)
		if err != nil || err2 != nil || n < 1 || n > 366 {
			a.writeError(w, r, badParam("history", "history %q: want 1 to 366 days", v))
			return
		}
		history = n
	}
	selfOnly := false
	switch v, _, err := rawQueryParam(r.URL.RawQuery, "selfNominated"); {
	case err != nil || v != "" && v != "true" && v != "false":
		a.writeError(w, r, badParam("selfNominated", "selfNominated: want true or false"))
		return
	default:
		selfOnly = v == "true"
	}
	ranked := nomination.Summary(a.NominationReports.Changes(), q.period, history)
	if selfOnly {
		ranked = nomination.SelfNominators(ranked)
	}
	if err := a.auditReport(r, auditNominationSumm, len(ranked), nil); err != nil {
		a.writeError(w, r, err)
		return
	}
	lines := make([]summaryLine, 0, len(ranked))
	for _, rk := range ranked {
		l := summaryLine{ODS: rk.ODS, Gained: rk.Gained, Lost: rk.Lost, SelfNominated: rk.SelfNominated, MaxDailyGain: rk.MaxDailyGain, Score: round3(rk.Score),
			Baseline: round3(rk.Baseline), Spread: round3(rk.Spread), Basis: rk.Basis, HistoryDays: rk.HistoryDays}
		if !rk.Day.IsZero() {
			l.Day = rk.Day.Format(reportDate)
		}
		lines = append(lines, l)
	}
	if q.csv {
		rows := [][]string{{"rank", "ods", "gained", "lost", "maxDailyGain", "day", "score", "baseline", "spread", "basis", "historyDays", "selfNominated"}}
		for i, l := range lines {
			rows = append(rows, []string{strconv.Itoa(i + 1), l.ODS, strconv.Itoa(l.Gained), strconv.Itoa(l.Lost), strconv.Itoa(l.MaxDailyGain),
				l.Day, fmtFloat(l.Score), fmtFloat(l.Baseline), fmtFloat(l.Spread), l.Basis, strconv.Itoa(l.HistoryDays), strconv.Itoa(l.SelfNominated)})
		}
		writeCSV(w, "nominations-summary-"+q.from+"-"+q.to+".csv", rows)
		return
	}
	writeJSON(w, http.StatusOK, lines)
}

func round3(f float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(f, 'f', 3, 64), 64)
	return v
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// writeCSV answers rows as a CSV attachment. Text cells that a spreadsheet
// would take for a formula are prefixed with a quote.
func writeCSV(w http.ResponseWriter, filename string, rows [][]string) {
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	cw := csv.NewWriter(w)
	for _, row := range rows {
		for i, c := range row {
			if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				if _, err := strconv.ParseFloat(c, 64); err != nil {
					row[i] = "'" + c
				}
			}
		}
		_ = cw.Write(row)
	}
	cw.Flush()
}
