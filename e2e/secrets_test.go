package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// secretValue is what the tests pass as a secret; plainEnv an ordinary -e value, which must
// stay out of snapshots as well.
const (
	secretValue = "hm-e2e-s3cr3t/Tok+en=42"
	plainEnv    = "plain-e-value-7f3a"
)

// secretForms are the ways the step prints the secret; none may show anywhere.
var secretForms = []string{
	secretValue,
	base64.StdEncoding.EncodeToString([]byte(secretValue)),
	base64.StdEncoding.EncodeToString([]byte(secretValue + "\n")),
}

// secretPipeline: "leak" prints the secret plainly, split across two writes a moment apart,
// base64-encoded and in an error message on stderr (its cache key hashes it: env_keys); its
// cached child must not see it;
// "fails" prints it in the error that fails it (the failure's tail in the terminal).
func secretPipeline(img string) string {
	sep := ""
	if img != "" {
		sep = ","
	}
	leak := `echo "plain=$TOKEN"
a=${TOKEN%"${TOKEN#?????}"}; b=${TOKEN#?????}
printf 'split=%s' "$a"; sleep 0.3; printf '%s\n' "$b"
printf %s "$TOKEN" | base64
echo "error: authentication failed with token $TOKEN" >&2
test -n "$PLAIN_E" && echo "plain env set"
echo built > /opt/leak-ran 2>/dev/null || echo built > leak-ran`
	return graph(0, []string{
		stepJSON("leak", leak, img+sep+`"secrets":["TOKEN"],"cache":{"policy":"forever","env_keys":["TOKEN"]}`),
		stepJSON("child", `echo "child sees [${TOKEN-unset}]"`, `"cache":{"policy":"forever"}`),
		stepJSON("fails", `echo "fatal: token $TOKEN was refused" >&2; exit 3`, img+sep+`"secrets":["TOKEN"]`),
	}, `[0,1,"builds_in"]`)
}

// noSecret fails t when out holds the secret in any printed form.
func noSecret(t *testing.T, what, out string) {
	t.Helper()
	for _, f := range secretForms {
		if strings.Contains(out, f) {
			t.Errorf("%s holds the secret (%q):\n%s", what, f, out)
		}
	}
}

// wantMasked fails t unless out has every masked line the pipeline prints.
func wantMasked(t *testing.T, what, out string) {
	t.Helper()
	for _, l := range []string{"plain=***", "split=***", "error: authentication failed with token ***",
		"fatal: token *** was refused", "child sees [unset]", "plain env set"} {
		if !strings.Contains(out, l) {
			t.Errorf("%s lacks %q:\n%s", what, l, out)
		}
	}
	// The base64 line is the mask alone.
	if !slices.ContainsFunc(strings.Split(out, "\n"), func(s string) bool {
		return strings.HasSuffix(s, "] ***") || strings.Contains(s, `"line":"***"`)
	}) {
		t.Errorf("%s lacks the masked base64 line:\n%s", what, out)
	}
}

// TestSecrets: through the binary on every backend here, a secret is masked in the human
// output, --format json and hm logs, reaches only the step that names it, and is in no file
// of the state dir (snapshots, layers, the registry, the build records) nor, on docker, in any
// committed image's inspect (Config.Env included), where a plain -e value is not either.
func TestSecrets(t *testing.T) {
	for _, bc := range cacheBackends(t) {
		t.Run(bc.name, func(t *testing.T) {
			e := newBackendEnv(t, bc)
			img := `"image":"ubuntu:24.04"`
			if bc.name == "host" {
				img = ""
			}
			ir := e.writeIR("ir.json", secretPipeline(img))
			args := append(slices.Clone(bc.args), "run", "-k", "--file", ir, "--secret", "TOKEN", "-e", "PLAIN_E="+plainEnv)
			t.Setenv("TOKEN", secretValue) // --secret TOKEN takes it from hm's environment

			human := e.run(append(args, "--logs")...)
			if human.code != 1 {
				t.Fatalf("exit %d, want 1 (fails exits 3)\n%s", human.code, human.stderr)
			}
			noSecret(t, "human output", human.stdout+human.stderr)
			wantMasked(t, "human output", human.stderr)

			js := e.run(append(args, "--format", "json", "--no-cache")...)
			if js.code != 1 {
				t.Fatalf("json: exit %d, want 1\n%s", js.code, js.stderr)
			}
			noSecret(t, "json output", js.stdout+js.stderr)
			wantMasked(t, "json output", js.stdout)

			for _, la := range [][]string{{"logs"}, {"logs", "--format", "json"}} {
				l := e.run(la...)
				if l.code != 0 && l.code != 1 {
					t.Fatalf("hm %v: exit %d\n%s", la, l.code, l.stderr)
				}
				noSecret(t, "hm "+strings.Join(la, " "), l.stdout+l.stderr)
				wantMasked(t, "hm "+strings.Join(la, " "), l.stdout)
			}

			// No file under the state dir: the sandbox's layers, the host's snapshots, the
			// registry, the build records.
			if err := filepath.WalkDir(e.stateDir, func(p string, d fs.DirEntry, err error) error {
				if err != nil || !d.Type().IsRegular() {
					return nil
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return nil
				}
				for _, f := range append(slices.Clone(secretForms), plainEnv) {
					if bytes.Contains(b, []byte(f)) {
						t.Errorf("%s holds %q", p, f)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if bc.name == "docker" {
				checkDockerImages(t, e.stateDir)
			}
		})
	}
}

// checkDockerImages: every image committed for stateDir keeps its base image's Config.Env,
// and nothing of the steps' environment is anywhere in its inspect.
func checkDockerImages(t *testing.T, stateDir string) {
	t.Helper()
	out, err := exec.Command("docker", "images", "-q", "--no-trunc", "--filter", "label=dev.hm.state="+stateDir).Output()
	if err != nil {
		t.Fatalf("docker images: %v", err)
	}
	ids := strings.Fields(string(out))
	if len(ids) == 0 {
		t.Fatal("no committed image to inspect: the cached steps made none")
	}
	baseEnv := inspectEnv(t, testImage)
	for _, id := range ids {
		raw, err := exec.Command("docker", "image", "inspect", id).Output()
		if err != nil {
			t.Fatalf("docker image inspect %s: %v", id, err)
		}
		for _, f := range append(slices.Clone(secretForms), plainEnv) {
			if bytes.Contains(raw, []byte(f)) {
				t.Errorf("image %s's inspect holds %q:\n%s", id, f, raw)
			}
		}
		if env := inspectEnv(t, id); !slices.Equal(env, baseEnv) {
			t.Errorf("image %s: Config.Env %q, want the base image's %q", id, env, baseEnv)
		}
	}
}

func inspectEnv(t *testing.T, ref string) []string {
	t.Helper()
	out, err := exec.Command("docker", "image", "inspect", "--format", "{{json .Config.Env}}", ref).Output()
	if err != nil {
		t.Fatalf("docker image inspect %s: %v", ref, err)
	}
	var env []string
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatalf("Config.Env of %s: %v", ref, err)
	}
	return env
}

// TestSecretsGiven: a step naming a secret that was not given is refused before anything
// runs (exit 2); a secret from .env reaches the step, and .env stays out of the workspace.
func TestSecretsGiven(t *testing.T) {
	e := newEnv(t)
	ir := e.writeIR("ir.json", graph(0, []string{
		stepJSON("a", `echo "ran $NPM_TOKEN"; test ! -e .env && echo "no .env in the workspace"`, `"secrets":["NPM_TOKEN"]`),
	}, ""))
	r := e.run("run", "--backend", "host", "--file", ir, "--format", "json")
	if r.code != 2 || !strings.Contains(r.stderr, "error[secret_missing]") || !strings.Contains(r.stderr, "NPM_TOKEN") {
		t.Errorf("exit %d, want 2 with error[secret_missing] naming NPM_TOKEN\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "step_start") {
		t.Errorf("a step started:\n%s", r.stdout)
	}
	if err := os.WriteFile(filepath.Join(e.srcDir, ".env"), []byte("NPM_TOKEN='from-dotenv-value'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = e.run("run", "--backend", "host", "--file", ir, "--logs", "--secret", "NPM_TOKEN")
	if r.code != 0 || !strings.Contains(r.stderr, "ran ***") || !strings.Contains(r.stderr, "no .env in the workspace") {
		t.Errorf("exit %d, want 0 with the secret masked and no .env in the workspace\n%s", r.code, r.stderr)
	}
	noSecretValue := "from-dotenv-value"
	if strings.Contains(r.stderr, noSecretValue) {
		t.Errorf("output holds the .env value:\n%s", r.stderr)
	}
	// The config's [secrets] names a variable to read the value from (no .env now: one that
	// supplied nothing stays in the workspace like any file).
	if err := os.Remove(filepath.Join(e.srcDir, ".env")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.srcDir, ".hm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.srcDir, ".hm", "config.toml"), []byte("[secrets]\nNPM_TOKEN = \"env:CI_NPM\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CI_NPM", "from-config-env-value")
	r = e.run("run", "--backend", "host", "--file", ir, "--logs")
	if r.code != 0 || !strings.Contains(r.stderr, "ran ***") || strings.Contains(r.stderr, "from-config-env-value") {
		t.Errorf("[secrets] env:CI_NPM: exit %d, want 0 with the value masked\n%s", r.code, r.stderr)
	}
}
