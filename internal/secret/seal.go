package secret

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hmci/hm/internal/errs"
)

// A Sealer seals a remote build's secret values for its store and opens them again: AES-256-GCM
// under a key kept beside the server's data (never in the database), the build's id as the
// additional data so that a sealed row moved to another build does not open. The store then
// holds ciphertext only; a database dump or a backup without the key reveals no value.
type Sealer struct{ aead cipher.AEAD }

// NewSealer takes a 32-byte key (more is cut: the key file holds at least 32 random bytes).
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("secret: the sealing key must be at least 32 bytes: %w", errs.ErrUsage)
	}
	block, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// ErrUnsealable says sealed secrets do not open under this key and build id.
var ErrUnsealable = errors.New("the build's secrets do not open with this server's key")

const sealVersion = 1

// Seal encrypts values for build id: a version byte, the nonce, then the ciphertext of the
// values' JSON.
func (s *Sealer) Seal(buildID string, values map[string]string) ([]byte, error) {
	plain, err := json.Marshal(values)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte{sealVersion}, nonce...)
	return s.aead.Seal(out, nonce, plain, []byte(buildID)), nil
}

// Open decrypts what Seal made for build id; ErrUnsealable (wrapping errs.ErrInfra) when the
// key or the id differ or the bytes were changed.
func (s *Sealer) Open(buildID string, sealed []byte) (map[string]string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: %w: unknown format", errs.ErrInfra, ErrUnsealable)
	}
	plain, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(buildID))
	if err != nil {
		return nil, fmt.Errorf("%w: %w: %w", errs.ErrInfra, ErrUnsealable, err)
	}
	var values map[string]string
	if err := json.Unmarshal(plain, &values); err != nil {
		return nil, fmt.Errorf("%w: %w: %w", errs.ErrInfra, ErrUnsealable, err)
	}
	return values, nil
}
