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
	"github.com/nhs-eps/epsbroker/broker/service"
)

// userKey is the subject token of a user in the audit trail: user names may
// hold characters that subjects cannot.
func userKey(user string) string {
	h := sha256.Sum256([]byte(user))
	return hex.EncodeToString(h[:12])
}

// auditSubject is eps.audit.<patient>.<user key>: the patient is the
// pseudonym of the NHS number (never the number: see Pseudonyms), or "none"
// for a look-up that named no patient.
func (s *Store) auditSubject(nhs, user string) string {
	return SubjectAudit + s.auditPatient(nhs) + "." + userKey(user)
}

func (s *Store) auditPatient(nhs string) string {
	if nhs == "" {
		return "none"
	}
	return s.pseudo.Of(nhs)
}

// plainAuditToken reports whether an NHS number could have been the subject
// token of an audit entry written before pseudonyms.
func plainAuditToken(nhs string) bool {
	if nhs == "" || nhs == "none" || isPseudonym(nhs) {
		return false
	}
	for _, c := range nhs {
		if c == '.' || c == '*' || c == '>' || c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// Audit appends a look-up to the audit trail and returns once it is stored:
// a look-up that cannot be audited is not answered.
func (s *Store) Audit(ctx context.Context, p auth.Principal, e service.AuditEntry) error {
	e.User, e.Org, e.Role = p.Subject, p.ODS, string(p.Role)
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = s.js.Publish(ctx, s.auditSubject(e.NHSNumber, e.User), b, jetstream.WithExpectStream(StreamAudit))
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

// AuditEntries lists look-ups matching q, newest first, at most q.Limit.
// Without a filter it reads only the newest q.Limit messages; with one, the
// server walks just the matching subjects (an ordered consumer), so the
// listing costs what it returns, not the size of the trail.
//
// Entries written before pseudonyms name their patient in clear on their
// subject (the stream denies deleting them, so they stay until the stream's
// limits remove them): a patient's listing also walks that subject when the
// trail has entries from then.
func (s *Store) AuditEntries(ctx context.Context, q service.AuditQuery) ([]service.AuditEntry, error) {
	nhs, user := "*", "*"
	if q.NHSNumber != "" {
		nhs = s.auditPatient(q.NHSNumber)
	}
	if q.User != "" {
		user = userKey(q.User)
	}
	info, err := s.audit.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if q.NHSNumber == "" && q.User == "" {
		first := uint64(1)
		if info.State.LastSeq > uint64(q.Limit) {
			first = info.State.LastSeq - uint64(q.Limit) + 1
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, first
	} else {
		cfg.FilterSubjects = []string{SubjectAudit + nhs + "." + user}
	}
	var out []service.AuditEntry
	if q.NHSNumber != "" && s.auditPlainUntil >= info.State.FirstSeq && plainAuditToken(q.NHSNumber) {
		if out, err = s.plainAuditEntries(ctx, SubjectAudit+q.NHSNumber+"."+user, info.State.FirstSeq, q.Limit); err != nil {
			return nil, err
		}
	}
	err = s.scanStream(ctx, "audit", StreamAudit, cfg, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		var e service.AuditEntry
		if err := json.Unmarshal(m.Data(), &e); err != nil {
			return false, fmt.Errorf("audit entry %d: %w", md.Sequence.Stream, err)
		}
		e.Seq = md.Sequence.Stream
		out = append(out, e)
		if len(out) > q.Limit {
			out = out[1:]
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(out)
	return out, nil
}

// plainAuditEntries reads the entries on subject (which names a patient in
// clear: written before pseudonyms) up to the last sequence that may be on
// such a subject, at most the newest limit, oldest first. It reads message
// by message (the stream's direct get of the next message on a subject)
// rather than through a consumer, whose configuration, with the subject,
// other NATS users could list.
func (s *Store) plainAuditEntries(ctx context.Context, subject string, from uint64, limit int) ([]service.AuditEntry, error) {
	var out []service.AuditEntry
	for seq := from; seq <= s.auditPlainUntil; {
		m, err := s.audit.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read audit: %w", err)
		}
		if m.Sequence > s.auditPlainUntil {
			break
		}
		var e service.AuditEntry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, fmt.Errorf("audit entry %d: %w", m.Sequence, err)
		}
		e.Seq = m.Sequence
		out = append(out, e)
		if len(out) > limit {
			out = out[1:]
		}
		seq = m.Sequence + 1
	}
	return out, nil
}
