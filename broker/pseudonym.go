package broker

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nhs-eps/epsbroker/broker/keyfile"
)

// Patient identifiers never appear in NATS subjects, KV keys or stream and
// consumer names: where the broker needs a patient's NHS number to address
// something (the nominations bucket's keys, the audit trail's subjects) it
// uses the number's pseudonym, a keyed hash (HMAC-SHA-256) under a secret
// kept in the data dir. Without the key a pseudonym cannot be turned back
// into an NHS number by trying every number (there are only about 10^9).
// The records themselves (a nomination, an audit entry, the event log's
// record) keep the NHS number in their data, which only the broker reads.

// pseudonymKeyFile is the name of the pseudonym key inside dataDir/keys.
const pseudonymKeyFile = "pseudonym-hmac.pem"

// pseudonymPEMType is the PEM block type of a pseudonym key file.
const pseudonymPEMType = "EPS PSEUDONYM KEY"

// PseudonymLen is the length of a pseudonym: 128 bits of the HMAC in
// lower-case base32 without padding (26 characters of a-z and 2-7), a valid
// NATS subject token and KV key that cannot be mistaken for an NHS number
// (ten digits).
const PseudonymLen = 26

var pseudonymEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// PseudonymKeyPath is where the pseudonym key is kept for dataDir when no
// other path is given (--pseudonym-key).
func PseudonymKeyPath(dataDir string) string {
	return filepath.Join(dataDir, "keys", pseudonymKeyFile)
}

// Pseudonyms turns NHS numbers into pseudonyms and seals what the broker
// keeps for X-Request-ID replays, under one secret key.
type Pseudonyms struct {
	key  []byte
	aead cipher.AEAD
}

// NewPseudonyms returns the pseudonyms of a 32-byte key.
func NewPseudonyms(key []byte) (*Pseudonyms, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("pseudonym key: %d bytes, want 32", len(key))
	}
	p := &Pseudonyms{key: append([]byte(nil), key...)}
	block, err := aes.NewCipher(p.derive("eps-requests-seal-v1"))
	if err != nil {
		return nil, err
	}
	if p.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	return p, nil
}

// derive is a sub-key for one use, so that no two uses share a key.
func (p *Pseudonyms) derive(label string) []byte {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// Of is the pseudonym of an NHS number: the same number always gives the
// same pseudonym under the same key.
func (p *Pseudonyms) Of(nhs string) string {
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte("eps-nhs-number-v1\x00"))
	m.Write([]byte(nhs))
	return pseudonymEncoding.EncodeToString(m.Sum(nil)[:16])
}

// KeyCheck identifies the key without revealing it: it is kept with the
// data (the nominations bucket's stream metadata) so that a broker started
// with another key refuses to start instead of losing every patient's
// nominations and audit entries from view.
func (p *Pseudonyms) KeyCheck() string {
	return hex.EncodeToString(p.derive("eps-pseudonym-key-check-v1")[:8])
}

// keyedHash is a request hash under the key: the hash of a request whose
// path or body holds an NHS number (a nomination change) could otherwise be
// reversed by trying every number.
func (p *Pseudonyms) keyedHash(hash string) string {
	m := hmac.New(sha256.New, p.derive("eps-request-hash-v1"))
	m.Write([]byte(hash))
	return "k1:" + hex.EncodeToString(m.Sum(nil))
}

// seal encrypts b (AES-256-GCM under a key derived from the pseudonym key)
// bound to ad: nonce then ciphertext.
func (p *Pseudonyms) seal(b, ad []byte) []byte {
	nonce := make([]byte, p.aead.NonceSize(), p.aead.NonceSize()+len(b)+p.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail
	}
	return p.aead.Seal(nonce, nonce, b, ad)
}

// open decrypts what seal made with the same ad.
func (p *Pseudonyms) open(b, ad []byte) ([]byte, error) {
	n := p.aead.NonceSize()
	if len(b) < n+p.aead.Overhead() {
		return nil, errors.New("sealed answer too short")
	}
	return p.aead.Open(nil, b[:n], b[n:], ad)
}

// isPseudonym reports whether s has the form of a pseudonym.
func isPseudonym(s string) bool {
	if len(s) != PseudonymLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '2' || c > '7') {
			return false
		}
	}
	return true
}

// LoadOrCreatePseudonymKey returns the pseudonyms of the key at path
// (PseudonymKeyPath(dataDir) when path is empty), creating the key on first
// start: 32 random bytes in a PEM file of mode 0600 in a directory of mode
// 0700. A key file or directory that others may read or write is refused.
// Several processes starting at once agree on one key
// (keyfile.LoadOrCreate). Brokers that share a NATS server must share this
// file.
func LoadOrCreatePseudonymKey(dataDir, path string) (*Pseudonyms, error) {
	if path == "" {
		if dataDir == "" {
			return nil, errors.New("pseudonym key: no data dir given")
		}
		path = PseudonymKeyPath(dataDir)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("pseudonym key: creating key directory: %w", err)
		}
	}
	key, err := keyfile.LoadOrCreate(path, pseudonymPEMType, "pseudonym key", func() ([]byte, error) {
		key := make([]byte, 32)
		_, err := rand.Read(key)
		return key, err
	})
	if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("pseudonym key: %s holds %d bytes, not 32", path, len(key))
	}
	return NewPseudonyms(key)
}
