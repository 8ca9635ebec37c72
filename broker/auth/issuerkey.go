package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// issuerKeyFile is the name of the broker's signing key inside dataDir/keys.
const issuerKeyFile = "issuer-ed25519.pem"

// maxKeyFileSize bounds how much of a key file is read; a PEM Ed25519 key is
// about 120 bytes.
const maxKeyFileSize = 64 << 10

// IssuerKeyPath returns the file in which LoadOrCreateIssuerKey keeps the
// broker's signing key for dataDir.
func IssuerKeyPath(dataDir string) string {
	return filepath.Join(dataDir, "keys", issuerKeyFile)
}

// LoadOrCreateIssuerKey returns the broker's own Ed25519 signing key, kept
// as a PKCS#8 PEM file at IssuerKeyPath(dataDir) (mode 0600, in a directory
// of mode 0700), and creates it on first use.
//
// Several processes (a starting broker and `epsctl token`, say) may call it
// at the same time: the key is written to a temporary file and hard-linked
// into place, so exactly one key wins and every caller returns it. The data
// dir's file system must support hard links.
//
// A key file that group or others may read or write, or a key directory that
// they may write, is refused rather than used.
func LoadOrCreateIssuerKey(dataDir string) (ed25519.PrivateKey, error) {
	if dataDir == "" {
		return nil, errors.New("auth: issuer key: no data dir given")
	}
	dir := filepath.Join(dataDir, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: issuer key: creating key directory: %w", err)
	}
	if err := checkKeyDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, issuerKeyFile)
	key, err := readIssuerKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	return createIssuerKey(dir, path)
}

// checkKeyDir refuses a key directory that group or others may write to, as
// they could then replace the key.
func checkKeyDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("auth: issuer key: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("auth: issuer key: %s is not a directory", dir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("auth: issuer key: directory %s is writable by group or others (mode %04o); restrict it with chmod 700",
			dir, fi.Mode().Perm())
	}
	return nil
}

// readIssuerKey reads and checks an existing key file. When the file does
// not exist the error wraps fs.ErrNotExist.
func readIssuerKey(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("auth: issuer key: %w", err)
	}
	defer f.Close()

	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("auth: issuer key: %s is not a regular file", path)
	}
	// File modes mean little on Windows; elsewhere a key others can read is
	// no longer secret, and one they can write is no longer ours.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("auth: issuer key: %s is readable or writable by group or others (mode %04o); "+
			"refusing to use it: restrict it with chmod 600, or delete it to create a new key", path, perm)
	}

	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize))
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: reading %s: %w", path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("auth: issuer key: %s holds no PEM \"PRIVATE KEY\" (PKCS#8) block", path)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: %s: %w", path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: issuer key: %s holds a %T, not an Ed25519 key", path, parsed)
	}
	return key, nil
}

// createIssuerKey generates a key, writes it to a temporary file in dir and
// links it to path. If another process linked its key first, that key is
// read and returned instead.
func createIssuerKey(dir, path string) (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: generating: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: encoding: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})

	// CreateTemp opens with O_CREATE|O_EXCL and mode 0600.
	tmp, err := os.CreateTemp(dir, ".issuer-ed25519-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: %w", err)
	}
	tmpName := tmp.Name()
	// The temporary name goes whatever happens; once linked, path keeps the
	// data.
	defer os.Remove(tmpName)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("auth: issuer key: writing: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("auth: issuer key: writing: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("auth: issuer key: writing: %w", err)
	}

	// Link, unlike rename, never replaces an existing file: the first
	// process to link wins and the others read its complete, synced key.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readIssuerKey(path)
		}
		return nil, fmt.Errorf("auth: issuer key: installing %s: %w", path, err)
	}
	syncDir(dir)
	return key, nil
}

// syncDir makes a new directory entry durable where the platform allows it.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: not every platform syncs directories
		d.Close()
	}
}

// KeyID returns the RFC 7638 JWK thumbprint of an Ed25519 public key
// (base64url, unpadded SHA-256 of {"crv":"Ed25519","kty":"OKP","x":...}),
// which Mint puts in the kid header of its tokens.
func KeyID(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
