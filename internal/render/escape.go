package render

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Escape returns s safe to print on one line of a terminal: C0 and C1 control characters
// (ESC, CR, BEL, newline, ...), DEL, invalid UTF-8 and the bidirectional overrides and
// isolates (U+202A–U+202E, U+2066–U+2069, which reorder what follows them on screen) are
// written as Go escapes (\x1b, \r, \u202e), and a backslash as \\ so that the escaped form
// is unambiguous. A step key or label is the pipeline author's text: it must not move the
// cursor, clear the screen or disguise another step's name.
func Escape(s string) string { return escape(s, false) }

// EscapeText is Escape for a message of several lines: newlines, tabs and backslashes are
// kept.
func EscapeText(s string) string { return escape(s, true) }

func escape(s string, keepLines bool) string {
	if isSafe(s, keepLines) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\' && !keepLines:
			b.WriteString(`\\`)
		case keepLines && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\x%02x`, r)
		case bidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func bidi(r rune) bool {
	return r >= 0x202a && r <= 0x202e || r >= 0x2066 && r <= 0x2069 || r == 0x200e || r == 0x200f || r == 0x061c
}

// isSafe reports whether s prints as itself (the common case, without allocating).
func isSafe(s string, keepLines bool) bool {
	for _, r := range s {
		switch {
		case keepLines && (r == '\n' || r == '\t'):
		case r == '\\' && !keepLines:
			return false
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == utf8.RuneError || bidi(r):
			return false
		}
	}
	return true
}
