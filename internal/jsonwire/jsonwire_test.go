package jsonwire

import (
	"encoding/json"
	"testing"
)

// AppendString writes what json.Marshal writes; String reads what json.Unmarshal reads;
// CanonicalString reads only what AppendString writes of the decoded string (not so for
// invalid UTF-8: its U+FFFD reads back as a character that AppendString writes raw).
func TestStrings(t *testing.T) {
	for _, s := range []string{"", "plain", "tab\t", `q " \ `, "<&>", "héllo ✓", "bad \xff", "sep \u2028\u2029", "ctl \x01\x7f"} {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); string(got) != string(want) {
			t.Errorf("AppendString(%q) = %s, json.Marshal %s", s, got, want)
		}
		var dec string
		if err := json.Unmarshal(want, &dec); err != nil {
			t.Fatal(err)
		}
		if got, rest, ok := String(append(want, ",x"...), ","); !ok || got != dec || string(rest) != "x" {
			t.Errorf("String(%s) = %q, %q, %v; want %q, \"x\", true", want, got, rest, ok, dec)
		}
		canonical := string(AppendString(nil, dec)) == string(want)
		got, rest, ok := CanonicalString(append(want, ",x"...), ",")
		if ok != canonical || ok && (got != dec || string(rest) != "x") {
			t.Errorf("CanonicalString(%s) = %q, %q, %v; want ok %v", want, got, rest, ok, canonical)
		}
	}
	for _, tc := range []struct {
		in             string
		str, canonical bool
	}{
		{`"\u0041",`, true, false}, // json.Marshal writes A
		{`"\/",`, true, false},
		{`"\xff",`, false, false}, // invalid UTF-8 unescaped: encoding/json would replace it
		{`"é",`, true, true},
		{"\"a\x01\",", false, false},
		{`"a"`, false, false}, // no separator
		{`"a`, false, false},
		{`a",`, false, false},
	} {
		in := []byte(tc.in)
		if tc.in == `"\xff",` {
			in = []byte{'"', 0xff, '"', ','}
		}
		if _, _, ok := String(in, ","); ok != tc.str {
			t.Errorf("String(%q) ok = %v, want %v", in, ok, tc.str)
		}
		if _, _, ok := CanonicalString(in, ","); ok != tc.canonical {
			t.Errorf("CanonicalString(%q) ok = %v, want %v", in, ok, tc.canonical)
		}
	}
}
