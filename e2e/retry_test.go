package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hmci/hm/internal/events"
)

// retryEvents returns the step_retry attempts and the step_end attempt and exit code of key.
func retryEvents(t *testing.T, out, key string) (retries []int, endAttempt, endCode int) {
	t.Helper()
	id := ""
	endAttempt, endCode = -1, -1
	for _, ev := range parseEvents(t, out) {
		if ev.StepQueued != nil && ev.StepQueued.Key == key {
			id = ev.StepQueued.StepID
		}
		if id == "" || ev.StepID() != id {
			continue
		}
		switch ev.Kind {
		case events.KindStepRetry:
			retries = append(retries, ev.StepRetry.Attempt)
		case events.KindStepEnd:
			endAttempt, endCode = ev.StepEnd.Attempt, ev.StepEnd.ExitCode
		}
	}
	return retries, endAttempt, endCode
}

// Each attempt is a fresh machine: what attempt 1 left in /workspace is gone in attempt 2.
// HM_ATTEMPT counts attempts, so the test needs no state shared between machines.
const flaky = `test ! -e left-by-a-failed-attempt || { echo "not a fresh machine"; exit 99; }; ` +
	`touch left-by-a-failed-attempt; echo "attempt $HM_ATTEMPT"; test "$HM_ATTEMPT" -ge 3 || exit 1`

func TestRetry(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			img := `"image":"ubuntu:24.04"`
			if bc.name == "host" {
				img = ""
			}
			sep := ""
			if img != "" {
				sep = ","
			}
			// Fails twice, passes on the third attempt: the build passes.
			doc := graph(0, []string{stepJSON("flaky", flaky, img+sep+`"retry":{"limit":2}`)}, "")
			r := e.run(append(bc.args, "run", "--format", "json", "--file", e.writeIR("ir.json", doc))...)
			if r.code != 0 {
				t.Fatalf("exit %d, want 0\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			retries, end, code := retryEvents(t, r.stdout, "flaky")
			if len(retries) != 2 || retries[0] != 1 || retries[1] != 2 || end != 3 || code != 0 {
				t.Errorf("retries %v, step_end attempt %d exit %d; want [1 2], 3, 0", retries, end, code)
			}
			if !strings.Contains(r.stdout, "attempt 3") {
				t.Errorf("no log of attempt 3:\n%s", r.stdout)
			}
			// on: [3] retries exit 3, not exit 4.
			doc = graph(0, []string{
				stepJSON("three", `test "$HM_ATTEMPT" -ge 2 || exit 3`, img+sep+`"retry":{"limit":1,"on":[3]}`),
				stepJSON("four", `exit 4`, img+sep+`"retry":{"limit":1,"on":[3]}`),
			}, "")
			r = e.run(append(bc.args, "run", "-k", "--format", "json", "--file", e.writeIR("ir.json", doc))...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if retries, end, code := retryEvents(t, r.stdout, "three"); len(retries) != 1 || end != 2 || code != 0 {
				t.Errorf("three: retries %v, end attempt %d exit %d; want [1], 2, 0", retries, end, code)
			}
			if retries, end, code := retryEvents(t, r.stdout, "four"); len(retries) != 0 || end != 1 || code != 4 {
				t.Errorf("four: retries %v, end attempt %d exit %d; want [], 1, 4", retries, end, code)
			}
		})
	}
}

func TestRetryInvalid(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{stepJSON("a", "true", `"retry":{"limit":11}`)}, "")
	r := e.run("run", "--backend", "host", "--file", e.writeIR("ir.json", doc))
	if r.code != 7 || !strings.Contains(r.stderr, "ir_retry") {
		t.Errorf("exit %d, want 7 with ir_retry\n%s", r.code, r.stderr)
	}
}

// source: {git: true} puts .git into /workspace; without it there is none. The host pseudo-
// image has git where the host has; docker's images here have none.
func TestSourceGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git not installed")
	}
	backends := []backendCase{{name: "host", args: []string{"--backend", "host"}}}
	if os.Geteuid() == 0 {
		backends = append(backends, backendCase{name: "sandbox", args: []string{"--backend", "sandbox"}})
	}
	for _, bc := range backends {
		t.Run(bc.name, func(t *testing.T) {
			e := newEnv(t)
			if err := os.WriteFile(filepath.Join(e.srcDir, "a.txt"), []byte("a\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{{"init", "-q"}, {"add", "a.txt"},
				{"-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "one"}, {"tag", "v1.2.3"}} {
				c := exec.Command("git", args...)
				c.Dir = e.srcDir
				if out, err := c.CombinedOutput(); err != nil {
					t.Fatalf("git %v: %v\n%s", args, err, out)
				}
			}
			cmd := `git -c safe.directory='*' describe --always --tags`
			doc := `{"version":"0","default_image":"host","source":{"git":true},"graph":{"nodes":[{"step":` +
				stepJSON("describe", cmd, "") + `,"env":{}}],"edges":[]}}`
			r := e.run(append(bc.args, "run", "--network", "none", "--logs", "--file", e.writeIR("ir.json", doc))...)
			if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "v1.2.3") {
				t.Fatalf("exit %d, want 0 and v1.2.3\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			doc = graph(0, []string{stepJSON("nogit", "test ! -e .git", `"image":"host"`)}, "")
			if r := e.run(append(bc.args, "run", "--network", "none", "--file", e.writeIR("ir.json", doc))...); r.code != 0 {
				t.Errorf("without source.git: exit %d, want 0 (no .git)\n%s\n%s", r.code, r.stdout, r.stderr)
			}
		})
	}
}
