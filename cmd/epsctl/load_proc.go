package main

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// procMemory reads the process's resident set size and its peak
// (VmRSS, VmHWM of /proc/self/status) in bytes; zero where unknown
// (not Linux).
func procMemory() (rss, hwm int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// resetPeakRSS starts VmHWM again from the current RSS (Linux 4.0 and
// later: writing 5 to /proc/self/clear_refs); false when it could not.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// cpuClock is the CPU time (user and system) the whole process has used.
var cpuClock = func() time.Duration { return processCPU() }

// isTerminal says whether w is a terminal (a character device), where a
// progress bar belongs; in a file or a pipe it would be noise.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
