package render

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/events"
)

var update = flag.Bool("update", false, "rewrite testdata/*/*.golden from the current output")

// readEvents decodes a testdata NDJSON event stream.
func readEvents(t *testing.T, name string) []events.Event {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var evs []events.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev events.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		evs = append(evs, ev)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return evs
}

// feed returns a closed channel holding evs, as a drained events.Queue would deliver them.
func feed(evs []events.Event) <-chan events.Event {
	ch := make(chan events.Event, len(evs))
	for _, ev := range evs {
		ch <- ev
	}
	close(ch)
	return ch
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestPlainGolden(t *testing.T) {
	tests := []struct {
		golden, input string
		opts          Options
	}{
		{golden: "passed", input: "passed"},
		{golden: "failed", input: "failed"},
		{golden: "failed_verbose", input: "failed", opts: Options{Verbose: true}},
		{golden: "timed_out", input: "timed_out"},
		{golden: "canceled", input: "canceled"},
		{golden: "retried", input: "retried"},
		// A step that could not run: its reason is printed once (the engine's log line), and
		// its end says so rather than "exit -1".
		{golden: "infra", input: "infra"},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			var out bytes.Buffer
			if err := Run(context.Background(), &out, feed(readEvents(t, tt.input)), tt.opts); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, filepath.Join("testdata", "plain", tt.golden+".golden"), out.Bytes())
		})
	}
}

// A canceled context ends Run even though the stream never closes, and the stream is still
// drained so the engine's queue can finish.
func TestRunCanceled(t *testing.T) {
	for _, live := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		ch := make(chan events.Event)
		if err := Run(ctx, &bytes.Buffer{}, ch, Options{Live: live}); err != context.Canceled {
			t.Errorf("live=%v: Run = %v, want context.Canceled", live, err)
		}
		ch <- events.Event{Kind: events.KindBuildEnd, BuildEnd: &events.BuildEnd{}} // blocks forever unless drained
		close(ch)
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		ms   int64
		want string
	}{
		{0, "0ms"}, {3, "3ms"}, {99, "99ms"}, {100, "0.1s"}, {1234, "1.2s"}, {59999, "59.9s"},
		{65432, "1m05s"}, {3600000 + 2*60000 + 5000, "1h02m"},
	}
	for _, tt := range tests {
		if got := formatDuration(msDuration(tt.ms)); got != tt.want {
			t.Errorf("formatDuration(%dms) = %q, want %q", tt.ms, got, tt.want)
		}
	}
}

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
