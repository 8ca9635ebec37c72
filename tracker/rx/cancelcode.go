package rx

// CancelCode is the answer to a cancellation: an R-code of EPS-DOMAIN.md
// (system https://fhir.nhs.uk/CodeSystem/medicationrequest-status-history).
type CancelCode string

// Cancellation answers.
const (
	RCancelled          CancelCode = "R-0001"
	RPendingWith        CancelCode = "R-0002" // with dispenser: marked for cancellation
	RPendingActive      CancelCode = "R-0003" // with dispenser, part dispensed: marked for cancellation
	RDispensed          CancelCode = "R-0004"
	RExpired            CancelCode = "R-0005"
	RAlreadyCancelled   CancelCode = "R-0006"
	RRequestedByAnother CancelCode = "R-0007"
	RNotFound           CancelCode = "R-0008"
	RDisabled           CancelCode = "R-0009"
	RNotDispensed       CancelCode = "R-0010"
	RMismatch           CancelCode = "R-5000"
	RInvalid            CancelCode = "R-5888"
)

// cancelDisplays is the NHS wording of each cancellation answer: the one
// table of them.
var cancelDisplays = map[CancelCode]string{
	RCancelled:          "Prescription/item was cancelled",
	RPendingWith:        "Prescription/item was not cancelled. With dispenser. Marked for cancellation",
	RPendingActive:      "Prescription/item was not cancelled. With dispenser active. Marked for cancellation",
	RDispensed:          "Prescription/item was not cancelled. Prescription has been dispensed.",
	RExpired:            "Prescription/item has expired",
	RAlreadyCancelled:   "Prescription/item had already been cancelled",
	RRequestedByAnother: "Prescription/item cancellation requested by another prescriber",
	RNotFound:           "Prescription/item not found",
	RDisabled:           "Cancellation functionality disabled in SPINE",
	RNotDispensed:       "Prescription/item was not cancelled. Prescription has been not dispensed.",
	RMismatch:           "Unable to process message. Information missing or invalid - Mismatch between prescription and cancellation NHSNumber",
	RInvalid:            "Invalid Message.",
}

// Display is the NHS wording of the answer ("" for an unknown code).
func (c CancelCode) Display() string { return cancelDisplays[c] }

// Valid reports whether c is a known answer.
func (c CancelCode) Valid() bool { _, ok := cancelDisplays[c]; return ok }

// Refusal reports whether the answer refuses the cancellation without a
// prescription to answer about (R-0008), or because it could not be
// processed (R-0009, R-5000, R-5888): answered with an OperationOutcome, not
// a prescription-order-response.
func (c CancelCode) Refusal() bool {
	switch c {
	case RNotFound, RDisabled, RMismatch, RInvalid:
		return true
	}
	return false
}
