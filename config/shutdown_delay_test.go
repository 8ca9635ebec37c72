package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

// --shutdown-delay: 5 s by default, 0 turns it off, from the flag or
// EPS_SHUTDOWN_DELAY; negative or above 5 minutes is refused naming it.
func TestShutdownDelay(t *testing.T) {
	c, err := Load(nil, env(nil), io.Discard)
	if err != nil || c.ShutdownDelay != 5*time.Second {
		t.Fatalf("default shutdown delay %s (%v), want 5s", c.ShutdownDelay, err)
	}
	if c, err = Load([]string{"--shutdown-delay", "0"}, env(nil), io.Discard); err != nil || c.ShutdownDelay != 0 {
		t.Errorf("--shutdown-delay 0: %s (%v), want 0 (off)", c.ShutdownDelay, err)
	}
	if c, err = Load(nil, env(map[string]string{"EPS_SHUTDOWN_DELAY": "12s"}), io.Discard); err != nil || c.ShutdownDelay != 12*time.Second {
		t.Errorf("EPS_SHUTDOWN_DELAY=12s: %s (%v)", c.ShutdownDelay, err)
	}
	for _, v := range []string{"-1s", "6m", "soon"} {
		if _, err := Load([]string{"--shutdown-delay", v}, env(nil), io.Discard); err == nil || !strings.Contains(err.Error(), "shutdown-delay") {
			t.Errorf("--shutdown-delay %s: %v, want an error naming shutdown-delay", v, err)
		}
	}
}
