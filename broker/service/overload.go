package service

import "errors"

// ErrOverloaded is a write the store refused at once, with nothing
// written, because as many writes as it lets wait were already waiting to
// be committed: the store cannot take more now. It is a store error, not a
// conflict: the compare-and-set loop returns it as it is, the services
// answer it as the store being unavailable, and the HTTP API answers 503
// with Retry-After.
var ErrOverloaded = errors.New("store overloaded: too many writes waiting to be committed")
