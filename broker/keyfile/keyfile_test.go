package keyfile

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func newKey() ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil }

func TestLoadOrCreate(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("file modes")
	}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir, path string)
		want    string // error text, "" for success
	}{
		{"created on first use, mode 0600", nil, ""},
		{"an existing key is read", func(t *testing.T, dir, path string) {
			if _, err := LoadOrCreate(path, "TEST KEY", "test key", newKey); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"a key others may read is refused", func(t *testing.T, dir, path string) {
			writeFile(t, path, "-----BEGIN TEST KEY-----\nAAAA\n-----END TEST KEY-----\n", 0o644)
		}, "readable or writable by group or others"},
		{"a directory others may write is refused", func(t *testing.T, dir, path string) {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "writable by group or others"},
		{"another PEM type is refused", func(t *testing.T, dir, path string) {
			writeFile(t, path, "-----BEGIN OTHER KEY-----\nAAAA\n-----END OTHER KEY-----\n", 0o600)
		}, `holds no PEM "TEST KEY" block`},
		{"not PEM at all is refused", func(t *testing.T, dir, path string) {
			writeFile(t, path, "secret", 0o600)
		}, "holds no PEM"},
		{"a directory in the key's place is refused", func(t *testing.T, dir, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "keys")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "k.pem")
			if tc.prepare != nil {
				tc.prepare(t, dir, path)
			}
			got, err := LoadOrCreate(path, "TEST KEY", "test key", newKey)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "test key: ") {
					t.Fatalf("err %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want, _ := newKey()
			if !bytes.Equal(got, want) {
				t.Fatalf("key %q, want %q", got, want)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v, %v", fi, err)
			}
		})
	}
}

// Processes starting at once agree on one key: the first link wins.
func TestLoadOrCreateConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.pem")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreate(path, "TEST KEY", "test key", func() ([]byte, error) { return []byte{byte(i), 1, 2, 3}, nil })
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for _, k := range keys[1:] {
		if !bytes.Equal(k, keys[0]) {
			t.Fatalf("callers got different keys: %v", keys)
		}
	}
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
