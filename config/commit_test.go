package config

import (
	"io"
	"strings"
	"testing"
)

// intSettingCase is a command line and environment, and the value they set
// (when err is "") or part of the error refusing them.
type intSettingCase struct {
	args []string
	env  map[string]string
	want int
	err  string
}

// checkIntSetting loads each case and compares the setting got reads.
func checkIntSetting(t *testing.T, got func(Config) int, cases []intSettingCase) {
	t.Helper()
	for _, tc := range cases {
		c, err := Load(tc.args, env(tc.env), io.Discard)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v %v: %v, want an error naming %q", tc.args, tc.env, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v %v: %v", tc.args, tc.env, err)
		case tc.err == "" && got(c) != tc.want:
			t.Errorf("%v %v: %d, want %d", tc.args, tc.env, got(c), tc.want)
		}
	}
}

// The group commit's bound of waiting writes: 1024 by default, set by flag
// or environment, and nonsense is refused naming the setting.
func TestCommitMaxPendingSetting(t *testing.T) {
	checkIntSetting(t, func(c Config) int { return c.CommitMaxPending }, []intSettingCase{
		{nil, nil, 1024, ""},
		{[]string{"--commit-max-pending", "1"}, nil, 1, ""},
		{nil, map[string]string{"EPS_COMMIT_MAX_PENDING": "64"}, 64, ""},
		{[]string{"--commit-max-pending", "1000000"}, nil, 1000000, ""},
		{[]string{"--commit-max-pending", "0"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "-5"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "1000001"}, nil, 0, "commit-max-pending"},
		{[]string{"--commit-max-pending", "many"}, nil, 0, "commit-max-pending"},
	})
}
