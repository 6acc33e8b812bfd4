package remote

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/events"
	"github.com/hmci/hm/internal/execution"
	"github.com/hmci/hm/internal/execution/remote/remotetest"
	"github.com/hmci/hm/internal/prepare"
)

type env struct{ *remotetest.Env }

func newEnv(t *testing.T) env { return env{remotetest.New(t)} }

// backend is a remote backend for the env's org.
func (e env) backend(url string) *Backend {
	return &Backend{Server: url, Token: e.Token, Org: "acme", RetryDelay: 10 * time.Millisecond}
}

// prepared is a build of doc (IR JSON) from a small source tree.
func prepared(t *testing.T, doc string, o prepare.Options) *prepare.Build {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.Parallelism == 0 {
		o.Parallelism = 2
	}
	b, err := prepare.New(context.Background(), prepare.Input{IR: []byte(doc), Slug: "ci", Dir: dir, Options: o, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// collect reads every event of h until the channel closes, then Waits; a hang guard fails
// the test instead of blocking it. each, when set, sees every event as it arrives.
func collect(t *testing.T, h execution.Handle, each func(events.Event)) ([]events.Event, execution.Outcome) {
	t.Helper()
	guard := time.NewTimer(30 * time.Second)
	defer guard.Stop()
	var evs []events.Event
	for {
		select {
		case ev, ok := <-h.Events():
			if !ok {
				return evs, h.Wait()
			}
			evs = append(evs, ev)
			if each != nil {
				each(ev)
			}
		case <-guard.C:
			t.Fatalf("hang: the build's events did not end; got %d", len(evs))
		}
	}
}

// proxy forwards TCP connections to target until cut closes every open one.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "http://" + p.ln.Addr().String() }

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
