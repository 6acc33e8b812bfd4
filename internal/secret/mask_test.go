package secret

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
)

func TestString(t *testing.T) {
	const s = "s3cr3t-Value/+?&=x"
	m := NewMasker(s)
	b64 := func(enc *base64.Encoding, v string) string { return enc.EncodeToString([]byte(v)) }
	long := strings.Repeat("0123456789", 8) // its base64 is wrapped by base64(1)
	wrapped := b64(base64.StdEncoding, long+"\n")
	tests := []struct {
		name string
		m    *Masker
		in   string
		want string
	}{
		{"plain", m, "token: " + s + "!", "token: ***!"},
		{"twice", m, s + s + " " + s, "****** ***"},
		{"base64 std", m, "x " + b64(base64.StdEncoding, s) + " y", "x *** y"},
		{"base64 url", m, b64(base64.URLEncoding, s), "***"},
		{"base64 raw std", m, b64(base64.RawStdEncoding, s) + ".", "***."},
		{"base64 raw url", m, b64(base64.RawURLEncoding, s), "***"},
		{"base64 of echo", m, b64(base64.StdEncoding, s+"\n"), "***"},
		{"query escaped", m, "?t=" + url.QueryEscape(s), "?t=***"},
		{"path escaped", m, "/p/" + url.PathEscape(s), "/p/***"},
		{"no secret", m, "nothing here s3cr3t", "nothing here s3cr3t"},
		{"nil masker", nil, s, s},
		{"multi-line value, line by line", NewMasker("line one\nline two\n}"), "a line two b }", "a *** b }"},
		{"base64 wrapped at 76", NewMasker(long), wrapped[:76] + "\n" + wrapped[76:], "***\n***"},
		{"longest wins", NewMasker("abc", "abcdef"), "xabcdefx abcx", "x***x ***x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.m.String(tt.in)); diff != "" {
				t.Errorf("String (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWriterSplits: a secret cut anywhere across writes is masked, and what cannot be part
// of a secret is written at once.
func TestWriterSplits(t *testing.T) {
	const s = "hunter2-TOKEN"
	m := NewMasker(s)
	in := "before " + s + " after\n" + base64.StdEncoding.EncodeToString([]byte(s)) + "\n"
	want := "before *** after\n***\n"
	for cut := 0; cut <= len(in); cut++ {
		for cut2 := cut; cut2 <= len(in); cut2 += 3 {
			var out bytes.Buffer
			w := m.Writer(&out)
			for _, p := range []string{in[:cut], in[cut:cut2], in[cut2:]} {
				if _, err := w.Write([]byte(p)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if out.String() != want {
				t.Fatalf("cut at %d, %d: got %q, want %q", cut, cut2, out.String(), want)
			}
		}
	}

	var out bytes.Buffer
	w := m.Writer(&out)
	_, _ = w.Write([]byte("done\n"))
	if out.String() != "done\n" {
		t.Errorf("a line with no start of a secret was held back: got %q", out.String())
	}
	_, _ = w.Write([]byte("x hunt"))
	if got := out.String(); got != "done\nx " {
		t.Errorf("held back more than the possible start of a secret: got %q", got)
	}
	if len(w.held) > m.MaxHold() {
		t.Errorf("holds %d bytes, more than MaxHold %d", len(w.held), m.MaxHold())
	}
	_, _ = w.Write([]byte("ing\n"))
	if got := out.String(); got != "done\nx hunting\n" {
		t.Errorf("got %q", got)
	}
}

// survives reports a secret (or an encoded form) found in out. Secrets made only of mask
// characters are excluded by the callers: "***" itself would be one.
func survives(m *Masker, out string) bool {
	for _, p := range m.patterns {
		if strings.Contains(out, string(p)) {
			return true
		}
	}
	return false
}

// TestNoSecretSurvives is the property: whatever the stream and however it is cut into writes,
// no secret pattern appears in the masked output, and output with no secret is unchanged.
func TestNoSecretSurvives(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "ab\n=+/%_-"
	word := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for iter := 0; iter < 3000; iter++ {
		var secrets []string
		for range 1 + r.IntN(3) {
			secrets = append(secrets, word(1+r.IntN(6)))
		}
		m := NewMasker(secrets...)
		var in strings.Builder
		for range r.IntN(12) {
			if r.IntN(2) == 0 {
				in.WriteString(secrets[r.IntN(len(secrets))])
			} else {
				in.WriteString(word(r.IntN(8)))
			}
		}
		s := in.String()
		var out bytes.Buffer
		w := m.Writer(&out)
		for rest := s; rest != ""; {
			n := min(len(rest), r.IntN(5))
			_, _ = w.Write([]byte(rest[:n]))
			rest = rest[n:]
		}
		_ = w.Flush()
		if survives(m, out.String()) {
			t.Fatalf("secrets %q in %q: output %q still holds one", secrets, s, out.String())
		}
		if got := m.String(s); got != out.String() {
			t.Fatalf("secrets %q in %q: stream gave %q, String %q", secrets, s, out.String(), got)
		}
	}
}

func FuzzMask(f *testing.F) {
	f.Add("hunter2", "a hunter2 b", uint8(3))
	f.Add("aba", "ababab", uint8(1))
	f.Add("x\ny", "x\ny\n", uint8(2))
	f.Fuzz(func(t *testing.T, secret, in string, cut uint8) {
		if strings.Trim(secret, "*") == "" {
			return // a secret of mask characters only
		}
		m := NewMasker(secret)
		var out bytes.Buffer
		w := m.Writer(&out)
		step := int(cut)%7 + 1
		for i := 0; i < len(in); i += step {
			_, _ = w.Write([]byte(in[i:min(len(in), i+step)]))
		}
		_ = w.Flush()
		if strings.Contains(out.String(), secret) && !strings.Contains(secret, "*") {
			t.Fatalf("secret %q survives in %q", secret, out.String())
		}
		if !strings.Contains(in, secret) && out.String() == in {
			return
		}
		if got := m.String(in); got != out.String() {
			t.Fatalf("stream %q != String %q", out.String(), got)
		}
	})
}

// BenchmarkWriter: a step's output path with three secrets (masker, then the line splitter
// every output byte passes anyway) against the line splitter alone, the baseline.
func BenchmarkWriter(b *testing.B) {
	var sb strings.Builder
	for i := 0; sb.Len() < 1<<20; i++ {
		sb.WriteString("ok  \tgithub.com/example/pkg/sub" + strings.Repeat("x", i%17) + "\t0.012s coverage: 81.2% of statements\n")
	}
	text := []byte(sb.String())
	m := NewMasker("ghp_0123456789abcdefghijklmnopqrstuvwxyz", "s3cr3t-value", "npm_Token/With+Chars=")
	for _, bc := range []struct {
		name string
		w    func() io.Writer
	}{
		{"lines only", func() io.Writer { return events.NewLineWriter(func(string) {}) }},
		{"masked lines", func() io.Writer { return m.Writer(events.NewLineWriter(func(string) {})) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := bc.w()
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				for off := 0; off < len(text); off += 4096 {
					_, _ = w.Write(text[off:min(off+4096, len(text))])
				}
			}
		})
	}
}

// A masked event loses the wire form it came with (events.Event.Wire): a writer would
// otherwise write the secret; an event with nothing to mask keeps it.
func TestEventDropsUnmaskedWire(t *testing.T) {
	m := NewMasker("s3cr3t-value")
	in := []byte(`{"kind":"step_log","step_id":"j","stream":"stdout","line":"token s3cr3t-value","ts":"2026-12-01T10:00:00Z","attempt":1}`)
	e, err := events.Decode(in)
	if err != nil || e.Wire == nil {
		t.Fatalf("Decode = %+v, %v: want a step_log with its wire form", e, err)
	}
	b, err := events.Encode(m.Event(e))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cr3t-value") {
		t.Errorf("masked event encodes as %s", b)
	}
	clean, _ := events.Decode([]byte(`{"kind":"step_log","step_id":"j","stream":"stdout","line":"nothing here","ts":"2026-12-01T10:00:00Z","attempt":1}`))
	if m.Event(clean).Wire == nil {
		t.Error("an event with nothing to mask lost its wire form")
	}
}
