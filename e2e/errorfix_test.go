package e2e

import (
	"strings"
	"testing"
)

// A step whose image cannot be found fails the build (exit 1, like any failure) and hm ends
// with the error's class and the fix this CLI knows: the sandbox backend only reports what it
// looked for and where (internal/cli writes the advice).
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
			if r.code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
			}
			for _, want := range []string{
				"\nerror[image_not_found]: image \"" + ref + "\" is not in the image store and could not be pulled: ",
				"\n  fix    import it with `hm image import FILE " + ref + "` (rootfs, docker save or OCI layout tarball), ",
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
		})
	}
}
