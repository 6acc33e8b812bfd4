// Package jsonwire holds the string pieces of the hand-written JSON fast paths
// (agentproto's Logs body, events' step_log): each reads or writes exactly the form
// encoding/json's Marshal writes, and answers ok false on anything else so that the caller
// falls back to encoding/json.
package jsonwire

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// AppendString appends s quoted as encoding/json writes a string (HTML characters escaped,
// invalid UTF-8 as U+FFFD, U+2028 and U+2029 escaped): the same algorithm.
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// String reads the JSON string at the start of b, followed by sep, as encoding/json would
// decode it. A string without escapes is its bytes when they are valid UTF-8 (encoding/json
// would replace invalid ones); one with escapes is decoded by encoding/json alone.
func String(b []byte, sep string) (_ string, rest []byte, ok bool) {
	return str(b, sep, false)
}

// CanonicalString is String, ok only when the string is written as AppendString writes it:
// a caller that keeps b as the value's wire form stays byte-equal to encoding/json.
func CanonicalString(b []byte, sep string) (_ string, rest []byte, ok bool) {
	return str(b, sep, true)
}

// str is String and CanonicalString in one function (they differ only in what they accept),
// so that the fast paths make one call per string, as they did before they shared it.
func str(b []byte, sep string, canonical bool) (_ string, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	escaped := false
	i := 1
	for ; i < len(b); i++ {
		if c := b[i]; c == '"' {
			break
		} else if c == '\\' {
			escaped = true
			i++
		} else if c < 0x20 {
			// A raw control character: encoding/json rejects it.
			return "", nil, false
		}
	}
	if i >= len(b) {
		return "", nil, false
	}
	quoted, rest := b[:i+1], b[i+1:]
	if rest, ok = bytes.CutPrefix(rest, []byte(sep)); !ok {
		return "", nil, false
	}
	if !escaped {
		raw := quoted[1 : len(quoted)-1]
		if canonical && !plain(raw) || !canonical && !utf8.Valid(raw) {
			return "", nil, false
		}
		return string(raw), rest, true
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil || canonical && !bytes.Equal(AppendString(nil, s), quoted) {
		return "", nil, false
	}
	return s, rest, true
}

// plain: s, unescaped, is what AppendString writes between its quotes: no character it
// escapes and valid UTF-8.
func plain(s []byte) bool {
	ascii := true
	for _, c := range s {
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
		if c >= utf8.RuneSelf {
			ascii = false
		}
	}
	return ascii || utf8.Valid(s) && !bytes.Contains(s, []byte("\u2028")) && !bytes.Contains(s, []byte("\u2029"))
}
