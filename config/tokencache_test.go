package config

import "testing"

// The verified-token cache's size: 10000 by default, 0 turns it off, and
// nonsense is refused naming the setting.
func TestTokenCacheSizeSetting(t *testing.T) {
	checkIntSetting(t, func(c Config) int { return c.TokenCacheSize }, []intSettingCase{
		{nil, nil, 10000, ""},
		{[]string{"--token-cache-size", "0"}, nil, 0, ""},
		{nil, map[string]string{"EPS_TOKEN_CACHE_SIZE": "500"}, 500, ""},
		{[]string{"--token-cache-size", "1000000"}, nil, 1000000, ""},
		{[]string{"--token-cache-size", "-1"}, nil, 0, "token-cache-size"},
		{[]string{"--token-cache-size", "1000001"}, nil, 0, "token-cache-size"},
		{[]string{"--token-cache-size", "lots"}, nil, 0, "token-cache-size"},
	})
}
