package cli

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/store/postgres/pgtest"
)

// hm server on a PostgreSQL --db: refused before migrating under --no-migrate, migrated by
// `hm server migrate` (once: the second run has nothing to do), tokens created in it, and it
// serves them.
func TestServerPostgres(t *testing.T) {
	url := pgtest.URL(t)
	data := t.TempDir()
	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := Main(context.Background(), args, IO{Out: &out, Err: &errb, Getenv: func(string) string { return "" }})
		return code, out.String(), errb.String()
	}
	if code, _, e := run("server", "--data", data, "--db", url, "--no-migrate", "--listen", "127.0.0.1:0"); code != 1 ||
		!strings.Contains(e, "error[store_not_migrated]") || !strings.Contains(e, "  fix    run `hm server migrate") {
		t.Fatalf("--no-migrate on an empty database: exit %d\n%s", code, e)
	}
	if code, out, e := run("server", "migrate", "--db", url); code != 0 || !regexp.MustCompile(`schema 0 → [1-9]`).MatchString(out) {
		t.Fatalf("migrate: exit %d %q %s", code, out, e)
	}
	code, out, e := run("server", "migrate", "--db", url)
	if m := regexp.MustCompile(`schema (\d+) → (\d+)`).FindStringSubmatch(out); code != 0 || m == nil || m[1] != m[2] {
		t.Fatalf("second migrate: exit %d %q %s: want nothing to do", code, out, e)
	}
	code, tok, e := run("server", "token", "create", "--db", url, "--org", "acme")
	if code != 0 || !strings.HasPrefix(tok, "hmu_") {
		t.Fatalf("token create: exit %d %q %s", code, tok, e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, exit, logs := startServerCmd(t, ctx, "--data", data, "--db", url, "--no-migrate")
	if !strings.Contains(logs.String(), "store=\"postgres ") {
		t.Errorf("the log does not name the PostgreSQL store: %s", logs.String())
	}
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v0/organizations/acme/pipelines/ci/builds",
		strings.NewReader(`{"branch":"main","commit":"c","pipeline_ir":"{\"version\":\"0\",\"steps\":[{\"type\":\"command\",\"key\":\"a\",\"cmd\":\"true\"}]}"}`))
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("createBuild on the PostgreSQL store: %d", resp.StatusCode)
	}
	cancel()
	select {
	case c := <-exit:
		if c != 0 {
			t.Errorf("server exit %d: %s", c, logs.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatal("server did not stop")
	}
}

// A --db that cannot be used is an error line with a fix and its exit code; none of them
// needs a PostgreSQL, and none quotes the password.
func TestServerDBErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		name string
		db   string
		code int
		line string
	}{
		{"unreachable", "postgres://hm:s3cret@" + closed + "/hm?connect_timeout=5", 4, "error[postgres_unavailable]"},
		{"malformed", "postgres://hm:s3cret@[::1/hm", 2, "error[usage]"},
		{"unknown scheme", "mysql://hm:s3cret@h/hm", 2, "error[usage]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var errb bytes.Buffer
			code := Main(context.Background(), []string{"server", "--data", t.TempDir(), "--db", c.db, "--listen", "127.0.0.1:0"},
				IO{Out: io.Discard, Err: &errb})
			e := errb.String()
			if code != c.code || !strings.Contains(e, c.line) || !strings.Contains(e, "\n  fix    ") || strings.Contains(e, "s3cret") {
				t.Errorf("exit %d, want %d with %s and a fix, without the password:\n%s", code, c.code, c.line, e)
			}
		})
	}
}
