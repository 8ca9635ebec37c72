package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nhs-eps/epsbroker/broker/auth"
)

// AuditEntry is one tracker look-up: who looked, from which organisation and
// in which role, what they searched for, when, and how many prescriptions
// they were shown.
type AuditEntry struct {
	Time           time.Time `json:"time"`
	User           string    `json:"user"`
	Org            string    `json:"org"`
	Role           string    `json:"role"`
	Action         string    `json:"action"` // search or detail
	PrescriptionID string    `json:"prescriptionId,omitempty"`
	NHSNumber      string    `json:"nhsNumber,omitempty"` // searched for, or of the prescription shown
	Results        int       `json:"results"`
	Outcome        int       `json:"outcome"` // the HTTP status answered
	Seq            uint64    `json:"seq,omitempty"`
}

// userKey is the subject token of a user in the audit trail: user names may
// hold characters that subjects cannot.
func userKey(user string) string {
	h := sha256.Sum256([]byte(user))
	return hex.EncodeToString(h[:12])
}

func auditSubject(nhs, user string) string {
	if nhs == "" {
		nhs = "none"
	}
	return SubjectAudit + nhs + "." + userKey(user)
}

// Audit appends a look-up to the audit trail and returns once it is stored:
// a look-up that cannot be audited is not answered.
func (s *Store) Audit(ctx context.Context, p auth.Principal, e AuditEntry) error {
	e.User, e.Org, e.Role = p.Subject, p.ODS, string(p.Role)
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = s.js.Publish(ctx, auditSubject(e.NHSNumber, e.User), b, jetstream.WithExpectStream(StreamAudit))
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	s.metrics.JetStreamPublish.WithLabelValues(StreamAudit, outcome).Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// AuditQuery filters the audit trail.
type AuditQuery struct {
	User      string // "" for every user
	NHSNumber string // "" for every patient
	Limit     int
}

// AuditEntries lists look-ups matching q, newest first, at most q.Limit.
func (s *Store) AuditEntries(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	nhs, user := "*", "*"
	if q.NHSNumber != "" {
		nhs = q.NHSNumber
	}
	if q.User != "" {
		user = userKey(q.User)
	}
	filter := SubjectAudit + nhs + "." + user
	var out []AuditEntry
	// Read forward with direct gets of the next matching message, keeping
	// the newest Limit entries.
	for seq := uint64(1); ; {
		m, err := s.audit.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read audit: %w", err)
		}
		var e AuditEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, fmt.Errorf("audit entry %d: %w", m.Sequence, err)
		}
		e.Seq = m.Sequence
		out = append(out, e)
		if len(out) > q.Limit {
			out = out[1:]
		}
		seq = m.Sequence + 1
	}
	slices.Reverse(out)
	return out, nil
}
