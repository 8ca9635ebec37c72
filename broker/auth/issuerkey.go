package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nhs-eps/epsbroker/broker/keyfile"
)

// issuerKeyFile is the name of the broker's signing key inside dataDir/keys.
const issuerKeyFile = "issuer-ed25519.pem"

// IssuerKeyPath returns the file in which LoadOrCreateIssuerKey keeps the
// broker's signing key for dataDir.
func IssuerKeyPath(dataDir string) string {
	return filepath.Join(dataDir, "keys", issuerKeyFile)
}

// LoadOrCreateIssuerKey returns the broker's own Ed25519 signing key, kept
// as a PKCS#8 PEM file at IssuerKeyPath(dataDir) (mode 0600, in a directory
// of mode 0700), and creates it on first use. Several processes may call it
// at once: exactly one key wins (keyfile.LoadOrCreate). A key file that
// group or others may read or write, or a key directory that they may
// write, is refused rather than used.
func LoadOrCreateIssuerKey(dataDir string) (ed25519.PrivateKey, error) {
	if dataDir == "" {
		return nil, errors.New("auth: issuer key: no data dir given")
	}
	dir := filepath.Join(dataDir, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: issuer key: creating key directory: %w", err)
	}
	path := filepath.Join(dir, issuerKeyFile)
	der, err := keyfile.LoadOrCreate(path, "PRIVATE KEY", "auth: issuer key", func() ([]byte, error) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKCS8PrivateKey(key)
	})
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("auth: issuer key: %s: %w", path, err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: issuer key: %s holds a %T, not an Ed25519 key", path, parsed)
	}
	return key, nil
}

// KeyID returns the RFC 7638 JWK thumbprint of an Ed25519 public key
// (base64url, unpadded SHA-256 of {"crv":"Ed25519","kty":"OKP","x":...}),
// which Mint puts in the kid header of its tokens.
func KeyID(pub ed25519.PublicKey) string {
	x := base64.RawURLEncoding.EncodeToString(pub)
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + x + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
