package memstore

import (
	"context"
	"sync"
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// Leases are an in-memory table of leases (service.Lease), as the
// EPS_LEASES key-value bucket is to the broker: a lease lapses when its
// holder has not renewed it for its TTL by the table's clock, and every
// acquisition and renewal is a compare-and-set on the lease's revision.
type Leases struct {
	mu   sync.Mutex
	now  func() time.Time
	rev  uint64
	held map[string]leaseEntry // lease name -> its holder
	fail map[string]error      // holder -> the error its calls get
}

type leaseEntry struct {
	holder string
	rev    uint64
	until  time.Time
}

// NewLeases returns an empty table whose leases age by now.
func NewLeases(now func() time.Time) *Leases {
	return &Leases{now: now, held: map[string]leaseEntry{}, fail: map[string]error{}}
}

// Lease is holder's handle on the lease name, lasting ttl without renewal.
func (l *Leases) Lease(name, holder string, ttl time.Duration) service.Lease {
	return &lease{l: l, name: name, holder: holder, ttl: ttl}
}

// Holder is who holds the lease name now ("" when no one does).
func (l *Leases) Holder(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.current(name)
	if !ok {
		return ""
	}
	return e.holder
}

// Fail makes every call of holder's leases fail with err, as when it is
// cut off from the store (nil: they are answered again).
func (l *Leases) Fail(holder string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		delete(l.fail, holder)
		return
	}
	l.fail[holder] = err
}

// current is the lease's entry unless it lapsed (l.mu held).
func (l *Leases) current(name string) (leaseEntry, bool) {
	e, ok := l.held[name]
	if !ok || !l.now().Before(e.until) {
		return leaseEntry{}, false
	}
	return e, true
}

// lease is one holder's handle.
type lease struct {
	l      *Leases
	name   string
	holder string
	ttl    time.Duration
	rev    uint64 // the revision it wrote last (0: none)
}

func (c *lease) TTL() time.Duration { return c.ttl }

// Acquire creates the lease when no one holds it, or renews it when c does.
func (c *lease) Acquire(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if err := c.l.fail[c.holder]; err != nil {
		return false, err
	}
	e, ok := c.l.current(c.name)
	if ok && e.rev != c.rev {
		return false, nil
	}
	c.write()
	return true, nil
}

// Renew extends the lease if it is still at the revision c wrote.
func (c *lease) Renew(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if err := c.l.fail[c.holder]; err != nil {
		return false, err
	}
	e, ok := c.l.current(c.name)
	if !ok || e.rev != c.rev {
		c.rev = 0
		return false, nil
	}
	c.write()
	return true, nil
}

// Release removes the lease if it is still at the revision c wrote.
func (c *lease) Release(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	if err := c.l.fail[c.holder]; err != nil {
		return err
	}
	if e, ok := c.l.current(c.name); ok && e.rev == c.rev {
		delete(c.l.held, c.name)
	}
	c.rev = 0
	return nil
}

// write stores a new revision held by c for its TTL from now (c.l.mu held).
func (c *lease) write() {
	c.l.rev++
	c.rev = c.l.rev
	c.l.held[c.name] = leaseEntry{holder: c.holder, rev: c.rev, until: c.l.now().Add(c.ttl)}
}
