package config

import (
	"io"
	"strings"
	"testing"
)

// The verified-token cache's size: 10000 by default, 0 turns it off, and
// nonsense is refused naming the setting.
func TestTokenCacheSizeSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want int    // when err is ""
		err  string // part of the error
	}{
		{nil, nil, 10000, ""},
		{[]string{"--token-cache-size", "0"}, nil, 0, ""},
		{nil, map[string]string{"EPS_TOKEN_CACHE_SIZE": "500"}, 500, ""},
		{[]string{"--token-cache-size", "1000000"}, nil, 1000000, ""},
		{[]string{"--token-cache-size", "-1"}, nil, 0, "token-cache-size"},
		{[]string{"--token-cache-size", "1000001"}, nil, 0, "token-cache-size"},
		{[]string{"--token-cache-size", "lots"}, nil, 0, "token-cache-size"},
	} {
		c, err := Load(tc.args, env(tc.env), io.Discard)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v %v: %v, want an error naming %q", tc.args, tc.env, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%v %v: %v", tc.args, tc.env, err)
		case tc.err == "" && c.TokenCacheSize != tc.want:
			t.Errorf("%v %v: size %d, want %d", tc.args, tc.env, c.TokenCacheSize, tc.want)
		}
	}
}
