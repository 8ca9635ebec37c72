//go:build unix

package main

import (
	"syscall"
	"time"
)

// processCPU is the user and system CPU time of the process so far
// (getrusage RUSAGE_SELF: every thread, the load generator's too).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
