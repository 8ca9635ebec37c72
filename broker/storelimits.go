package broker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StorageLimits are the most bytes each stream and bucket keeps: a positive
// number of bytes, 0 for an automatic share of Budget (StorageShares), -1 for
// no limit.
type StorageLimits struct {
	Events, Audit, Requests, Sessions, Nominations int64
	// Notify is the notification stream EPS_NOTIFY's limit (issue 12): a
	// full EPS_NOTIFY drops its oldest notifications (see notify.go).
	Notify int64
	// Dead is the dead letter stream's (EPS_DEAD).
	Dead int64
	// Budget is the JetStream storage the broker may use: the embedded
	// server's max store (NATS makes it 75% of the disk space free, counting
	// what JetStream holds already), or an external account's storage
	// limit. 0: unknown (the account's limit is asked for; without one,
	// automatic limits are none).
	Budget int64
	// Alert is the used fraction of a limit at which the storage alert
	// fires and /readyz warns.
	Alert float64
}

// StorageShares are the automatic limits, as shares of the budget: together
// 90%, leaving room for the server's own files (the 5% the ready queues'
// stream EPS_QUEUE had is left free since the queues are kept in memory).
var StorageShares = struct{ Events, Audit, Requests, Sessions, Nominations, Notify, Dead float64 }{
	Events: 0.50, Audit: 0.15, Requests: 0.10, Sessions: 0.01, Nominations: 0.10, Notify: 0.03, Dead: 0.01,
}

// minAutoBytes is the least an automatic limit gives a stream.
const minAutoBytes = 1 << 20

// resolveLimits turns automatic limits into bytes.
func resolveLimits(ctx context.Context, js jetstream.JetStream, in StorageLimits) (StorageLimits, error) {
	out := in
	if out.Alert <= 0 || out.Alert >= 1 {
		out.Alert = 0.8
	}
	if out.Budget <= 0 {
		out.Budget = 0
		// Without the account's info (a user not allowed $JS.API.INFO),
		// the budget is unknown: automatic limits are none.
		if ai, err := js.AccountInfo(ctx); err == nil && ai.Limits.MaxStore > 0 {
			out.Budget = ai.Limits.MaxStore
		}
	}
	auto := func(v *int64, share float64) {
		if *v != 0 {
			return
		}
		if out.Budget <= 0 {
			*v = -1
			return
		}
		*v = max(int64(share*float64(out.Budget)), minAutoBytes)
	}
	auto(&out.Events, StorageShares.Events)
	auto(&out.Audit, StorageShares.Audit)
	auto(&out.Requests, StorageShares.Requests)
	auto(&out.Sessions, StorageShares.Sessions)
	auto(&out.Nominations, StorageShares.Nominations)
	auto(&out.Notify, StorageShares.Notify)
	auto(&out.Dead, StorageShares.Dead)
	return out, nil
}

// natsLimit is a limit as a stream's max_bytes (-1: none).
func natsLimit(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}

// JetStream error codes of writes refused for want of space.
const (
	jsErrAccountResourcesExceeded = 10002 // the account's storage limit
	jsErrInsufficientResources    = 10023 // the server's storage
	jsErrStorageResourcesExceeded = 10047 // a stream's reservation does not fit
	jsErrStreamStoreFailed        = 10077 // "maximum bytes exceeded", "maximum messages exceeded", ...
)

// limitError says what to do when a stream's limit could not be set.
func limitError(stream, flag string, limit int64, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStorageResourcesExceeded {
		return fmt.Errorf("stream %s: a limit of %d bytes does not fit in the JetStream storage left on the server or account "+
			"(the limits of all streams are reserved together): set a smaller --%s, or free or add disk space: %w", stream, limit, flag, err)
	}
	return fmt.Errorf("stream %s: %w", stream, err)
}

// limitStream sets a stream's max_bytes (and discard new: a full stream
// refuses new messages and drops nothing) when they differ.
func limitStream(ctx context.Context, js jetstream.JetStream, name string, limit int64) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.MaxBytes == natsLimit(limit) && cfg.Discard == jetstream.DiscardNew {
		return nil
	}
	cfg.MaxBytes, cfg.Discard = natsLimit(limit), jetstream.DiscardNew
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// ErrStorageFull is a write JetStream refused for want of space: a stream at
// its limit, or the account's or server's storage exhausted. Nothing of the
// write was stored. The HTTP API answers 507.
var ErrStorageFull = errors.New("storage full")

// StorageFullError is ErrStorageFull for one stream.
type StorageFullError struct {
	Stream string
	Err    error
}

func (e *StorageFullError) Error() string {
	return fmt.Sprintf("stream %s is full: %v", e.Stream, e.Err)
}

func (e *StorageFullError) Unwrap() []error { return []error{ErrStorageFull, e.Err} }

// IsStorageFull reports whether err is a write refused for want of space.
func IsStorageFull(err error) bool {
	if errors.Is(err, ErrStorageFull) {
		return true
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrAccountResourcesExceeded, jsErrInsufficientResources, jsErrStorageResourcesExceeded:
		return true
	case jsErrStreamStoreFailed:
		d := strings.ToLower(apiErr.Description)
		return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages exceeded") ||
			strings.Contains(d, "resources exceeded") || strings.Contains(d, "insufficient")
	}
	return false
}

// FullStream names the stream of a storage-full error ("" when unknown).
func FullStream(err error) string {
	var e *StorageFullError
	if errors.As(err, &e) {
		return e.Stream
	}
	return ""
}

// NoteStorageFull records a write refused for want of space on stream
// (StreamJetStream when the stream is not known).
func (s *Store) NoteStorageFull(stream string) {
	if stream == "" {
		stream = StreamJetStream
	}
	s.full.Lock()
	s.full.m[stream] = time.Now()
	s.full.Unlock()
	if s.fullCount != nil {
		s.fullCount.WithLabelValues(stream).Inc()
	}
}

// noteStored clears a stream's refused mark once a write to it is stored.
func (s *Store) noteStored(stream string) {
	s.full.Lock()
	if _, ok := s.full.m[stream]; ok {
		delete(s.full.m, stream)
	}
	s.full.Unlock()
}

// StreamJetStream labels the whole of the JetStream storage (the account)
// among the streams.
const StreamJetStream = "jetstream"

// StreamUsage is how much of its limit a stream uses.
type StreamUsage struct {
	Stream string
	Bytes  uint64
	Msgs   uint64
	Limit  int64 // bytes; -1: none
	// Refused is when a write was last refused for want of space, when no
	// write has been stored since (zero otherwise).
	Refused time.Time
}

// Used is the fraction of the limit in use (0 without a limit).
func (u StreamUsage) Used() float64 {
	if u.Limit <= 0 {
		return 0
	}
	return float64(u.Bytes) / float64(u.Limit)
}

// storedStream is a stream the broker keeps, with its limit; optional when
// the store does not make it itself and it may not exist.
type storedStream struct {
	name     string
	limit    int64
	optional bool
}

// storedStreams are the streams the broker keeps, with their limits. The
// lease bucket (lease.go) has a fixed limit, set when the scheduler's lease
// opens it; it does not exist before (or on a server without per-message
// TTLs, where there are no leases).
func (s *Store) storedStreams() []storedStream {
	l := s.limits
	return []storedStream{
		{name: StreamEvents, limit: l.Events}, {name: StreamAudit, limit: l.Audit},
		{name: "KV_" + BucketRequests, limit: l.Requests}, {name: "KV_" + BucketSessions, limit: l.Sessions},
		{name: "KV_" + BucketNominations, limit: l.Nominations},
		{name: StreamNotify, limit: l.Notify},
		{name: StreamDead, limit: l.Dead},
		{name: "KV_" + BucketLeases, limit: leasesMaxBytes, optional: true},
	}
}

// Limits are the store's limits in bytes (automatic ones resolved).
func (s *Store) Limits() StorageLimits { return s.limits }

// StorageUsage reads each stream's size against its limit, and the whole
// JetStream account's against the budget (stream StreamJetStream).
func (s *Store) StorageUsage(ctx context.Context) ([]StreamUsage, error) {
	s.full.Lock()
	refused := make(map[string]time.Time, len(s.full.m))
	for k, v := range s.full.m {
		// A refusal not tied to a stream's later success is forgotten after
		// a minute.
		if k == StreamEvents || time.Since(v) < time.Minute {
			refused[k] = v
		}
	}
	s.full.Unlock()
	var out []StreamUsage
	for _, st := range s.storedStreams() {
		str, err := s.js.Stream(ctx, st.name)
		if st.optional && errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", st.name, err)
		}
		info := str.CachedInfo()
		limit := info.Config.MaxBytes
		if limit <= 0 {
			limit = -1
		}
		out = append(out, StreamUsage{Stream: st.name, Bytes: info.State.Bytes, Msgs: info.State.Msgs, Limit: limit, Refused: refused[st.name]})
	}
	ai, err := s.js.AccountInfo(ctx)
	if err != nil {
		return out, nil // the streams' own figures stand without the account's
	}
	limit := s.limits.Budget
	if ai.Limits.MaxStore > 0 {
		limit = ai.Limits.MaxStore
	}
	if limit <= 0 {
		limit = -1
	}
	out = append(out, StreamUsage{Stream: StreamJetStream, Bytes: ai.Store, Limit: limit, Refused: refused[StreamJetStream]})
	return out, nil
}

// StorageWarnings are the words /readyz adds about storage: each stream at
// or above the alert fraction of its limit, and each refusing writes.
func (s *Store) StorageWarnings(ctx context.Context) ([]string, error) {
	usage, err := s.StorageUsage(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range usage {
		switch {
		case !u.Refused.IsZero():
			out = append(out, fmt.Sprintf("storage: %s is full (%d of %d bytes): writes to it are refused with 507 since %s; raise its limit or free space",
				u.Stream, u.Bytes, u.Limit, u.Refused.UTC().Format(time.RFC3339)))
		case u.Limit > 0 && u.Used() >= s.limits.Alert && !DropsOldest(u.Stream):
			out = append(out, fmt.Sprintf("storage: %s uses %.0f%% of its limit (%d of %d bytes; alert at %.0f%%)",
				u.Stream, 100*u.Used(), u.Bytes, u.Limit, 100*s.limits.Alert))
		}
	}
	sort.Strings(out)
	return out, nil
}
