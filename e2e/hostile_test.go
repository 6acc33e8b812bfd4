package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hostile pipeline files are refused with exit 7 in bounded memory: measured as the peak RSS
// of the hm process (getrusage of the child), which must stay under 100 MB.
func TestHostileInputRefusedInBoundedMemory(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		p := "*l" + string(rune('0'+i-1))
		laughs.WriteString("x-l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " [" + strings.Repeat(p+", ", 9) + p + "]\n")
	}
	laughs.WriteString("steps:\n  - key: a\n    run: echo\n    x-all: *l9\n")
	big := "steps:\n  - key: a\n    run: |\n" + strings.Repeat("      echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 50<<20/80)
	for _, tc := range []struct{ name, file, code, content string }{
		{"deep nesting", "p.yaml", "yaml_too_deep", "steps: " + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + "\n"},
		{"50 MB", "p.yaml", "yaml_too_large", big},
		{"billion laughs", "p.yaml", "yaml_alias_expansion", laughs.String()},
		{"50 MB of IR", "p.json", "ir_too_large", `{"version":"0","x":"` + strings.Repeat("a", 50<<20) + `"}`},
		{"deep IR", "p.json", "ir_too_deep", `{"version":"0","x":` + strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000) + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			dir := filepath.Join(e.srcDir, ".hm")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := e.cmd(ctx, "run", "--backend", "host")
			// Through the helper: a child's peak RSS counts its parent's at exec (Go starts it
			// with vfork), so hm is started by a small process, the test binary's helper mode.
			c.Path, c.Args = os.Args[0], append([]string{os.Args[0]}, c.Args[1:]...)
			c.Env = append(c.Env, "HM_E2E_MAXRSS_OF="+hmBin)
			var out strings.Builder
			c.Stdout, c.Stderr = &out, &out
			err := c.Run()
			if c.ProcessState == nil {
				t.Fatal(err)
			}
			text, rss, _ := strings.Cut(out.String(), maxRSSMark)
			rssKB, _ := strconv.Atoi(strings.TrimSpace(rss))
			out.Reset()
			out.WriteString(text)
			rssMB := rssKB / 1024
			t.Logf("%s: exit %d, peak RSS %d MB", tc.name, c.ProcessState.ExitCode(), rssMB)
			if code := c.ProcessState.ExitCode(); code != 7 {
				t.Fatalf("exit %d, want 7:\n%s", code, out.String())
			}
			if rssKB == 0 {
				t.Fatalf("no peak RSS measured:\n%s", out.String())
			}
			if !strings.Contains(out.String(), "error["+tc.code+"]: ") || !strings.Contains(out.String(), tc.file) ||
				!strings.Contains(out.String(), "  fix    ") {
				t.Fatalf("want error[%s] naming %s with a fix:\n%s", tc.code, tc.file, out.String())
			}
			if rssMB >= 100 {
				t.Fatalf("peak RSS %d MB, want < 100 MB", rssMB)
			}
		})
	}
}

const maxRSSMark = "\nhm-e2e-maxrss-kb="

// maxRSSHelper is the test binary's helper mode (HM_E2E_MAXRSS_OF=BINARY): it runs BINARY with
// its own arguments and appends the child's peak RSS, in kilobytes, to stderr.
func maxRSSHelper() {
	bin := os.Getenv("HM_E2E_MAXRSS_OF")
	if bin == "" {
		return
	}
	c := exec.Command(bin, os.Args[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	_ = c.Run()
	if c.ProcessState == nil {
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "%s%d\n", maxRSSMark, c.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	os.Exit(c.ProcessState.ExitCode())
}
