package test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/auth"
	"github.com/nhs-eps/epsbroker/fhir/fhirgen"
)

type reportSummaryLine struct {
	ODS          string  `json:"ods"`
	Gained       int     `json:"gained"`
	Lost         int     `json:"lost"`
	MaxDailyGain int     `json:"maxDailyGain"`
	Day          string  `json:"day"`
	Score        float64 `json:"score"`
}

type reportDispenser struct {
	ODS    string `json:"ods"`
	From   string `json:"from"`
	To     string `json:"to"`
	Gained int    `json:"gained"`
	Lost   int    `json:"lost"`
	Detail []struct {
		NHSNumber  string    `json:"nhsNumber"`
		Type       string    `json:"type"`
		From       string    `json:"from"`
		To         string    `json:"to"`
		Time       time.Time `json:"time"`
		User       string    `json:"user"`
		Org        string    `json:"org"`
		Role       string    `json:"role"`
		OnBehalfOf bool      `json:"onBehalfOfPatient"`
	} `json:"detail"`
}

// A pharmacy that steadily gains many nominations a day is not where an
// investigator should look first: one that usually gains one and gains many
// in one day is.
func TestNominationReports(t *testing.T) {
	var mu sync.Mutex
	day0 := time.Now().UTC().Truncate(24*time.Hour).AddDate(0, 0, -20)
	now := day0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	setDay := func(d int, h int) {
		mu.Lock()
		now = day0.AddDate(0, 0, d).Add(time.Duration(h) * time.Hour)
		mu.Unlock()
	}
	b := startBrokerClock(t, "", clock)
	const steady, spike = "FA565", "FCG71"
	nominate := func(dispenser, nhs string) {
		t.Helper()
		res := b.do("PUT", "/api/v1/nominations/"+nhs+"/P1", b.token(auth.RoleDispenser, dispenser), []byte(`{"ods":"`+dispenser+`"}`), "Content-Type", "application/json")
		if res.Status != 200 {
			t.Fatalf("nominate %s: %d %s", dispenser, res.Status, res.Body)
		}
	}
	// Days 0..15: the steady pharmacy gains 5 a day; from day 10 the other
	// gains 1 a day; on day 15 it gains 5 more, one of them moved from the
	// steady pharmacy.
	var moved string
	for d := 0; d <= 15; d++ {
		setDay(d, 9)
		var last string
		for i := 0; i < 5; i++ {
			last = fhirgen.NHSNumber()
			nominate(steady, last)
		}
		if d >= 10 {
			setDay(d, 10)
			nominate(spike, fhirgen.NHSNumber())
		}
		if d == 15 {
			setDay(d, 11)
			moved = last
			nominate(spike, moved)
			for i := 0; i < 4; i++ {
				nominate(spike, fhirgen.NHSNumber())
			}
		}
	}
	admin := b.token(auth.RoleAdmin, "X26")
	date := func(d int) string { return day0.AddDate(0, 0, d).Format("2006-01-02") }
	period := "from=" + date(14) + "&to=" + date(15)

	res := b.do("GET", "/api/v1/nominations/reports/summary?"+period, admin, nil)
	var lines []reportSummaryLine
	if res.Status != 200 || json.Unmarshal(res.Body, &lines) != nil {
		t.Fatalf("summary: %d %s", res.Status, res.Body)
	}
	if len(lines) != 2 || lines[0].ODS != spike || lines[1].ODS != steady {
		t.Fatalf("summary ranks %s, want %s first", res.Body, spike)
	}
	if l := lines[0]; l.Gained != 7 || l.Lost != 0 || l.MaxDailyGain != 6 || l.Day != date(15) || l.Score != 5 {
		t.Errorf("the spiking pharmacy: %+v", l)
	}
	if l := lines[1]; l.Gained != 10 || l.Lost != 1 || l.MaxDailyGain != 5 || l.Score != 0 {
		t.Errorf("the steady pharmacy: %+v", l)
	}

	// A change from A to B: a loss for A, a gain for B, with who made it.
	one := "from=" + date(15) + "&to=" + date(15)
	res = b.do("GET", "/api/v1/nominations/reports/dispensers/"+steady+"?"+one+"&detail=true", admin, nil)
	var rep reportDispenser
	if res.Status != 200 || json.Unmarshal(res.Body, &rep) != nil {
		t.Fatalf("dispenser report: %d %s", res.Status, res.Body)
	}
	if rep.ODS != steady || rep.From != date(15) || rep.To != date(15) || rep.Gained != 5 || rep.Lost != 1 || len(rep.Detail) != 6 {
		t.Fatalf("%s on day 15: %s", steady, res.Body)
	}
	if d := rep.Detail[5]; d.NHSNumber != moved || d.Type != "P1" || d.From != steady || d.To != spike ||
		d.User != "dispenser-user-"+spike || d.Org != spike || d.Role != "dispenser" || !d.OnBehalfOf || !d.Time.Equal(day0.AddDate(0, 0, 15).Add(11*time.Hour)) {
		t.Errorf("the loss: %+v", d)
	}
	res = b.do("GET", "/api/v1/nominations/reports/dispensers/"+spike+"?"+one+"&detail=true", admin, nil)
	rep = reportDispenser{}
	if res.Status != 200 || json.Unmarshal(res.Body, &rep) != nil || rep.Gained != 6 || rep.Lost != 0 || len(rep.Detail) != 6 {
		t.Fatalf("%s on day 15: %d %s", spike, res.Status, res.Body)
	}
	if d := rep.Detail[1]; d.NHSNumber != moved || d.From != steady || d.To != spike || d.Org != spike {
		t.Errorf("the gain: %+v", d)
	}
	// Without detail=true: the counts only.
	res = b.do("GET", "/api/v1/nominations/reports/dispensers/"+spike+"?"+period, admin, nil)
	rep = reportDispenser{}
	if json.Unmarshal(res.Body, &rep) != nil || rep.Gained != 7 || rep.Detail != nil {
		t.Errorf("without detail: %s", res.Body)
	}

	// CSV: a header and the rows.
	res = b.do("GET", "/api/v1/nominations/reports/dispensers/"+steady+"?"+one+"&format=csv", admin, nil)
	rows := readCSV(t, res)
	if len(rows) != 7 || strings.Join(rows[0], ",") != "ods,direction,nhsNumber,type,from,to,time,user,org,role,onBehalfOfPatient,selfNomination" {
		t.Fatalf("dispenser CSV: %q", rows)
	}
	if r := rows[6]; r[1] != "lost" || r[2] != moved || r[4] != steady || r[5] != spike || r[7] != "dispenser-user-"+spike || r[10] != "true" {
		t.Errorf("the loss in CSV: %q", r)
	}
	res = b.do("GET", "/api/v1/nominations/reports/summary?"+period+"&format=csv", admin, nil)
	rows = readCSV(t, res)
	if len(rows) != 3 || !strings.HasPrefix(strings.Join(rows[0], ","), "rank,ods,gained,lost,maxDailyGain,day,score") ||
		rows[1][1] != spike || rows[1][2] != "7" || rows[1][4] != "6" || rows[1][5] != date(15) || rows[1][6] != "5" || rows[2][1] != steady {
		t.Errorf("summary CSV: %q", rows)
	}

	// A later change is in the next report.
	setDay(15, 12)
	nominate(spike, fhirgen.NHSNumber())
	res = b.do("GET", "/api/v1/nominations/reports/dispensers/"+spike+"?"+one, admin, nil)
	if json.Unmarshal(res.Body, &rep) != nil || rep.Gained != 7 {
		t.Errorf("after one more change: %s", res.Body)
	}

	// Admins only; bad input is 400.
	for _, tc := range []struct {
		path, token string
		status      int
	}{
		{"/api/v1/nominations/reports/summary?" + period, b.token(auth.RoleDispenser, spike), 403},
		{"/api/v1/nominations/reports/summary?" + period, b.token(auth.RoleTracker, "X26"), 403},
		{"/api/v1/nominations/reports/dispensers/" + spike + "?" + period, b.token(auth.RoleDispenser, spike), 403},
		{"/api/v1/nominations/reports/summary?" + period, "", 401},
		{"/api/v1/nominations/reports/dispensers/" + spike + "?" + period, "", 401},
		{"/api/v1/nominations/reports/summary?from=" + date(15) + "&to=" + date(14), admin, 400},
		{"/api/v1/nominations/reports/summary?from=2026-13-01&to=" + date(14), admin, 400},
		{"/api/v1/nominations/reports/summary?to=" + date(14), admin, 400},
		{"/api/v1/nominations/reports/summary?" + period + "&format=xml", admin, 400},
		{"/api/v1/nominations/reports/dispensers/FA.565?" + period, admin, 400},
		{"/api/v1/nominations/reports/dispensers/" + spike + "?from=yesterday&to=" + date(14), admin, 400},
		{"/api/v1/nominations/reports/dispensers/" + spike + "?" + period + "&detail=maybe", admin, 400},
	} {
		res := b.do("GET", tc.path, tc.token, nil)
		if res.Status != tc.status {
			t.Errorf("GET %s: %d, want %d: %s", tc.path, res.Status, tc.status, res.Body)
		} else {
			res.outcome(t)
		}
	}
}

func readCSV(t *testing.T, res *response) [][]string {
	t.Helper()
	if res.Status != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/csv") {
		t.Fatalf("CSV: %d %s %s", res.Status, res.Header.Get("Content-Type"), res.Body)
	}
	rows, err := csv.NewReader(bytes.NewReader(res.Body)).ReadAll()
	if err != nil {
		t.Fatalf("CSV: %v: %s", err, res.Body)
	}
	return rows
}
