package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store/postgres/pgtest"
)

// TestRemoteSecret: through the binaries (hm server, two hm agents, hm run --backend remote
// --secret), a secret is masked in the human output, --format json and the server's own
// event stream, reaches only the steps naming it, and is in no file of the server's data dir
// once the build ended (SQLite: the database file; the sealed row is deleted, the store's
// conformance suite checks that on PostgreSQL too) nor of an agent's state dir (snapshots).
func TestRemoteSecret(t *testing.T) { remoteStores(t, testRemoteSecret) }

func testRemoteSecret(t *testing.T, st remoteStore) {
	c := remoteStart(t, st)
	e := newEnv(t)
	ir := e.writeIR("ir.json", secretPipeline(`"image":"ubuntu:24.04"`))
	t.Setenv("TOKEN", secretValue) // --secret TOKEN takes it from hm's environment
	args := []string{"-k", "--file", ir, "--secret", "TOKEN", "-e", "PLAIN_E=" + plainEnv}

	js := c.run(e, args...)
	if js.code != 1 {
		t.Fatalf("json: exit %d, want 1 (fails exits 3)\n%s\n%s", js.code, js.stderr, js.stdout)
	}
	noSecret(t, "json output", js.stdout+js.stderr)
	wantMasked(t, "json output", js.stdout)
	var watch string
	for _, ev := range parseEvents(t, js.stdout) {
		if ev.BuildAccepted != nil && ev.BuildAccepted.WatchURL != nil {
			watch = *ev.BuildAccepted.WatchURL
		}
	}
	if watch == "" {
		t.Fatal("no build_accepted with a watch URL")
	}
	served := remoteEvents(t, watch, c.userToken)
	noSecret(t, "the server's event stream", served)
	wantMasked(t, "the server's event stream", served)

	human := c.run(e, append(args, "--format", "human", "--logs", "--no-cache")...)
	if human.code != 1 {
		t.Fatalf("human: exit %d, want 1\n%s", human.code, human.stderr)
	}
	noSecret(t, "human output", human.stdout+human.stderr)
	wantMasked(t, "human output", human.stderr)

	// Both builds ended: no file of the server (its database, WAL, blobs) holds the value,
	// and no file of an agent (its snapshots, sources). A plain -e value is stored with the
	// build on the server (env is not secret), but never in a snapshot.
	walk := func(dir string, forms []string) {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, f := range forms {
				if bytes.Contains(b, []byte(f)) {
					t.Errorf("%s holds %q", p, f)
				}
			}
			return nil
		})
	}
	walk(filepath.Join(c.root, "server"), secretForms)
	for _, a := range c.agents {
		walk(a.state, append(slices.Clone(secretForms), plainEnv))
	}
	if st == storePostgres { // every row of the server's schema
		d, err := pgtest.Dump(c.db[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(d, []byte("plain=***")) {
			t.Fatal("the dump lacks the build's masked log: it cannot show the secret is absent either")
		}
		// Log chunks are BYTEA, which a row's text shows in hex.
		for _, f := range secretForms {
			if bytes.Contains(d, []byte(f)) || bytes.Contains(d, []byte(hex.EncodeToString([]byte(f)))) {
				t.Errorf("the PostgreSQL store holds %q", f)
			}
		}
	}
}

// remoteEvents reads a build's event stream from the server (the build ended: it ends with
// build_end) and returns its data lines.
func remoteEvents(t *testing.T, url, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var out strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			out.WriteString(data + "\n")
			if strings.Contains(data, `"build_end"`) {
				break
			}
		}
	}
	return out.String()
}
