package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
)

// A step printing 100,000 lines plus a 1 MB line reaches a deliberately slow NDJSON consumer
// complete and in order, and stdout and stderr lines keep their stream.
func TestHugeOutputToSlowConsumer(t *testing.T) {
	e := newEnv(t)
	// Odd lines to stdout, even to stderr (line numbers 1..100000), then one 1 MiB line in
	// two halves written by separate printf calls (so it crosses read chunks), without a
	// trailing newline: the final partial line must still arrive.
	cmd := `i=1; while [ $i -le 100000 ]; do if [ $((i % 2)) -eq 1 ]; then echo "out $i"; else echo "err $i" >&2; fi; i=$((i+1)); done; ` +
		`big=$(head -c 524288 /dev/zero | tr '\0' x); printf '%s' "$big"; printf '%s' "$big"`
	doc := graph(0, []string{stepJSON("flood", cmd, "")}, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.cmd(ctx, "run", "--file", e.writeIR("p.json", doc), "--format", "json", "--backend", "host")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReaderSize(out, 4096)
	nextOut, nextErr := 1, 2
	var big string
	n := 0
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			break
		}
		n++
		if n%5000 == 0 {
			time.Sleep(20 * time.Millisecond) // a slow consumer: hm must buffer, not drop
		}
		var ev events.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("bad event: %v", err)
		}
		if ev.StepLog == nil {
			continue
		}
		l := ev.StepLog
		switch {
		case strings.HasPrefix(l.Line, "out "):
			if want := fmt.Sprintf("out %d", nextOut); l.Line != want || l.Stream != "stdout" {
				t.Fatalf("got %q on %s, want %q on stdout", l.Line, l.Stream, want)
			}
			nextOut += 2
		case strings.HasPrefix(l.Line, "err "):
			if want := fmt.Sprintf("err %d", nextErr); l.Line != want || l.Stream != "stderr" {
				t.Fatalf("got %q on %s, want %q on stderr", l.Line, l.Stream, want)
			}
			nextErr += 2
		default:
			big = l.Line
		}
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("hm: %v", err)
	}
	if nextOut != 100001 || nextErr != 100002 {
		t.Errorf("lines lost: next stdout %d, next stderr %d", nextOut, nextErr)
	}
	if len(big) != 1<<20 || strings.Trim(big, "x") != "" {
		t.Errorf("1 MiB line arrived as %d bytes", len(big))
	}
}
