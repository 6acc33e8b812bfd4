package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Log tokens are build-scoped and HMAC-signed, never stored: "hml_" + base64url(build id "."
// unix expiry) + "." + base64url(HMAC-SHA256 of that, under Config.LogKey). The Harmont
// client inserts the token into the query unencoded, so it uses only URL-safe characters.
const logTokenPrefix = "hml_"

func (s *Server) signLogToken(buildID string, exp time.Time) string {
	payload := base64.RawURLEncoding.EncodeToString([]byte(buildID + "." + strconv.FormatInt(exp.Unix(), 10)))
	return logTokenPrefix + payload + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

func (s *Server) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.cfg.LogKey)
	m.Write([]byte("hm log token v1\x00" + payload))
	return m.Sum(nil)
}

// verifyLogToken returns the build a token is for; ok is false for a forged, malformed or
// expired one.
func (s *Server) verifyLogToken(tok string) (buildID string, ok bool) {
	rest, found := strings.CutPrefix(tok, logTokenPrefix)
	payload, sig, found2 := strings.Cut(rest, ".")
	if !found || !found2 {
		return "", false
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(payload)) {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return "", false
	}
	id, expS, found := strings.Cut(string(raw), ".")
	exp, err := strconv.ParseInt(expS, 10, 64)
	if !found || err != nil || !s.now().Before(time.Unix(exp, 0)) {
		return "", false
	}
	return id, true
}
