package ir

import (
	"errors"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/errs"
)

func graphIR(nodes ...string) string {
	return `{"version":"0","graph":{"nodes":[` + strings.Join(nodes, ",") + `],"edges":[]}}`
}

func TestParseRefusesHostileInput(t *testing.T) {
	long := strings.Repeat("x", MaxArgStrlen)
	var manyEnv []string
	for i := 0; i <= MaxEnv; i++ {
		manyEnv = append(manyEnv, `"V`+itoa(i)+`":""`)
	}
	// 40 variables of 64 KiB: each is under MAX_ARG_STRLEN, together over ARG_MAX.
	var bigEnv []string
	for i := 0; i < 40; i++ {
		bigEnv = append(bigEnv, `"V`+itoa(i)+`":"`+strings.Repeat("y", 64<<10)+`"`)
	}
	var flat []string
	for i := 0; i < 600; i++ {
		flat = append(flat, `{"type":"command","key":"a`+itoa(i)+`","cmd":"x"}`)
	}
	flat = append(flat, `{"type":"wait"}`)
	for i := 0; i < 600; i++ {
		flat = append(flat, `{"type":"command","key":"b`+itoa(i)+`","cmd":"x"}`)
	}
	for _, tc := range []struct {
		name, code, in string
	}{
		{"too large", "ir_too_large", `{"version":"0","x":"` + strings.Repeat("a", MaxBytes) + `"}`},
		{"too deep", "ir_too_deep", `{"version":"0","x":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`},
		{"deep in runner_args", "ir_too_deep", graphIR(`{"step":{"key":"a","cmd":"x","runner_args":` + strings.Repeat(`{"a":`, 70) + `1` + strings.Repeat("}", 70) + `}}`)},
		{"NUL in key", "ir_nul", graphIR(`{"step":{"key":"a\u0000b","cmd":"x"}}`)},
		{"NUL in cmd", "ir_nul", graphIR(`{"step":{"key":"a","cmd":"echo a\u0000rm -rf /"}}`)},
		{"NUL in env value", "ir_nul", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{"A":"1\u00002"}}`)},
		{"NUL in env name", "ir_env", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{"A\u0000":"1"}}`)},
		{"= in env name", "ir_env", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{"A=B":"1"}}`)},
		{"empty env name", "ir_env", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{"":"1"}}`)},
		{"NUL in flat env", "ir_nul", `{"version":"0","env":{"A":"\u0000"},"steps":[{"type":"command","key":"a","cmd":"x"}]}`},
		{"cmd over MAX_ARG_STRLEN", "ir_arg_max", graphIR(`{"step":{"key":"a","cmd":"` + long + `"}}`)},
		{"env over MAX_ARG_STRLEN", "ir_arg_max", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{"A":"` + long + `"}}`)},
		{"env over ARG_MAX", "ir_arg_max", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{` + strings.Join(bigEnv, ",") + `}}`)},
		{"too many env entries", "ir_too_many_env", graphIR(`{"step":{"key":"a","cmd":"x"},"env":{` + strings.Join(manyEnv, ",") + `}}`)},
		{"wait barrier cross product", "ir_too_many_edges", `{"version":"0","steps":[` + strings.Join(flat, ",") + `]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, errs.ErrInvalid) || errs.ExitCode(err) != errs.ExitInvalid {
				t.Fatalf("%v: not a pipeline-invalid error (exit %d)", err, errs.ExitCode(err))
			}
			var code interface{ Code() string }
			var e *errs.Error
			got := ""
			switch {
			case errors.As(err, &e):
				got = e.Code
			case errors.As(err, &code):
				got = code.Code()
			}
			if got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
		})
	}
}

func TestParseAcceptsNearTheLimits(t *testing.T) {
	cmd := strings.Repeat("x", MaxArgStrlen-1)
	in := `{"version":"0","x":` + strings.Repeat("[", 60) + strings.Repeat("]", 60) + `,"graph":{"nodes":[{"step":{"key":"a","cmd":"` + cmd + `","label":"[[[{{{"}}],"edges":[]}}`
	if _, err := Parse([]byte(in)); err != nil {
		t.Fatal(err)
	}
}
