package nomination

import (
	"errors"
	"io"
	"strings"
	"testing"
)

type parsed struct {
	rows []ImportRow
	rejs []Rejection
	err  error
}

func parseAll(in string, f Format) parsed {
	var out parsed
	p := NewImportParser(strings.NewReader(in), f)
	for {
		row, rej, err := p.Next()
		if err != nil {
			if err != io.EOF {
				out.err = err
			}
			return out
		}
		if rej != nil {
			out.rejs = append(out.rejs, *rej)
		} else {
			out.rows = append(out.rows, row)
		}
	}
}

func lines(rs []Rejection) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.Line)
	}
	return out
}

func TestImportParserNDJSON(t *testing.T) {
	in := `{"nhsNumber":"9449305552","type":"P1","ods":"FA565"}
{"nhsNumber":"9449305553","type":"P1","ods":"FA565"}

{"nhsNumber":"9449305552","type":"p3","ods":" A83008 "}` + "\r" + `
{"nhsNumber":"9449305552","type":"P7","ods":"FA565"}
{"nhsNumber":"9449305552","type":"P2","ods":"fa.565"}
not json
{"nhsNumber":9449305552,"type":"P2","ods":"FA565"}
{"type":"P2","ods":"FA565"}
null
` + strings.Repeat("x", MaxImportLine+10) + `
{"nhsNumber":"9449305552","type":"P2","ods":"FCG71"}`
	got := parseAll(in, NDJSON)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if len(got.rows) != 3 || got.rows[0].Line != 1 || got.rows[1].Line != 4 || got.rows[1].Type != DispensingDoctor || got.rows[1].ODS != "A83008" || got.rows[2].Line != 12 || got.rows[2].ODS != "FCG71" {
		t.Errorf("rows: %+v", got.rows)
	}
	if l := lines(got.rejs); len(l) != 8 || l[0] != 2 || l[1] != 5 || l[2] != 6 || l[3] != 7 || l[4] != 8 || l[5] != 9 || l[6] != 10 || l[7] != 11 {
		t.Errorf("rejected lines: %v (%+v)", l, got.rejs)
	}
	for _, r := range got.rejs {
		if r.Reason == "" {
			t.Errorf("line %d: no reason", r.Line)
		}
	}
}

func TestImportParserCSV(t *testing.T) {
	in := "\xef\xbb\xbfnhsNumber,type,ods\r\n" +
		"9449305552,P1,FA565\r\n" +
		"\"9449305552\",\"P2\",\"FCG71\"\n" +
		"9449305553,P1,FA565\n" +
		"9449305552,P1\n" +
		"9449305552,P1,FA565,extra\n" +
		"9449305552,P9,FA565\n" +
		"9449305552,P1,\"FA565\n" +
		"9449305552,P1,fa_565\n" +
		"9449305552,P3,A83008"
	got := parseAll(in, CSV)
	if got.err != nil {
		t.Fatal(got.err)
	}
	if len(got.rows) != 3 || got.rows[0].Line != 2 || got.rows[1].Line != 3 || got.rows[1].ODS != "FCG71" || got.rows[2].Line != 10 {
		t.Errorf("rows: %+v", got.rows)
	}
	if l := lines(got.rejs); len(l) != 6 || l[0] != 4 || l[5] != 9 {
		t.Errorf("rejected lines: %v (%+v)", l, got.rejs)
	}
	// Columns in another order.
	got = parseAll("ods,nhsNumber,type\nFA565,9449305552,P1\n", CSV)
	if len(got.rows) != 1 || got.rows[0].ODS != "FA565" || got.rows[0].NHSNumber != "9449305552" {
		t.Errorf("reordered: %+v", got)
	}
	for _, bad := range []string{"9449305552,P1,FA565\n", "nhsNumber,type\n", "nhsNumber,type,ods,ods\n", "nhsNumber,type,\"ods\n"} {
		if got := parseAll(bad, CSV); !errors.Is(got.err, ErrImportHeader) {
			t.Errorf("header %q: %v", bad, got.err)
		}
	}
}

// FuzzImportParser: any input parses without panic; every row is valid and
// rows and rejections come in strictly increasing line order, within the
// file's lines.
func FuzzImportParser(f *testing.F) {
	f.Add([]byte(`{"nhsNumber":"9449305552","type":"P1","ods":"FA565"}`+"\n"), false)
	f.Add([]byte("nhsNumber,type,ods\n9449305552,P1,FA565\n\"9449305552\",P2,\"A\"\"B\"\n"), true)
	f.Add([]byte("nhsNumber,type,ods\r\n\r\n,,\n"), true)
	f.Add([]byte("{}\nnull\n[1]\n\"x\"\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, csv bool) {
		format := NDJSON
		if csv {
			format = CSV
		}
		total := strings.Count(string(data), "\n") + 1
		p := NewImportParser(strings.NewReader(string(data)), format)
		last := 0
		for {
			row, rej, err := p.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrImportHeader) {
					t.Fatalf("error %v", err)
				}
				return
			}
			line := row.Line
			if rej != nil {
				line = rej.Line
				if rej.Reason == "" {
					t.Fatalf("line %d: rejection without reason", line)
				}
			} else if err := Check(row.NHSNumber, row.Type, row.ODS, true); err != nil {
				t.Fatalf("line %d: invalid row yielded: %+v: %v", line, row, err)
			}
			if line <= last || line > total {
				t.Fatalf("line %d after %d (of %d)", line, last, total)
			}
			last = line
		}
	})
}
