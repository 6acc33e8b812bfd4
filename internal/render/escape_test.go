package render

import "testing"

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want, text string }{
		{"build", "build", "build"},
		{"\x1b[2J", `\x1b[2J`, `\x1b[2J`},
		{"ok\rEVIL", `ok\rEVIL`, `ok\rEVIL`},
		{"bell\a", `bell\x07`, `bell\x07`},
		{"a\nb\tc", `a\nb\tc`, "a\nb\tc"},
		{"test\u202egnp.exe", `test\u202egnp.exe`, `test\u202egnp.exe`},
		{"iso\u2066x\u2069", `iso\u2066x\u2069`, `iso\u2066x\u2069`},
		{"c1\u009bm", `c1\x9bm`, `c1\x9bm`},
		{"del\x7f", `del\x7f`, `del\x7f`},
		{"bad\xffutf8", `bad\xffutf8`, `bad\xffutf8`},
		{`back\slash`, `back\\slash`, `back\slash`},
		{"ünïcödé ✓ 测试", "ünïcödé ✓ 测试", "ünïcödé ✓ 测试"},
		{"nul\x00", `nul\x00`, `nul\x00`},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := EscapeText(tc.in); got != tc.text {
			t.Errorf("EscapeText(%q) = %q, want %q", tc.in, got, tc.text)
		}
	}
}
