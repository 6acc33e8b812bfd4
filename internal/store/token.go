package store

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// TokenHash is the sha256 of a token's secret, hex: all the store ever sees of a token.
type TokenHash string

// HashToken hashes a presented secret. A plain sha256 is enough: secrets are 256 random bits,
// so there is nothing to brute-force that a slow hash would protect.
func HashToken(secret string) TokenHash {
	h := sha256.Sum256([]byte(secret))
	return TokenHash(hex.EncodeToString(h[:]))
}

// NewToken returns a fresh secret for kind and its hash. The prefix only helps a person (and
// secret scanners) recognize an hm token and its kind; the lookup is by hash alone.
func NewToken(kind TokenKind) (secret string, h TokenHash) {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand: "Read ... never returns an error")
	prefix := "hmu_"
	if kind == TokenAgent {
		prefix = "hma_"
	}
	secret = prefix + hex.EncodeToString(b)
	return secret, HashToken(secret)
}
