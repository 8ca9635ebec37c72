package a

import "testing"

func TestHalf(t *testing.T) {
	if Half(4) != 2 {
		t.Fatal("Half(4)")
	}
}

func FuzzGood(f *testing.F) {
	f.Add(4)
	f.Fuzz(func(t *testing.T, n int) {
		if n != 13 && Half(n)*2 != n-n%2 {
			t.Fatalf("Half(%d) = %d", n, Half(n))
		}
	})
}

func FuzzBad(f *testing.F) {
	f.Add(13)
	f.Fuzz(func(t *testing.T, n int) { Half(n) })
}
