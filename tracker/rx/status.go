package rx

import (
	"maps"
	"slices"
)

// Status is a prescription status (system
// https://fhir.nhs.uk/CodeSystem/EPS-task-business-status).
type Status string

const (
	StatusAwaitingReleaseReady Status = "0000"
	StatusToBeDispensed        Status = "0001"
	StatusWithDispenser        Status = "0002"
	StatusWithDispenserActive  Status = "0003"
	StatusExpired              Status = "0004"
	StatusCancelled            Status = "0005"
	StatusDispensed            Status = "0006"
	StatusNotDispensed         Status = "0007"
	StatusClaimed              Status = "0008"
	StatusNoClaimed            Status = "0009"
	StatusRepeatFuture         Status = "9000"
	StatusFuture               Status = "9001"
	StatusCancelledFuture      Status = "9005"
)

// SystemPrescriptionStatus is the code system of Status.
const SystemPrescriptionStatus = "https://fhir.nhs.uk/CodeSystem/EPS-task-business-status"

type statusInfo struct {
	display    string
	taskStatus string
}

var statuses = map[Status]statusInfo{
	StatusAwaitingReleaseReady: {"Awaiting Release Ready", "requested"},
	StatusToBeDispensed:        {"To Be Dispensed", "requested"},
	StatusWithDispenser:        {"With Dispenser", "accepted"},
	StatusWithDispenserActive:  {"With Dispenser - Active", "in-progress"},
	StatusExpired:              {"Expired", "failed"},
	StatusCancelled:            {"Cancelled", "cancelled"},
	StatusDispensed:            {"Dispensed", "completed"},
	StatusNotDispensed:         {"Not Dispensed", "completed"},
	StatusClaimed:              {"Claimed", "completed"},
	StatusNoClaimed:            {"No-Claimed", "completed"},
	StatusRepeatFuture:         {"Repeat Dispense future instance", "requested"},
	StatusFuture:               {"Prescription future instance", "requested"},
	StatusCancelledFuture:      {"Cancelled future instance", "cancelled"},
}

// Statuses lists every status of the model, in code order.
func Statuses() []Status { return slices.Sorted(maps.Keys(statuses)) }

// Valid reports whether s is a known status.
func (s Status) Valid() bool { _, ok := statuses[s]; return ok }

// Display is the status's display name.
func (s Status) Display() string { return statuses[s].display }

// TaskStatus is the FHIR Task.status the status maps to.
func (s Status) TaskStatus() string { return statuses[s].taskStatus }

// ItemStatus is a line item status (system
// https://fhir.nhs.uk/CodeSystem/medicationdispense-type).
type ItemStatus string

const (
	ItemFullyDispensed     ItemStatus = "0001"
	ItemNotDispensed       ItemStatus = "0002"
	ItemPartiallyDispensed ItemStatus = "0003"
	ItemNotDispensedOwing  ItemStatus = "0004"
	ItemCancelled          ItemStatus = "0005"
	ItemExpired            ItemStatus = "0006"
	ItemToBeDispensed      ItemStatus = "0007"
	ItemWithDispenser      ItemStatus = "0008"
)

// SystemItemStatus is the code system of ItemStatus.
const SystemItemStatus = "https://fhir.nhs.uk/CodeSystem/medicationdispense-type"

var itemDisplays = map[ItemStatus]string{
	ItemFullyDispensed:     "Item fully dispensed",
	ItemNotDispensed:       "Item not dispensed",
	ItemPartiallyDispensed: "Item dispensed - partial",
	ItemNotDispensedOwing:  "Item not dispensed owing",
	ItemCancelled:          "Item Cancelled",
	ItemExpired:            "Expired",
	ItemToBeDispensed:      "Item to be dispensed",
	ItemWithDispenser:      "Item with dispenser",
}

// Valid reports whether s is a known line item status.
func (s ItemStatus) Valid() bool { _, ok := itemDisplays[s]; return ok }

// Display is the item status's display name.
func (s ItemStatus) Display() string { return itemDisplays[s] }
