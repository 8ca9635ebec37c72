// Package tracker holds the projections built from the event log (the
// tracker index) and the tracker's FHIR views of a prescription record. The
// record, its statuses and the state machine are the domain core, package
// tracker/rx.
package tracker
