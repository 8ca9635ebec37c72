package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Metadata the broker keeps on the nominations bucket's stream (a stream
// whose configuration it never rewrites whole).
const (
	// metaPseudonymKey is Pseudonyms.KeyCheck of the key the data is
	// written with.
	metaPseudonymKey = "eps_pseudonym_key"
	// metaAuditPlainUntil is the last audit stream sequence that may be on
	// a subject naming an NHS number in clear (written before pseudonyms);
	// 0 when there is none.
	metaAuditPlainUntil = "eps_audit_plain_until"
	// metaNominationKeys is nominationKeysPseudonym once every nomination
	// key written before pseudonyms has been moved.
	metaNominationKeys      = "eps_nomination_keys"
	nominationKeysPseudonym = "pseudonym"
)

// ErrPseudonymKeyMismatch is a pseudonym key other than the one the data
// was written with.
var ErrPseudonymKeyMismatch = errors.New("pseudonym key does not match the data")

// subjectNominations is the subject prefix of the nominations bucket's keys.
const subjectNominations = "$KV." + BucketNominations + "."

// usePseudonyms checks that p is the key the data was written with (or
// records it, on the first start with pseudonyms) and moves every
// nomination still under an NHS number in clear to its pseudonym.
func (s *Store) usePseudonyms(ctx context.Context, p *Pseudonyms) error {
	if p == nil {
		return errors.New("no pseudonym key")
	}
	s.pseudo = p
	st, err := s.js.Stream(ctx, streamNominations)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", BucketNominations, err)
	}
	cfg := st.CachedInfo().Config
	got, recorded := cfg.Metadata[metaPseudonymKey]
	if recorded && got != p.KeyCheck() {
		return fmt.Errorf("%w: the data in NATS was written with the key whose check is %s, this key's is %s: "+
			"start the broker with the key file it was first started with (--pseudonym-key; every broker sharing "+
			"a NATS server needs the same file), restored from a backup if need be",
			ErrPseudonymKeyMismatch, got, p.KeyCheck())
	}
	if recorded {
		if s.auditPlainUntil, err = strconv.ParseUint(cfg.Metadata[metaAuditPlainUntil], 10, 64); err != nil {
			return fmt.Errorf("bucket %s: metadata %s: %w", BucketNominations, metaAuditPlainUntil, err)
		}
	} else {
		// The first start with pseudonyms: every audit entry so far may name
		// its patient in clear on its subject (the stream denies deleting
		// them, so they stay, and reads look for both forms).
		ai, err := s.audit.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", StreamAudit, err)
		}
		s.auditPlainUntil = ai.State.LastSeq
	}
	if cfg.Metadata[metaNominationKeys] == nominationKeysPseudonym {
		return nil
	}
	if err := s.migrateNominations(ctx, st); err != nil {
		return err
	}
	// Recorded once every key is moved: later starts need not look.
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[metaPseudonymKey] = p.KeyCheck()
	cfg.Metadata[metaAuditPlainUntil] = strconv.FormatUint(s.auditPlainUntil, 10)
	cfg.Metadata[metaNominationKeys] = nominationKeysPseudonym
	if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("bucket %s: record the pseudonym key: %w", BucketNominations, err)
	}
	return nil
}

// plainKey is a nominations bucket key written before pseudonyms: the
// stream sequences of its values, oldest first.
type plainKey struct {
	seqs   []uint64
	copied int // how many of them are already under the pseudonym
}

// migrateNominations rewrites each nomination key that is an NHS number in
// clear under the number's pseudonym, every revision in the order it was
// written (so the history, and the reports that read the whole stream, see
// the same changes in the same order), then purges the clear key's subject
// (the bucket denies deleting messages but allows purging a subject). A
// migration cut short is resumed on the next start: the revisions already
// copied are recognised and not written twice.
func (s *Store) migrateNominations(ctx context.Context, st jetstream.Stream) error {
	if st.CachedInfo().State.Msgs == 0 {
		return nil
	}
	order, keys, pseudonyms, err := s.plainNominationKeys(ctx)
	if err != nil || len(keys) == 0 {
		return err
	}
	// What is under each pseudonym already (a migration cut short).
	for k, pk := range keys {
		if _, ok := pseudonyms[s.pseudo.Of(k)]; !ok {
			continue
		}
		hist, err := s.nominations.History(ctx, s.pseudo.Of(k))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("migrate nominations: %w", err)
		}
		var puts []jetstream.KeyValueEntry
		for _, e := range hist {
			if e.Operation() == jetstream.KeyValuePut {
				puts = append(puts, e)
			}
		}
		for i, e := range puts {
			if i == len(pk.seqs) {
				break // every clear revision is copied; later changes follow
			}
			m, err := st.GetMsg(ctx, pk.seqs[i])
			if err != nil {
				return fmt.Errorf("migrate nominations: %w", err)
			}
			if !bytes.Equal(m.Data, e.Value()) {
				return fmt.Errorf("migrate nominations: the patient whose pseudonym is %s has other nominations under the "+
					"pseudonym than under the NHS number (a broker without pseudonyms wrote to the same NATS meanwhile); "+
					"stop every broker of older versions and reconcile the bucket %s", s.pseudo.Of(k), BucketNominations)
			}
			pk.copied = i + 1
		}
	}
	if err := s.copyNominations(ctx, order, keys); err != nil {
		return err
	}
	return purgeSubjects(ctx, st, keys)
}

// migrationBatch is how many copies are in flight at once.
const migrationBatch = 512

// copyNominations writes, in stream order, each clear key's revisions not
// yet copied under its pseudonym. The writes are pipelined; each carries
// the clear message's sequence as its message ID, so that a broker
// migrating at the same time (brokers sharing a NATS server, started
// together) does not copy a revision twice within the stream's duplicate
// window, and the revisions of a key stay in order (one connection sends
// them in order).
func (s *Store) copyNominations(ctx context.Context, order []keySeq, keys map[string]*plainKey) error {
	last := order[len(order)-1].seq
	seen := map[string]int{}
	var futures []jetstream.PubAckFuture
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("migrate nominations: copy: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	err := s.scanStream(ctx, "nominations to migrate", streamNominations, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   order[0].seq,
	}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		seq := md.Sequence.Stream
		if seq > last {
			return false, nil
		}
		if len(futures) >= migrationBatch {
			if err := wait(); err != nil {
				return false, err
			}
		}
		k := strings.TrimPrefix(m.Subject(), subjectNominations)
		pk := keys[k]
		if pk == nil {
			return seq < last, nil
		}
		i := seen[k]
		if i >= len(pk.seqs) || pk.seqs[i] != seq {
			return seq < last, nil // not a value listed (a marker)
		}
		seen[k]++
		if i < pk.copied {
			return seq < last, nil
		}
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subjectNominations + s.pseudo.Of(k), Data: m.Data()},
			jetstream.WithMsgID("eps-pseudonym-migration-"+strconv.FormatUint(seq, 10)), jetstream.WithExpectStream(streamNominations))
		if err != nil {
			return false, fmt.Errorf("migrate nominations: copy: %w", err)
		}
		futures = append(futures, f)
		return seq < last, nil
	})
	if err != nil {
		return err
	}
	return wait()
}

// purgeSubjects purges each clear key's subject, several at once.
func purgeSubjects(ctx context.Context, st jetstream.Stream, keys map[string]*plainKey) error {
	ch := make(chan string)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range ch {
				if err := st.Purge(ctx, jetstream.WithPurgeSubject(subjectNominations+k)); err != nil {
					select {
					case errs <- fmt.Errorf("migrate nominations: purge a clear key: %w", err):
					default:
					}
				}
			}
		}()
	}
	for k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

type keySeq struct {
	key string
	seq uint64
}

// plainNominationKeys lists the values in the nominations stream whose key
// is not a pseudonym, in stream order, and by key; and the pseudonyms that
// have messages. Only headers are read.
func (s *Store) plainNominationKeys(ctx context.Context) (order []keySeq, keys map[string]*plainKey, pseudonyms map[string]struct{}, err error) {
	keys, pseudonyms = map[string]*plainKey{}, map[string]struct{}{}
	err = s.scanStream(ctx, "nominations to migrate", streamNominations, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverAllPolicy,
		HeadersOnly:   true,
	}, func(m jetstream.Msg, md *jetstream.MsgMetadata) (bool, error) {
		k := strings.TrimPrefix(m.Subject(), subjectNominations)
		// Only values: the broker never deletes nominations, and a purge
		// of a clear key leaves nothing to copy.
		if isPseudonym(k) {
			pseudonyms[k] = struct{}{}
			return true, nil
		}
		if m.Headers().Get("KV-Operation") != "" {
			return true, nil
		}
		pk := keys[k]
		if pk == nil {
			pk = &plainKey{}
			keys[k] = pk
		}
		pk.seqs = append(pk.seqs, md.Sequence.Stream)
		order = append(order, keySeq{k, md.Sequence.Stream})
		return true, nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("migrate nominations: %w", err)
	}
	return order, keys, pseudonyms, nil
}

// Pseudonym is the pseudonym of an NHS number under the broker's key (what
// an operator finds in NATS subjects and keys in place of the number).
func (s *Store) Pseudonym(nhs string) string { return s.pseudo.Of(nhs) }
