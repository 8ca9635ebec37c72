// Package rx is the domain core: the prescription record that the event
// log carries, the status model of EPS-DOMAIN.md, the state machine (every
// legal transition, and the error or R-code of every illegal one) and the
// prescription rules the services decide by (dates and timers, which issue
// a message is about, replays, the NHS number check, the holder check).
// Each rule is written here once. It imports only the standard library: its
// input types are its own, and the fhir package fills them from messages.
package rx
