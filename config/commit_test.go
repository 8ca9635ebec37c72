package config

import (
	"io"
	"strings"
	"testing"
)

// The group commit's bound of waiting writes: 1024 by default, set by flag
// or environment, and nonsense is refused naming the setting.
func TestCommitMaxPendingSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int    // when err is ""
		err  string // part of the error
	}{
		{nil, nil, 1024, ""},
		{[]string{"--commit-max-pending", "1"}, nil, 1, ""},
		{nil, map[string]string{"EPS_COMMIT_MAX_PENDING": "64"}, 64, ""},
		{[]string{"--commit-max-pending", "1000000"}, nil, 1000000, ""},
		{[]string{"--commit-max-pending", "0"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "-5"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "1000001"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "many"}, nil, 0, "commit-max-pending"},
	} {
		c, err := Load(tc.args, env(tc.env), io.Discard)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v %v: %v, want an error naming %q", tc.args, tc.env, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v %v: %v", tc.args, tc.env, err)
		case tc.err == "" && c.CommitMaxPending != tc.want:
			t.Errorf("%v %v: bound %d, want %d", tc.args, tc.env, c.CommitMaxPending, tc.want)
		}
	}
}
