package auth

import (
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultTokenCacheSize is the number of verified tokens the broker
// remembers by default (config --token-cache-size).
const DefaultTokenCacheSize = 10000

// A tokenCache is split into shards of at least minShardSize entries, and
// at most maxCacheShards of them, so that concurrent requests seldom wait
// for one another's lock; a small cache is one shard (exact insertion
// order).
const (
	maxCacheShards = 16
	minShardSize   = 256
)

// The events a token cache counts (VerifierConfig.TokenCacheEvents).
const (
	cacheHit      = "hit"      // a token answered from the cache
	cacheMiss     = "miss"     // a token verified in full
	cacheEviction = "eviction" // a live entry dropped to make room for another
	cacheStale    = "stale"    // an entry dropped because it may no longer be used: expired, or its key no longer trusted
)

// tokenKey identifies a token in the cache: the SHA-256 of the whole token
// string. The token itself is never stored.
type tokenKey [sha256.Size]byte

// cacheEntry is what a full verification of a token established: whom it
// authenticates, when it may be used, and which keys may have signed it.
type cacheEntry struct {
	p Principal
	// The token passes every time check of Verify exactly when
	// !now.Before(from) && now.Before(until): until is exp + leeway; from
	// is the latest of nbf - leeway, iat - leeway and, for a token without
	// iat, exp - max lifetime - leeway.
	from, until time.Time
	// signers are the trusted keys Verify tried for the token (those with
	// its kid, or every key fitting its algorithm when it has no kid): the
	// entry is used only while all of them are still trusted.
	signers []trustedKey
	// jwks is the JWKS key set current when the token was verified; while
	// it is still current, signers need not be looked up again.
	jwks *[]trustedKey
	slot int // the entry's place in its shard's ring
}

// tokenCache remembers tokens that Verify accepted, bounded in size. Each
// shard evicts in insertion order (a ring of slots), so adding an entry is
// O(1) whatever the tokens sent. It is safe for concurrent use.
type tokenCache struct {
	shards                     []cacheShard
	hits, misses, evict, stale prometheus.Counter // nil when not counted
}

type cacheShard struct {
	mu   sync.RWMutex
	m    map[tokenKey]*cacheEntry
	ring []tokenKey // ring[i] is the key last put in slot i
	used []bool     // used[i]: ring[i] was ever filled
	next int        // the slot the next new entry takes
}

// newTokenCache returns a cache of at most size entries, or nil when size
// is not positive. events, when set, counts hits, misses, evictions and
// stale entries dropped, by the label "event".
func newTokenCache(size int, events *prometheus.CounterVec) *tokenCache {
	if size <= 0 {
		return nil
	}
	n := min(max(size/minShardSize, 1), maxCacheShards)
	per := size / n
	c := &tokenCache{shards: make([]cacheShard, n)}
	for i := range c.shards {
		c.shards[i] = cacheShard{
			m:    make(map[tokenKey]*cacheEntry),
			ring: make([]tokenKey, per),
			used: make([]bool, per),
		}
	}
	if events != nil {
		c.hits = events.WithLabelValues(cacheHit)
		c.misses = events.WithLabelValues(cacheMiss)
		c.evict = events.WithLabelValues(cacheEviction)
		c.stale = events.WithLabelValues(cacheStale)
	}
	return c
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func (c *tokenCache) shard(k tokenKey) *cacheShard {
	return &c.shards[binary.LittleEndian.Uint64(k[:8])%uint64(len(c.shards))]
}

// get returns the entry for k, if any; the caller decides whether it may
// still be used.
func (c *tokenCache) get(k tokenKey) *cacheEntry {
	s := c.shard(k)
	s.mu.RLock()
	e := s.m[k]
	s.mu.RUnlock()
	return e
}

// drop removes e, if it is still k's entry, and counts it as stale.
func (c *tokenCache) drop(k tokenKey, e *cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	if s.m[k] == e {
		delete(s.m, k)
		inc(c.stale)
	}
	s.mu.Unlock()
}

// put remembers e for k, evicting the shard's oldest entry when it is full.
func (c *tokenCache) put(k tokenKey, e *cacheEntry) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[k]; ok {
		// Verified twice at once: keep the slot.
		e.slot = old.slot
		s.m[k] = e
		return
	}
	i := s.next
	s.next = (s.next + 1) % len(s.ring)
	if s.used[i] {
		if old, ok := s.m[s.ring[i]]; ok && old.slot == i {
			delete(s.m, s.ring[i])
			inc(c.evict)
		}
	}
	s.ring[i], s.used[i] = k, true
	e.slot = i
	s.m[k] = e
}

// len returns the number of entries held.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// cached returns the Principal of token if the cache holds it and it may
// still be used now; an entry that may not is dropped.
func (v *Verifier) cached(k tokenKey) (Principal, bool) {
	e := v.cache.get(k)
	if e == nil {
		inc(v.cache.misses)
		return Principal{}, false
	}
	now := v.now()
	if now.Before(e.from) || !now.Before(e.until) || !v.stillTrusted(e) {
		// Not yet valid (a clock set back) is dropped too: the entry is
		// rebuilt by the full verification that follows, if it passes.
		v.cache.drop(k, e)
		inc(v.cache.misses)
		return Principal{}, false
	}
	inc(v.cache.hits)
	return e.p, true
}

// stillTrusted reports whether every key that may have signed e's token is
// still trusted.
func (v *Verifier) stillTrusted(e *cacheEntry) bool {
	if v.jwks == nil {
		return true // the local key never changes
	}
	set := v.jwks.currentSet()
	if set == e.jwks {
		return true // nor has the JWKS
	}
	current := *set
	for _, s := range e.signers {
		if !containsKey(v.local, s) && !containsKey(current, s) {
			return false
		}
	}
	return true
}

func containsKey(keys []trustedKey, k trustedKey) bool {
	for _, t := range keys {
		if t.kid == k.kid && t.alg == k.alg && sameKey(t.key, k.key) {
			return true
		}
	}
	return false
}

// sameKey reports whether two public keys are equal.
func sameKey(a, b crypto.PublicKey) bool {
	x, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && x.Equal(b)
}

// remember caches what a full verification of the token found.
func (v *Verifier) remember(k tokenKey, c *claims, p Principal, signers []trustedKey, jwks *[]trustedKey) {
	e := &cacheEntry{p: p, signers: signers, jwks: jwks}
	exp := c.ExpiresAt.Time
	e.until = exp.Add(v.leeway)
	if c.IssuedAt == nil {
		e.from = exp.Add(-v.maxLifetime - v.leeway)
	} else {
		e.from = c.IssuedAt.Add(-v.leeway)
	}
	if c.NotBefore != nil {
		if nbf := c.NotBefore.Add(-v.leeway); nbf.After(e.from) {
			e.from = nbf
		}
	}
	v.cache.put(k, e)
}
