// Package a is a module for fuzzci's tests: one target that holds, one
// that does not.
package a

// Half returns n/2, and panics on 13, which FuzzBad finds in its seeds.
func Half(n int) int {
	if n == 13 {
		panic("thirteen")
	}
	return n / 2
}
