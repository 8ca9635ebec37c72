package nomination

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nhs-eps/epsbroker/fhir"
)

// Format is the format of a bulk nomination import.
type Format int

const (
	// NDJSON is one JSON object a line: {"nhsNumber": "...", "type": "P1", "ods": "FA565"}.
	NDJSON Format = iota
	// CSV is a header line naming the columns nhsNumber, type and ods (in
	// any order), then one row a line. Fields may be double-quoted; a quoted
	// field may not span lines.
	CSV
)

func (f Format) String() string {
	if f == CSV {
		return "csv"
	}
	return "ndjson"
}

// MaxImportLine is the longest line an import accepts, in bytes (a row is
// about 50): a longer line is rejected, and skipped without being held.
const MaxImportLine = 4096

// ImportRow is one valid row of an import: set the patient's nomination of
// Type to ODS.
type ImportRow struct {
	Line      int    // 1-based line number in the file
	NHSNumber string // valid (modulus 11)
	Type      Type   // P1, P2 or P3
	ODS       string // valid ODS code
}

// Rejection is a row of an import that was not applied, and why.
type Rejection struct {
	Line   int    `json:"line"`
	Reason string `json:"reason"`
}

// ErrImportHeader is the error of a CSV import without a usable header line;
// nothing can be read from such a file.
var ErrImportHeader = errors.New("import header")

// ImportParser reads an import file as a stream, one line at a time,
// validating each row. It never holds more than one line.
type ImportParser struct {
	r      *bufio.Reader
	format Format
	line   int
	// cols are the CSV column positions of nhsNumber, type and ods; ncols
	// the header's column count.
	cols   [3]int
	ncols  int
	header bool
	fields []string
}

// NewImportParser returns a parser of r in format f.
func NewImportParser(r io.Reader, f Format) *ImportParser {
	return &ImportParser{r: bufio.NewReaderSize(r, 64<<10), format: f}
}

// Line is the number of the last line read.
func (p *ImportParser) Line() int { return p.line }

// Next returns the next row, or the rejection of the next bad row (rej not
// nil). Blank lines are skipped. err is io.EOF at the end, ErrImportHeader
// (wrapped) for a CSV file without a valid header, or the error of the
// underlying reader; after an error Next must not be called again.
func (p *ImportParser) Next() (row ImportRow, rej *Rejection, err error) {
	for {
		line, tooLong, err := p.readLine()
		if err != nil {
			return ImportRow{}, nil, err
		}
		if tooLong {
			if p.format == CSV && !p.header {
				return ImportRow{}, nil, fmt.Errorf("%w: line %d is longer than %d bytes", ErrImportHeader, p.line, MaxImportLine)
			}
			return ImportRow{}, &Rejection{Line: p.line, Reason: fmt.Sprintf("line is longer than %d bytes", MaxImportLine)}, nil
		}
		if p.line == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var nhs, typ, ods string
		var reason string
		switch p.format {
		case CSV:
			if !p.header {
				if err := p.readHeader(line); err != nil {
					return ImportRow{}, nil, err
				}
				continue
			}
			nhs, typ, ods, reason = p.csvRow(line)
		default:
			nhs, typ, ods, reason = jsonRow(line)
		}
		if reason == "" {
			nhs, typ, ods = strings.TrimSpace(nhs), strings.ToUpper(strings.TrimSpace(typ)), strings.TrimSpace(ods)
			reason = rowReason(nhs, Type(typ), ods)
		}
		if reason != "" {
			return ImportRow{}, &Rejection{Line: p.line, Reason: truncate(reason, 300)}, nil
		}
		return ImportRow{Line: p.line, NHSNumber: nhs, Type: Type(typ), ODS: ods}, nil, nil
	}
}

// readLine returns the next line without its line ending; tooLong when it
// was longer than MaxImportLine (its bytes are then skipped).
func (p *ImportParser) readLine() (line []byte, tooLong bool, err error) {
	line, err = p.r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || (err == nil && len(line) > MaxImportLine+2):
		p.line++
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = p.r.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return nil, false, err
		}
		return nil, true, nil
	case err == io.EOF && len(line) > 0:
		// The last line, without a line ending.
	case err != nil:
		return nil, false, err
	}
	p.line++
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) > MaxImportLine {
		return nil, true, nil
	}
	return line, false, nil
}

// rowReason checks a row's values: "" when valid.
func rowReason(nhs string, t Type, ods string) string {
	switch {
	case nhs == "":
		return "nhsNumber is missing"
	case t == "":
		return "type is missing"
	case ods == "":
		return "ods is missing"
	}
	if err := Check(nhs, t, ods, true); err != nil {
		var fe *fhir.Error
		if errors.As(err, &fe) && fe.Diagnostics != "" {
			return fe.Diagnostics
		}
		return err.Error()
	}
	return ""
}

// jsonRow decodes an NDJSON line.
func jsonRow(line []byte) (nhs, typ, ods, reason string) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return "", "", "", `not a JSON object: want {"nhsNumber": "...", "type": "P1", "ods": "..."}`
	}
	var v struct {
		NHSNumber *string `json:"nhsNumber"`
		Type      *string `json:"type"`
		ODS       *string `json:"ods"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return "", "", "", "not valid JSON: " + jsonReason(err)
	}
	if v.NHSNumber != nil {
		nhs = *v.NHSNumber
	}
	if v.Type != nil {
		typ = *v.Type
	}
	if v.ODS != nil {
		ods = *v.ODS
	}
	return nhs, typ, ods, ""
}

func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Sprintf("%s must be a string, not %s", te.Field, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// readHeader reads the CSV header line.
func (p *ImportParser) readHeader(line []byte) error {
	fields, reason := splitCSV(line, p.fields[:0])
	p.fields = fields
	if reason != "" {
		return fmt.Errorf("%w: line %d: %s", ErrImportHeader, p.line, reason)
	}
	p.cols = [3]int{-1, -1, -1}
	for i, f := range fields {
		k := -1
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "nhsnumber":
			k = 0
		case "type":
			k = 1
		case "ods":
			k = 2
		default:
			return fmt.Errorf("%w: line %d: unknown column %q: want the header nhsNumber,type,ods", ErrImportHeader, p.line, truncate(f, 40))
		}
		if p.cols[k] >= 0 {
			return fmt.Errorf("%w: line %d: column %q is named twice", ErrImportHeader, p.line, truncate(f, 40))
		}
		p.cols[k] = i
	}
	for _, c := range p.cols {
		if c < 0 {
			return fmt.Errorf("%w: line %d: want the header nhsNumber,type,ods", ErrImportHeader, p.line)
		}
	}
	p.ncols = len(fields)
	p.header = true
	return nil
}

// csvRow splits a CSV data line.
func (p *ImportParser) csvRow(line []byte) (nhs, typ, ods, reason string) {
	fields, reason := splitCSV(line, p.fields[:0])
	p.fields = fields
	if reason != "" {
		return "", "", "", reason
	}
	if len(fields) != p.ncols {
		return "", "", "", fmt.Sprintf("%d fields, want %d (nhsNumber,type,ods)", len(fields), p.ncols)
	}
	return fields[p.cols[0]], fields[p.cols[1]], fields[p.cols[2]], ""
}

// splitCSV splits one CSV line (RFC 4180, without line breaks in fields)
// into fields appended to dst.
func splitCSV(line []byte, dst []string) ([]string, string) {
	for i := 0; ; {
		// Skip spaces before a quote.
		j := i
		for j < len(line) && line[j] == ' ' {
			j++
		}
		if j < len(line) && line[j] == '"' {
			var b strings.Builder
			k := j + 1
			for {
				q := bytes.IndexByte(line[k:], '"')
				if q < 0 {
					return dst, fmt.Sprintf("field %d: a quoted field is not closed", len(dst)+1)
				}
				b.Write(line[k : k+q])
				k += q + 1
				if k < len(line) && line[k] == '"' { // "" is a quote
					b.WriteByte('"')
					k++
					continue
				}
				break
			}
			for k < len(line) && line[k] == ' ' {
				k++
			}
			dst = append(dst, b.String())
			if k == len(line) {
				return dst, ""
			}
			if line[k] != ',' {
				return dst, fmt.Sprintf("field %d: text after a closing quote", len(dst))
			}
			i = k + 1
			continue
		}
		c := bytes.IndexByte(line[i:], ',')
		if c < 0 {
			f := line[i:]
			if bytes.IndexByte(f, '"') >= 0 {
				return dst, fmt.Sprintf("field %d: a quote inside an unquoted field", len(dst)+1)
			}
			return append(dst, string(f)), ""
		}
		f := line[i : i+c]
		if bytes.IndexByte(f, '"') >= 0 {
			return dst, fmt.Sprintf("field %d: a quote inside an unquoted field", len(dst)+1)
		}
		dst = append(dst, string(f))
		i += c + 1
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
