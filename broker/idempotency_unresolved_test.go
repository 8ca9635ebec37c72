package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nhs-eps/epsbroker/broker/service"
)

// A release answered 503 with its writes unconfirmed keeps its X-Request-ID
// reservation in the shared bucket, marked unresolved: another instance
// (another Store on the same NATS) takes it over at once for the same
// request, with when it was first reserved (from which the request's
// releases are read back), while a different request under the key is
// refused and a second retry meanwhile is in flight.
func TestUnresolvedReservationTakenOverAtOnce(t *testing.T) {
	st1, n, _ := commitStoreWith(t, StoreConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st2, err := OpenStore(ctx, n.Conn, StoreConfig{Replicas: 1, IdempotencyTTL: time.Hour, MaxMessage: 1 << 20,
		Pseudonyms: testPseudonyms(t, 7)}, NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	key := service.RequestKey("disp-user", "FA565", "rel-u")
	hash := service.RequestHash("POST", "/FHIR/R4/Task/$release", []byte(`{"nominated":true}`))
	now := time.Now()

	before := time.Now().Add(-time.Second) // the server's clock, allowing for rounding
	saved, res, err := st1.ReserveRequest(ctx, key, hash, now)
	if err != nil || saved != nil || res.Rev == 0 || !res.TakenOver.IsZero() {
		t.Fatalf("reserve: %+v %+v %v", saved, res, err)
	}
	if err := st1.CompleteRequest(ctx, key, res.Rev, &service.SavedResponse{BodyHash: hash, Unresolved: true}); err != nil {
		t.Fatalf("keep unresolved: %v", err)
	}
	after := time.Now().Add(time.Second)

	other := service.RequestHash("POST", "/FHIR/R4/Task/$release", []byte(`{"other":true}`))
	if saved, _, err := st2.ReserveRequest(ctx, key, other, now); err != nil || saved == nil || saved.BodyHash == other {
		t.Errorf("another request under the key: %+v, %v; want refused as a different request", saved, err)
	}
	saved, taken, err := st2.ReserveRequest(ctx, key, hash, now)
	if err != nil || saved != nil || taken.TakenOver.IsZero() {
		t.Fatalf("retry on the other instance: %+v %+v %v; want the reservation taken over at once", saved, taken, err)
	}
	if taken.TakenOver.Before(before) || taken.TakenOver.After(after) {
		t.Errorf("taken over since %v, want when it was reserved (%v .. %v)", taken.TakenOver, before, after)
	}
	if _, _, err := st1.ReserveRequest(ctx, key, hash, now); !errors.Is(err, service.ErrInFlight) {
		t.Errorf("a second retry while the first runs: %v, want in flight", err)
	}
	if err := st2.CompleteRequest(ctx, key, taken.Rev, &service.SavedResponse{BodyHash: hash, Status: 200,
		ContentType: "application/fhir+json", Body: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if saved, _, err := st1.ReserveRequest(ctx, key, hash, now); err != nil || saved == nil || saved.Status != 200 {
		t.Errorf("after the retry's answer: %+v, %v; want it replayed", saved, err)
	}
}
