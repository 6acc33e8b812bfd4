package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/scheduler"
	"github.com/hmci/hm/internal/vm/artifact"
)

func hexSum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// TestDownloadArtifacts: the manifest's files land in the local layout, checked; bytes that
// do not match, a path leaving the step's directory, are errors that leave no file behind;
// a server without the route has no artifacts.
func TestDownloadArtifacts(t *testing.T) {
	good := []byte("artifact bytes\n")
	for _, c := range []struct {
		name    string
		path    string
		serve   []byte
		noRoute bool
		wantErr error
	}{
		{name: "ok", path: "dist/a.txt", serve: good},
		{name: "wrong bytes", path: "dist/a.txt", serve: []byte("artifact bytez\n"), wantErr: errs.ErrInfra},
		{name: "too many bytes", path: "dist/a.txt", serve: append(good, 'x'), wantErr: errs.ErrInfra},
		{name: "escaping path", path: "../../escape.txt", serve: good, wantErr: errs.ErrInfra},
		{name: "a server without the route", noRoute: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := scheduler.Manifest{Build: "ignored", Steps: []scheduler.ManifestEntry{{Key: "a/b", Dir: "../evil",
				Files: []artifact.File{{Path: c.path, Size: int64(len(good)), SHA256: hexSum(good)}}}}}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case c.noRoute:
					w.WriteHeader(http.StatusNotFound)
					_, _ = w.Write([]byte(`{"error":{"type":"not_found","code":"route_not_found","message":"no"}}`))
				case strings.HasSuffix(r.URL.Path, "/artifacts"):
					_ = json.NewEncoder(w).Encode(m)
				case strings.HasSuffix(r.URL.Path, "/artifacts/sha256:"+hexSum(good)):
					_, _ = w.Write(c.serve)
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			dir := t.TempDir()
			h := &handle{c: &client{base: srv.URL, hc: srv.Client()}, buildPath: "/api/v0/organizations/o/pipelines/p/builds/1",
				runID: "run-1", artifactsDir: filepath.Join(dir, "arts")}
			err := h.download(context.Background())
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("err = %v, want %v", err, c.wantErr)
				}
				if _, err := os.Stat(filepath.Join(dir, "arts")); !os.IsNotExist(err) {
					t.Errorf("artifacts that did not arrive left their directory: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var files []string
			_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					files = append(files, rel)
				}
				return nil
			})
			var want []string
			if c.name == "ok" {
				want = []string{"arts/run-1/a%2Fb/dist/a.txt", "arts/run-1/manifest.json"}
			}
			if d := cmp.Diff(want, files); d != "" {
				t.Errorf("files (-want +got):\n%s", d)
			}
			if c.name != "ok" {
				return
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "arts/run-1/a%2Fb/dist/a.txt")); string(b) != string(good) {
				t.Errorf("the file holds %q", b)
			}
			var got scheduler.Manifest
			raw, _ := os.ReadFile(filepath.Join(dir, "arts/run-1/manifest.json"))
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			m.Build, m.Steps[0].Dir = "run-1", "a%2Fb" // ours, not the server's word
			if d := cmp.Diff(m, got); d != "" {
				t.Errorf("manifest (-want +got):\n%s", d)
			}
		})
	}
}
