package secret

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/ir"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	dotenv := "# comment\nexport FROM_FILE=dot-value\nQUOTED=\"a\\nb\"\nSINGLE='x # y'\nBARE=v # note\nENVWINS=dot\n"
	if err := os.WriteFile(filepath.Join(dir, DotEnv), []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tok.txt"), []byte("file-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ENVWINS": "env", "CI_TOKEN": "ci-value", "FLAGGED": "env"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name    string
		req     Request
		want    map[string]string
		dotenv  bool
		errCode string
	}{
		{name: "flag value", req: Request{Flags: []string{"A=x=y"}}, want: map[string]string{"A": "x=y"}},
		{name: "env before .env", req: Request{Flags: []string{"ENVWINS"}}, want: map[string]string{"ENVWINS": "env"}},
		{name: ".env forms", req: Request{Flags: []string{"FROM_FILE", "QUOTED", "SINGLE", "BARE"}},
			want: map[string]string{"FROM_FILE": "dot-value", "QUOTED": "a\nb", "SINGLE": "x # y", "BARE": "v"}, dotenv: true},
		{name: "config sources", req: Request{Config: map[string]string{"T": "env:CI_TOKEN", "F": "file:tok.txt", "FROM_FILE": ""}},
			want: map[string]string{"T": "ci-value", "F": "file-value", "FROM_FILE": "dot-value"}, dotenv: true},
		{name: "a flag wins over config", req: Request{Config: map[string]string{"FLAGGED": "env:CI_TOKEN"}, Flags: []string{"FLAGGED=flag"}},
			want: map[string]string{"FLAGGED": "flag"}},
		{name: "found nowhere", req: Request{Flags: []string{"NOPE"}}, errCode: "secret"},
		{name: "empty", req: Request{Flags: []string{"E="}}, errCode: "secret"},
		{name: "bad name", req: Request{Flags: []string{"A-B=1"}}, errCode: "secret"},
		{name: "a value in the config", req: Request{Config: map[string]string{"T": "hunter2"}}, errCode: "secret"},
		{name: "unset env source", req: Request{Config: map[string]string{"T": "env:UNSET"}}, errCode: "secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Dir, tt.req.Getenv = dir, getenv
			got, err := Resolve(tt.req)
			if tt.errCode != "" {
				var e *errs.Error
				if !errors.As(err, &e) || e.Code != tt.errCode || errs.ExitCode(err) != errs.ExitUsage {
					t.Fatalf("err = %v, want code %s, exit 2", err, tt.errCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Values); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
			if got.FromDotEnv != tt.dotenv {
				t.Errorf("FromDotEnv = %v, want %v", got.FromDotEnv, tt.dotenv)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	p, err := ir.Parse([]byte(`{"version":"0","graph":{"nodes":[{"step":{"key":"a","cmd":"true","secrets":["A","B"]}}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(p, map[string]string{"A": "1", "B": "2"}); err != nil {
		t.Errorf("all given: %v", err)
	}
	err = Check(p, map[string]string{"A": "1"})
	var e *errs.Error
	if !errors.As(err, &e) || e.Code != "secret_missing" || errs.ExitCode(err) != errs.ExitUsage {
		t.Errorf("B missing: err = %v, want secret_missing, exit 2", err)
	}
}
