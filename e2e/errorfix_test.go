package e2e

import (
	"strings"
	"testing"
)

// An image that cannot be found is refused before the build starts (exit 4, infrastructure
// unavailable), once, with the error's class and the fix this CLI knows: the sandbox backend
// only reports what it looked for and where (internal/cli writes the advice).
func TestMissingImageFix(t *testing.T) {
	if !sandboxAvailable(t) {
		t.Skip()
	}
	const ref = "127.0.0.1:1/hm-e2e/missing:v1" // nothing listens on port 1: the pull fails at once
	for _, format := range []string{"human", "json"} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			doc := graph(0, []string{stepJSON("a", "true", `"image":"`+ref+`"`)}, "")
			r := e.run("run", "--file", e.writeIR("p.json", doc), "--backend", "sandbox", "--format", format)
			if r.code != 4 || r.stdout != "" {
				t.Fatalf("exit %d, want 4 and no events; stdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			for _, want := range []string{
				"error[image_not_found]: image \"" + ref + "\" is not in the image store and could not be pulled: ",
				"\n  fix    import it with `hm image import FILE " + ref + "` (rootfs, docker save or OCI layout tarball), ",
			} {
				if strings.Count(r.stderr, want) != 1 {
					t.Errorf("stderr has %q not once:\n%s", want, r.stderr)
				}
			}
		})
	}
}

// A step's runner selects its executor: a local build runs every step on one backend, so a
// step naming another is refused before anything runs; naming the build's backend (with
// runner_args, which no local backend takes) runs.
func TestRunnerSelection(t *testing.T) {
	e := newEnv(t)
	doc := graph(0, []string{stepJSON("a", "true", `"runner":"docker"`)}, "")
	r := e.run("run", "--file", e.writeIR("p.json", doc), "--backend", "host")
	want := "error[runner_mismatch]: step 'a' names runner \"docker\", but this build runs every step on the host backend\n" +
		"  fix    run it with --backend docker, or remove the step's runner\n"
	if r.code != 2 || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("exit %d, want 2 and stderr ending in\n%s\ngot:\n%s", r.code, want, r.stderr)
	}
	doc = graph(0, []string{stepJSON("a", "true", `"runner":"host","runner_args":{"x":1}`)}, "")
	if r := e.run("run", "--file", e.writeIR("p.json", doc), "--backend", "host"); r.code != 0 {
		t.Errorf("runner host on the host backend: exit %d\n%s", r.code, r.stderr)
	}
}

// A step that could not run (here: its artifacts exceed the 10,000-file bound) is reported
// once as it happens and its error once, with its fix, after the build: no line of the
// reason is repeated, in either format, and its end does not read "exit -1".
func TestStepCouldNotRunReportedOnce(t *testing.T) {
	const reason = "its artifacts exceed a step's bounds (10000 files, 4 GiB)"
	for _, format := range []string{"human", "json"} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			doc := graph(0, []string{stepJSON("many", "mkdir out && cd out && seq 1 10001 | xargs touch", `"artifacts":["out"]`)}, "")
			r := e.run("run", "--file", e.writeIR("p.json", doc), "--backend", "host", "--format", format)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1 (a failed step)\nstderr:\n%s", r.code, r.stderr)
			}
			// Once live (the step's log line, or the json mode's note), once in the error.
			if n := strings.Count(r.stderr, reason); n != 2 {
				t.Errorf("stderr names the reason %d times, want 2:\n%s", n, r.stderr)
			}
			for _, want := range []string{
				"hm: step 'many' could not run: " + reason,
				"\nerror[artifacts_too_large]: " + reason,
				"\n  fix    narrow the step's artifacts patterns",
			} {
				if strings.Count(r.stderr, want) != 1 {
					t.Errorf("stderr has %q not once:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "exit -1") {
				t.Errorf("stderr shows an exit code of -1:\n%s", r.stderr)
			}
		})
	}
}
