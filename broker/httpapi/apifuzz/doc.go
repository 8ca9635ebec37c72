// Package apifuzz holds FuzzHTTP, the fuzz target of the whole HTTP API on
// a real broker with its embedded NATS server (broker/app). It lives apart
// from package httpapi so that httpapi's own tests run without NATS: their
// fakes of httpapi's ports stand for the services and the store.
package apifuzz
