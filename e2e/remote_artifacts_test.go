package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestRemoteArtifact: through the binaries, a remote build's artifacts arrive in the local
// layout (.hm/artifacts/BUILD/STEP/ and manifest.json) with the machine's bytes, symlinks
// refused as locally; a second, cached run republishes and downloads the same files.
func TestRemoteArtifact(t *testing.T) { remoteStores(t, testRemoteArtifact) }

func testRemoteArtifact(t *testing.T, st remoteStore) {
	c := remoteStart(t, st)
	e := newEnv(t)
	writeTree(t, e.srcDir, map[string]string{".hm/ci.json": artifactsPipeline(`"image":"ubuntu:24.04"`)})
	run := func() artifactRun {
		t.Helper()
		r := c.run(e, "-k")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1 (fails fails):\n%s\n%s", r.code, r.stderr, r.stdout)
		}
		return readArtifactRun(t, r.stdout, r.stderr)
	}
	first := run()
	second := run()
	if first.hit || !second.hit {
		t.Fatalf("cache hits: first %v, second %v; want false, true", first.hit, second.hit)
	}
	// checkArtifacts also wants each symlink's refusal in the step's log, on the hit too.
	checkArtifacts(t, e.srcDir, first)
	checkArtifacts(t, e.srcDir, second)
	if a, b := first.artifacts["dist/app.bin"].SHA256, second.artifacts["dist/app.bin"].SHA256; a == "" || a != b {
		t.Errorf("the cache hit's dist/app.bin has sha256 %s, the run's %s", b, a)
	}
	l := e.run("logs", second.build)
	if !strings.Contains(l.stdout, "[build] ↓ artifact dist/app.bin (97.7 KiB, sha256 "+second.artifacts["dist/app.bin"].SHA256[:12]+")") {
		t.Errorf("hm logs does not list the artifact:\n%s", l.stdout)
	}
}

// A remote step whose artifacts exceed the bounds fails as locally: once (not retried: the
// same files would fail again), with the local build's words in its chain_failed.
func TestRemoteArtifactsTooLarge(t *testing.T) { remoteStores(t, testRemoteArtifactsTooLarge) }

func testRemoteArtifactsTooLarge(t *testing.T, st remoteStore) {
	c := faultNewCluster(t, st)
	c.agent("agent", c.url())
	step, _ := json.Marshal(map[string]any{"type": "command", "key": "many",
		"cmd": "mkdir out && cd out && seq 1 10001 | xargs touch", "artifacts": []string{"out"}})
	r := c.run(`{"version":"0","default_image":"host","steps":[` + string(step) + `]}`)
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, r.dump())
	}
	starts, retries, failed := 0, 0, ""
	for _, ev := range r.all {
		switch {
		case ev.StepStart != nil:
			starts++
		case ev.StepRetry != nil:
			retries++
		case ev.ChainFailed != nil:
			failed = ev.ChainFailed.Message
		}
	}
	if starts != 1 || retries != 0 {
		t.Errorf("%d step_start and %d step_retry, want the one attempt\n%s", starts, retries, r.dump())
	}
	const want = "step 'many' could not run: its artifacts exceed a step's bounds (10000 files, 4 GiB): "
	if !strings.HasPrefix(failed, want) {
		t.Errorf("chain_failed %q, want it to begin %q", failed, want)
	}
	// After the build, its error and what to do, as a local build prints them.
	for _, w := range []string{
		"\nerror[artifacts_too_large]: " + want,
		"\n  fix    narrow the step's artifacts patterns",
	} {
		if strings.Count(r.stderr.String(), w) != 1 {
			t.Errorf("stderr has %q not once:\n%s", w, r.stderr.String())
		}
	}
}
