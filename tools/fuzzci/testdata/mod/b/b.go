// Package b has tests but no fuzz target.
package b

// One is 1.
func One() int { return 1 }
