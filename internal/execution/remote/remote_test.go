package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/cachekey"
	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/prepare"
)

func ir(timeout int, steps ...string) string {
	t := ""
	if timeout > 0 {
		t = fmt.Sprintf(`,"timeout_seconds":%d`, timeout)
	}
	return `{"version":"0","default_image":"img"` + t + `,"steps":[` + strings.Join(steps, ",") + `]}`
}

func step(key, cmd string) string {
	return fmt.Sprintf(`{"type":"command","key":%q,"cmd":%q}`, key, cmd)
}

// kinds is the events' kinds, with step keys and log lines, for comparisons.
func kinds(evs []events.Event) []string {
	keys := map[string]string{}
	var out []string
	for _, e := range evs {
		if e.StepQueued != nil {
			keys[e.StepQueued.StepID] = e.StepQueued.Key
		}
		k := string(e.Kind)
		if id := e.StepID(); id != "" {
			k += " " + keys[id]
		}
		if e.StepLog != nil {
			k += " " + e.StepLog.Line
		}
		out = append(out, k)
	}
	return out
}

// The build runs on the server: build_accepted first, then exactly the stored stream, exit
// codes per remote.md; the pipeline is created on first submit; hm_options carry the cache
// keys the client computed.
func TestBuildOutcomes(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		doc  string
		exit int
	}{
		{"passed", ir(0, step("a", "print hello;print world"), step("b", "print b")), 0},
		{"failed", ir(0, step("a", "print oops;exit 3")), 1},
		{"pipeline timeout", ir(1, step("a", "block")), 124},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bd := prepared(t, tc.doc, prepare.Options{})
			h, err := e.backend(e.URL+"/").Start(context.Background(), execution.Request{Build: bd})
			if err != nil {
				t.Fatal(err)
			}
			evs, out := collect(t, h, nil)
			if out.ExitCode != tc.exit || out.Err != nil {
				t.Fatalf("outcome %+v, want exit %d", out, tc.exit)
			}
			acc := evs[0].BuildAccepted
			if acc == nil {
				t.Fatalf("first event %s, want build_accepted", evs[0].Kind)
			}
			if acc.Build.Org != "acme" || acc.Build.Pipeline != "ci" || acc.Build.Number < 1 || acc.WatchURL == nil ||
				!strings.HasSuffix(*acc.WatchURL, fmt.Sprintf("/builds/%d/events", acc.Build.Number)) {
				t.Errorf("build_accepted %+v", acc)
			}
			want := e.Stored(t, acc.Build.RunID)
			if diff := cmp.Diff(kinds(want), kinds(evs[1:])); diff != "" {
				t.Errorf("events differ from the server's stream (-stored +client):\n%s", diff)
			}
			if evs[1].BuildStart == nil || evs[1].BuildStart.RunID != acc.Build.RunID {
				t.Errorf("build_start after build_accepted: %+v", evs[1])
			}
		})
	}
}

// hm_options reach the server as the driver reads them, cache_keys included.
func TestOptionsSent(t *testing.T) {
	e := newEnv(t)
	doc := ir(0, `{"type":"command","key":"deps","cmd":"print d","cache":{"policy":"forever"}}`, step("t", "print t"))
	bd := prepared(t, doc, prepare.Options{Parallelism: 3, KeepGoing: true, Env: []string{"A=1", "A=2", "B=x"},
		MapImage: map[string]string{"img": "other"}})
	h, err := e.backend(e.URL).Start(context.Background(), execution.Request{Build: bd})
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := collect(t, h, nil)
	b, err := e.DB.GetBuild(context.Background(), evs[0].BuildAccepted.Build.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var o hmOptions
	if err := json.Unmarshal(b.Options, &o); err != nil {
		t.Fatal(err)
	}
	want := hmOptions{Parallelism: 3, KeepGoing: true, MapImage: map[string]string{"img": "other"},
		CacheKeys: map[string]string{"deps": bd.Steps[0].Key}, CacheInputs: map[string]cachekey.Inputs{"deps": bd.Steps[0].Inputs},
		Warnings: map[string][]string{}}
	if diff := cmp.Diff(want, o); diff != "" || bd.Steps[0].Key == "" || o.CacheInputs["deps"].Fingerprint == "" {
		t.Errorf("hm_options (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"A": "2", "B": "x"}, b.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if b.IR != doc || b.SourceDigest == "" {
		t.Errorf("IR %q source %q", b.IR, b.SourceDigest)
	}
}

// Handle.Cancel, however often called, sends one cancelBuild; the build ends canceled: 130.
func TestCancel(t *testing.T) {
	e := newEnv(t)
	bd := prepared(t, ir(0, step("a", "print started;block"), step("b", "block")), prepare.Options{})
	h, err := e.backend(e.URL).Start(context.Background(), execution.Request{Build: bd})
	if err != nil {
		t.Fatal(err)
	}
	evs, out := collect(t, h, func(ev events.Event) {
		if ev.StepLog != nil && ev.StepLog.Line == "started" {
			h.Cancel()
			h.Cancel()
		}
	})
	h.Cancel()
	if out.ExitCode != errs.ExitCanceled {
		t.Fatalf("exit %d (%v), want 130; events %v", out.ExitCode, out.Err, kinds(evs))
	}
	if n := e.Count("PUT ", "/cancel"); n != 1 {
		t.Errorf("%d cancelBuild calls, want 1", n)
	}
}

// Refusals before anything runs: each a typed error with its exit code, no Handle.
func TestStartErrors(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	good := ir(0, step("a", "print a"))
	tests := []struct {
		name  string
		tweak func(*Backend, *prepare.Build)
		exit  int
		code  string
		class error
	}{
		{"bad token", func(b *Backend, _ *prepare.Build) { b.Token = "hmu_nope" }, 3, "unauthorized", errs.ErrAuth},
		{"no token", func(b *Backend, _ *prepare.Build) { b.Token = "" }, 3, "unauthorized", errs.ErrAuth},
		{"unreachable", func(b *Backend, _ *prepare.Build) { b.Server = dead }, 4, "server_unreachable", errs.ErrUnavailable},
		{"unknown org", func(b *Backend, _ *prepare.Build) { b.Org = "nobody" }, 5, "organization_not_found", errs.ErrNotFound},
		{"IR rejected", func(_ *Backend, bd *prepare.Build) { bd.IR = []byte(`{"version":"9","steps":[]}`) }, 7, "build_plan_rejected", errs.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bd := prepared(t, good, prepare.Options{})
			b := e.backend(e.URL)
			tc.tweak(b, bd)
			h, err := b.Start(context.Background(), execution.Request{Build: bd})
			if h != nil || err == nil {
				t.Fatalf("Start: %v, %v", h, err)
			}
			var re *errs.RemoteError
			if !errors.As(err, &re) || re.Code() != tc.code || !errors.Is(err, tc.class) {
				t.Fatalf("error %T %v (code %v), want %s", err, err, re, tc.code)
			}
			if got := errs.ExitCode(err); got != tc.exit {
				t.Errorf("exit %d, want %d", got, tc.exit)
			}
		})
	}
}

// The stream's connection cut mid-build (a proxy closed) is resumed after the last event
// seen: the client gets the server's stream exactly, nothing lost or twice.
func TestStreamResumes(t *testing.T) {
	e := newEnv(t)
	p := newProxy(t, strings.TrimPrefix(e.URL, "http://"))
	bd := prepared(t, ir(0, step("a", "print one;print two;gate g;print three;print four")), prepare.Options{})
	h, err := e.backend(p.url()).Start(context.Background(), execution.Request{Build: bd})
	if err != nil {
		t.Fatal(err)
	}
	evs, out := collect(t, h, func(ev events.Event) {
		if ev.StepLog != nil && ev.StepLog.Line == "two" {
			p.cut()
			close(e.Gate("g"))
		}
	})
	if out.ExitCode != 0 {
		t.Fatalf("outcome %+v", out)
	}
	want := e.Stored(t, evs[0].BuildAccepted.Build.RunID)
	if diff := cmp.Diff(kinds(want), kinds(evs[1:])); diff != "" {
		t.Errorf("events differ from the server's stream (-stored +client):\n%s", diff)
	}
	resumes := e.Resumes()
	if len(resumes) < 2 || resumes[0] != "" || resumes[len(resumes)-1] == "" {
		t.Errorf("Last-Event-ID of the stream requests: %q", resumes)
	}
}

// A server that sends events again after a resume (ignoring Last-Event-ID) delivers each once.
func TestNoDuplicates(t *testing.T) {
	frames := func(w http.ResponseWriter, from, to int) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := from; i <= to; i++ {
			ev := fmt.Sprintf(`{"kind":"step_log","step_id":"s","stream":"stdout","line":"l%d","ts":"2026-01-01T00:00:00Z"}`, i)
			if i == 4 {
				ev = `{"kind":"build_end","exit_code":1,"duration_ms":5}`
			}
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n:\n\n", i, ev)
		}
	}
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		switch {
		case r.Method == http.MethodPost:
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"id":"run","number":7,"state":"scheduled"}`)
		case calls == 2:
			frames(w, 1, 3) // then the connection ends
		default:
			frames(w, 2, 4)
		}
	}))
	defer srv.Close()
	bd := prepared(t, ir(0, step("a", "x")), prepare.Options{})
	b := &Backend{Server: srv.URL, Token: "t", Org: "o", RetryDelay: 1}
	h, err := b.Start(context.Background(), execution.Request{Build: bd})
	if err != nil {
		t.Fatal(err)
	}
	evs, out := collect(t, h, nil)
	got := kinds(evs)
	want := []string{"build_accepted", "step_log  l1", "step_log  l2", "step_log  l3", "build_end"}
	if diff := cmp.Diff(want, got); diff != "" || out.ExitCode != 1 {
		t.Errorf("exit %d; events (-want +got):\n%s", out.ExitCode, diff)
	}
}
