package secret

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
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
	const sj = "p\"w\\d\n\t<&>é😀\u2028\x01" // every kind of character JSON escapes
	mj := NewMasker(sj)
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
		{"query escaped, lowercase hex", m, "?t=s3cr3t-Value%2f%2b%3f%26%3dx", "?t=***"},
		{"path escaped, lowercase hex", m, "/p/s3cr3t-Value%2f+%3f&=x", "/p/***"},
		{"non-ASCII query escaped, lowercase hex", NewMasker("pässwörd"), "p=p%c3%a4ssw%c3%b6rd&", "p=***&"},
		{"json.Marshal", mj, `{"v":` + marshal(t, sj, true) + `}`, `{"v":"***"}`},
		{"json Encoder without HTML escaping", mj, `{"v":` + marshal(t, sj, false) + `}`, `{"v":"***"}`},
		// As JSON.stringify and serde_json write it: only what JSON requires escaped.
		{"minimal JSON", mj, `{"v":"p\"w\\d\n\t<&>é😀` + "\u2028" + `\u0001"}`, `{"v":"***"}`},
		// As Python's json.dumps writes it: ASCII only, surrogate pairs, lowercase hex.
		{"ASCII-only JSON", mj, `{"v":"p\"w\\d\n\t<&>\u00e9\ud83d\ude00\u2028\u0001"}`, `{"v":"***"}`},
		{"a line of a multi-line value in JSON", NewMasker("a=\"1\"\nline two"), `"a=\"1\""`, `"***"`},
		{"part of a JSON form is no secret", mj, `{"v":"p\"w\\"}`, `{"v":"p\"w\\"}`},
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

// marshal is v as a JSON string by encoding/json, with or without HTML escaping.
func marshal(t *testing.T, v string, html bool) string {
	t.Helper()
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(html)
	if err := e.Encode(v); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestJSONForms: every JSON form of a value is a JSON string's content that decodes to the
// value, and a value with nothing to escape adds no pattern of its own.
func TestJSONForms(t *testing.T) {
	for _, v := range []string{"plain", "p\"w\\d\n\t<&>é😀\u2028\x01\x7f", "\b\f\r", "日本語", "🔑"} {
		forms := []string{jsonGo(v, true), jsonGo(v, false), jsonMinimal(v), jsonASCII(v)}
		for _, f := range forms {
			var got string
			if err := json.Unmarshal([]byte(`"`+f+`"`), &got); err != nil || got != v {
				t.Errorf("%q: form %q decodes to %q, %v", v, f, got, err)
			}
		}
		if want := marshal(t, v, true); `"`+forms[0]+`"` != want {
			t.Errorf("%q: jsonGo %q, json.Marshal %q", v, forms[0], want)
		}
		for _, c := range jsonASCII(v) {
			if c >= 0x7f {
				t.Errorf("%q: ASCII form %q holds %q", v, jsonASCII(v), c)
			}
		}
	}
	b64 := map[string]bool{}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		b64[enc.EncodeToString([]byte("plain"))], b64[enc.EncodeToString([]byte("plain\n"))] = true, true
	}
	if n := len(NewMasker("plain", "plain").patterns); n != 1+len(b64) {
		t.Errorf("plain: %d patterns, want %d: the value and its base64 forms only", n, 1+len(b64))
	}
}

// TestWriterSplits: a secret cut anywhere across writes is masked, in each of its forms, and
// what cannot be part of a secret is written at once.
func TestWriterSplits(t *testing.T) {
	const s = "hunter2-TOKEN\"<é/"
	m := NewMasker(s)
	in := "before " + s + " after\n" + base64.StdEncoding.EncodeToString([]byte(s)) + "\n" +
		`{"t":"hunter2-TOKEN\"\u003cé/"}` + "\n" + `{"t":"hunter2-TOKEN\"<\u00e9/"}` + "\n" +
		"?t=hunter2-TOKEN%22%3c%c3%a9%2f&u=hunter2-TOKEN%22%3C%C3%A9%2F\n"
	want := "before *** after\n***\n" + `{"t":"***"}` + "\n" + `{"t":"***"}` + "\n" + "?t=***&u=***\n"
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
	// Characters that URL, base64 and JSON encode differently, and one that is not ASCII.
	alphabet := []string{"a", "b", "\n", "=", "+", "/", "%", "_", "-", `"`, `\`, "<", "&", "é", "\x01"}
	word := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	for iter := 0; iter < 3000; iter++ {
		var secrets []string
		for range 1 + r.IntN(3) {
			secrets = append(secrets, word(1+r.IntN(6)))
		}
		m := NewMasker(secrets...)
		seen := map[string]bool{}
		for _, p := range m.patterns {
			if seen[string(p)] {
				t.Fatalf("secrets %q: pattern %q twice", secrets, p)
			}
			seen[string(p)] = true
		}
		var in strings.Builder
		for range r.IntN(12) {
			switch r.IntN(3) {
			case 0:
				in.WriteString(secrets[r.IntN(len(secrets))])
			case 1: // an encoded form
				in.Write(m.patterns[r.IntN(len(m.patterns))])
			default:
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
	f.Add("p\"w<é", `{"v":"p\"w\u003cé","w":"p\"w<\u00e9"}`, uint8(2))
	f.Add("a/b c", "?q=a%2fb+c&r=a%2Fb%20c", uint8(4))
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
		// No form of a secret without "*" survives: masking only ever leaves "***" and
		// unmatched text, and every position of that was tried against every form.
		if !strings.Contains(secret, "*") && survives(m, out.String()) {
			t.Fatalf("secret %q (or a form of it) survives in %q", secret, out.String())
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
