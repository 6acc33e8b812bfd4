package e2e

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

// `hm run | head`: a closed output stops the output, not the build. hm is not killed by
// SIGPIPE; the build runs to its end, exits with the build's own code and leaves nothing
// behind (machines, ephemeral snapshots, processes).
func TestClosedOutputFinishesBuild(t *testing.T) {
	// The root logs far more than a pipe holds after "ready", so hm must write to the closed
	// pipe; the child needs the root's snapshot, so the build is still going when it does.
	doc := graph(0, []string{
		stepJSON("root", "echo ready; seq 1 50000; echo done > done.txt", `"image":"ubuntu:24.04"`),
		stepJSON("child", "cat done.txt; seq 1 1000", ""),
	}, `[0,1,"builds_in"]`)
	for _, bc := range cacheBackends(t) {
		for _, format := range []string{"json", "human"} {
			t.Run(bc.name+"/"+format, func(t *testing.T) {
				e := newBackendEnv(t, bc)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				c := e.cmd(ctx, append([]string{"run", "--file", e.writeIR("p.json", doc), "--no-cache", "--format", format}, bc.args...)...)
				stdout, err := c.StdoutPipe()
				if err != nil {
					t.Fatal(err)
				}
				stderr, err := c.StderrPipe()
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Start(); err != nil {
					t.Fatal(err)
				}
				// Read the stream the logs go to until the step is under way, then close
				// both ends, as head does after its lines.
				logs, other := io.Reader(stdout), stderr
				if format == "human" {
					logs, other = stderr, stdout
				}
				other.Close()
				sc := bufio.NewScanner(logs)
				ready := false
				for !ready && sc.Scan() {
					ready = strings.Contains(sc.Text(), "ready")
				}
				stdout.Close()
				stderr.Close()
				c.Wait()
				if !ready {
					t.Fatal("the step never logged ready")
				}
				if code := c.ProcessState.ExitCode(); code != 0 {
					t.Fatalf("exit %d (%v), want the build's 0", code, c.ProcessState)
				}
				if bc.leftovers != nil {
					if left := bc.leftovers(t, e.stateDir); len(left) > 0 {
						t.Errorf("left behind: %v", left)
					}
				}
			})
		}
	}
}
