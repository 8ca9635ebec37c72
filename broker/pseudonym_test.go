package broker

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/nhs-eps/epsbroker/broker/service"
)

func testPseudonyms(t testing.TB, b byte) *Pseudonyms {
	t.Helper()
	p, err := NewPseudonyms(bytes.Repeat([]byte{b}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A pseudonym is a fixed-length subject token, the same for the same number
// and key, different for another number or another key, and never the
// number or a plain SHA-256 of it.
func TestPseudonymOf(t *testing.T) {
	p, q := testPseudonyms(t, 1), testPseudonyms(t, 2)
	token := regexp.MustCompile(`^[a-z2-7]{26}$`)
	seen := map[string]string{}
	for _, nhs := range []string{"9449305552", "9449304130", "9999999999", "0000000000", "123", "none"} {
		a := p.Of(nhs)
		if !token.MatchString(a) || !isPseudonym(a) || len(a) != PseudonymLen {
			t.Errorf("%s: pseudonym %q is not a 26-character base32 token", nhs, a)
		}
		if a != p.Of(nhs) {
			t.Errorf("%s: not stable", nhs)
		}
		if a == q.Of(nhs) {
			t.Errorf("%s: the same under two keys", nhs)
		}
		if strings.Contains(a, nhs) {
			t.Errorf("%s: pseudonym %s contains it", nhs, a)
		}
		if other, ok := seen[a]; ok {
			t.Errorf("%s and %s share pseudonym %s", nhs, other, a)
		}
		seen[a] = nhs
	}
	for _, s := range []string{"9449305552", "none", strings.Repeat("a", 25), strings.Repeat("A", 26), strings.Repeat("a", 25) + "1"} {
		if isPseudonym(s) {
			t.Errorf("%q taken for a pseudonym", s)
		}
	}
	if p.KeyCheck() == q.KeyCheck() || p.KeyCheck() != testPseudonyms(t, 1).KeyCheck() {
		t.Error("key check does not tell keys apart")
	}
	if _, err := NewPseudonyms(make([]byte, 16)); err == nil {
		t.Error("a 16-byte key accepted")
	}
}

// A sealed answer opens only under the same key and bucket key; a keyed
// request hash is neither the hash nor the same under another key.
func TestPseudonymSeal(t *testing.T) {
	p, q := testPseudonyms(t, 1), testPseudonyms(t, 2)
	body := []byte(`{"nhsNumber":"9449305552"}`)
	sealed := p.seal(body, []byte("key1"))
	if bytes.Contains(sealed, []byte("9449305552")) {
		t.Fatal("sealed answer holds the NHS number")
	}
	if got, err := p.open(sealed, []byte("key1")); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := p.open(sealed, []byte("key2")); err == nil {
		t.Error("opened under another bucket key")
	}
	if _, err := q.open(sealed, []byte("key1")); err == nil {
		t.Error("opened under another pseudonym key")
	}
	if _, err := p.open(sealed[:10], []byte("key1")); err == nil {
		t.Error("opened a truncated answer")
	}
	if bytes.Equal(p.seal(body, []byte("key1")), sealed) {
		t.Error("two seals of the same answer are equal (nonce reused)")
	}
	h := service.RequestHash("DELETE", "/api/v1/nominations/9449305552/P1", nil)
	if k := p.keyedHash(h); k == h || k == q.keyedHash(h) || k != p.keyedHash(h) {
		t.Errorf("keyed hash %s of %s", k, h)
	}
}

// The key is made once, mode 0600 in a 0700 directory, and read back the
// same on every start; concurrent first starts agree on one key; a key file
// or directory others may read or write is refused.
func TestLoadOrCreatePseudonymKey(t *testing.T) {
	dir := t.TempDir()
	p1, err := LoadOrCreatePseudonymKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	path := PseudonymKeyPath(dir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); runtime.GOOS != "windows" && di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode %04o, want 0700", di.Mode().Perm())
	}
	p2, err := LoadOrCreatePseudonymKey(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if p1.Of("9449305552") != p2.Of("9449305552") {
		t.Fatal("the key changed between starts")
	}
	// An explicit path (the file shared by brokers on one NATS server).
	shared := filepath.Join(t.TempDir(), "shared.pem")
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(shared, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p3, err := LoadOrCreatePseudonymKey(t.TempDir(), shared)
	if err != nil || p3.Of("9449305552") != p1.Of("9449305552") {
		t.Fatalf("shared key file: %v", err)
	}

	fresh := t.TempDir()
	var wg sync.WaitGroup
	got := make([]string, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := LoadOrCreatePseudonymKey(fresh, "")
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = p.Of("9449305552")
		}()
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] {
			t.Fatalf("concurrent first starts made different keys: %v", got)
		}
	}

	if runtime.GOOS == "windows" {
		return
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreatePseudonymKey(dir, ""); err == nil || !strings.Contains(err.Error(), "group or others") {
		t.Errorf("group-readable key file: %v", err)
	}
	os.Chmod(path, 0o600)
	if err := os.Chmod(filepath.Dir(path), 0o770); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreatePseudonymKey(dir, ""); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("group-writable key dir: %v", err)
	}
	os.Chmod(filepath.Dir(path), 0o700)
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreatePseudonymKey(dir, ""); err == nil {
		t.Error("a file without a key accepted")
	}
}
