// Package secret holds a build's secrets and masks them: every byte of step output, every
// event and every error message passes a Masker before anything shows, stores or sends it.
//
// A secret is masked as it is written and as it is commonly printed encoded: base64 (the
// standard and URL alphabets, with and without padding, of the value alone and of the value
// followed by a newline, as `echo $S | base64` prints it, also wrapped at 76 columns as
// base64(1) does), URL-encoded (query and path escaping, with upper- or lowercase hex digits)
// and as the content of a JSON string (as encoding/json, JSON.stringify and Python's
// json.dumps write it). A value of several lines is also masked line by line. Forms
// that coincide (a value with nothing to escape) are one pattern. The masked form is Mask.
//
// Masking a stream (Writer) holds back at most the longest pattern less one byte: a write
// that ends with what could be the start of a secret keeps that tail until the next write
// decides it, or Flush. Nothing else is held.
package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// Mask replaces every secret.
const Mask = "***"

// wrapColumns is where base64(1) wraps its output.
const wrapColumns = 76

// minLinePart is the shortest line of a multi-line value masked on its own: shorter ones
// ("-----", "}") would mask ordinary output.
const minLinePart = 4

// Masker masks a fixed set of secret values. The zero value and nil mask nothing. It is
// safe for concurrent use.
type Masker struct {
	patterns [][]byte     // longest first
	byFirst  [256][]int32 // indexes into patterns, by their first byte
	// pairs has bit a<<8|b set when a pattern starts with bytes a, b; single[a] when a is a
	// pattern. Together they skip most positions of ordinary text at a glance.
	pairs  [1 << 16 / 64]uint64
	single [256]bool
	maxLen int
}

// NewMasker returns a masker for values (empty ones are ignored); nil when there is nothing to
// mask.
func NewMasker(values ...string) *Masker {
	seen := map[string]bool{}
	var pats []string
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			pats = append(pats, p)
		}
	}
	for _, v := range values {
		if v == "" {
			continue
		}
		forms := []string{v}
		if strings.Contains(v, "\n") {
			for l := range strings.SplitSeq(v, "\n") {
				if l = strings.TrimSuffix(l, "\r"); len(l) >= minLinePart {
					forms = append(forms, l)
				}
			}
		}
		for _, f := range forms {
			add(f)
			for _, e := range []string{url.QueryEscape(f), url.PathEscape(f)} {
				add(e)
				add(lowerHex(e))
			}
			add(jsonGo(f, true))
			add(jsonGo(f, false))
			add(jsonMinimal(f))
			add(jsonASCII(f))
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				for _, s := range []string{enc.EncodeToString([]byte(f)), enc.EncodeToString([]byte(f + "\n"))} {
					add(s)
					for len(s) > wrapColumns { // base64(1) output, one line at a time
						add(s[:wrapColumns])
						s = s[wrapColumns:]
					}
					if len(s) >= minLinePart {
						add(s)
					}
				}
			}
		}
	}
	if len(pats) == 0 {
		return nil
	}
	// Longest first, so that at one position the longest match wins and a secret that is
	// the prefix of another never leaves the other's tail behind.
	slices.SortStableFunc(pats, func(a, b string) int { return len(b) - len(a) })
	m := &Masker{}
	for i, p := range pats {
		m.patterns = append(m.patterns, []byte(p))
		m.byFirst[p[0]] = append(m.byFirst[p[0]], int32(i))
		m.maxLen = max(m.maxLen, len(p))
		if len(p) == 1 {
			m.single[p[0]] = true
		} else {
			pr := uint16(p[0])<<8 | uint16(p[1])
			m.pairs[pr/64] |= 1 << (pr % 64)
		}
	}
	return m
}

// MaxHold is the most bytes a Writer holds back: the longest pattern less one.
func (m *Masker) MaxHold() int {
	if m == nil {
		return 0
	}
	return m.maxLen - 1
}

// scan masks b into out, leftmost-longest. Unless final, it stops at the first position
// where what follows could still grow into a (longer) match, and returns how much of b it
// consumed; the rest must wait for more bytes.
func (m *Masker) scan(out, b []byte, final bool) ([]byte, int) {
	i, plain := 0, 0
	for i < len(b) {
		c := b[i]
		cands := m.byFirst[c]
		if len(cands) == 0 {
			i++
			continue
		}
		if i+1 < len(b) && !m.single[c] {
			if pr := uint16(c)<<8 | uint16(b[i+1]); m.pairs[pr/64]&(1<<(pr%64)) == 0 {
				i++
				continue
			}
		}
		rest := b[i:]
		matched, wait := 0, false
		for _, c := range cands { // longest first
			p := m.patterns[c]
			if len(rest) >= len(p) {
				if bytes.Equal(rest[:len(p)], p) {
					matched = len(p)
					break
				}
			} else if !final && bytes.HasPrefix(p, rest) {
				wait = true // a longer pattern may still match here
				break
			}
		}
		if wait {
			out = append(out, b[plain:i]...)
			return out, i
		}
		if matched == 0 {
			i++
			continue
		}
		out = append(out, b[plain:i]...)
		out = append(out, Mask...)
		i += matched
		plain = i
	}
	out = append(out, b[plain:]...)
	return out, len(b)
}

// String masks s.
func (m *Masker) String(s string) string {
	if m == nil || s == "" {
		return s
	}
	out, _ := m.scan(nil, []byte(s), true)
	return string(out)
}

// Writer returns a writer that masks what is written to it before passing it to w, whatever
// the write boundaries. Call Flush after the last write.
func (m *Masker) Writer(w io.Writer) *Writer {
	return &Writer{m: m, w: w}
}

// Writer is a masking stream; see Masker.Writer. Safe for concurrent use.
type Writer struct {
	m    *Masker
	w    io.Writer
	mu   sync.Mutex
	held []byte
	out  []byte
}

// Write masks p with what was held back and writes everything that is decided. It reports
// len(p) unless the underlying writer fails.
func (w *Writer) Write(p []byte) (int, error) {
	if w.m == nil {
		return w.w.Write(p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	buf := p
	if len(w.held) > 0 {
		w.held = append(w.held, p...)
		buf = w.held
	}
	var n int
	w.out, n = w.m.scan(w.out[:0], buf, false)
	w.held = append(w.held[:0:0], buf[n:]...)
	if len(w.out) > 0 {
		if _, err := w.w.Write(w.out); err != nil {
			return 0, err
		}
	}
	if cap(w.out) > 1<<20 {
		w.out = nil // do not pin a large buffer
	}
	return len(p), nil
}

// Flush masks and writes what is held back.
func (w *Writer) Flush() error {
	if w.m == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.held) == 0 {
		return nil
	}
	out, _ := w.m.scan(nil, w.held, true)
	w.held = nil
	_, err := w.w.Write(out)
	return err
}

// lowerHex is a percent-encoded string with lowercase hex digits ("%2f"), as some encoders
// write them. Every '%' of url's output starts an escape: a literal one is "%25".
func lowerHex(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = lower(b[i+1]), lower(b[i+2])
			i += 2
		}
	}
	return string(b)
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// jsonGo is s inside a JSON string as encoding/json writes it, quotes left out: with html
// as Marshal does ("<", ">", "&" as \u003c...), without as an Encoder told SetEscapeHTML(false);
// both escape U+2028 and U+2029 and write invalid UTF-8 as \ufffd.
func jsonGo(s string, html bool) string {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(html)
	_ = e.Encode(s)                         // a string always encodes
	return string(b.Bytes()[1 : b.Len()-2]) // the quotes and Encode's newline
}

// jsonMinimal is s inside a JSON string with only what JSON requires escaped, quotes left
// out, as JSON.stringify and serde_json write it.
func jsonMinimal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		writeJSONByte(&b, s[i])
	}
	return b.String()
}

// jsonASCII is s inside a JSON string of ASCII only, quotes left out, as Python's json.dumps
// (ensure_ascii, its default) and jq -a write it: every other character as \uXXXX in
// lowercase hex, a pair of surrogates beyond the BMP; invalid UTF-8 as \ufffd.
func jsonASCII(s string) string {
	var b strings.Builder
	for _, r := range s { // an invalid byte is utf8.RuneError, U+FFFD
		switch {
		case r < utf8.RuneSelf && r != 0x7f:
			writeJSONByte(&b, byte(r))
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.String()
}

// writeJSONByte writes c escaped as JSON requires: '"', '\\' and control characters, with
// the short forms every encoder uses.
func writeJSONByte(b *strings.Builder, c byte) {
	switch c {
	case '"', '\\':
		b.WriteByte('\\')
		b.WriteByte(c)
	case '\b':
		b.WriteString(`\b`)
	case '\f':
		b.WriteString(`\f`)
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	default:
		if c < 0x20 {
			fmt.Fprintf(b, `\u%04x`, c)
		} else {
			b.WriteByte(c)
		}
	}
}
