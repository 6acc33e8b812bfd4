package server

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hmci/hm/internal/agentproto"
	"github.com/hmci/hm/internal/store"
)

// TestTokenDeletedRefused: a token deleted from the store is refused within tokenTTL (the
// server's clock moved past it), on user and agent routes alike, while a token never seen
// before works at once and an unknown one is never let through.
func TestTokenDeletedRefused(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	e := newEnv(t, func(c *Config) { c.Now = clock })
	e.submit("ci", nil)
	ctx := context.Background()
	org, err := e.db.GetOrgBySlug(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind       store.TokenKind
		op, method string
		path       string
		body       any
		okStatus   int
		denied     int
	}{
		{store.TokenUser, "getPipeline", "GET", "/api/v0/organizations/acme/pipelines/ci", nil, 200, 401},
		{store.TokenAgent, "", "POST", agentproto.PathRegister, agentproto.Register{AgentID: "ag-1", Backend: "host"}, 200, 401},
	} {
		t.Run(string(c.kind), func(t *testing.T) {
			secret := e.tokens["acme/"+string(c.kind)]
			if r := e.do(c.op, c.method, c.path, secret, c.body); r.Status != c.okStatus {
				t.Fatalf("before the delete: %d %s", r.Status, r.Body)
			}
			ts, err := e.db.ListTokens(ctx, org.ID)
			if err != nil {
				t.Fatal(err)
			}
			h := store.HashToken(secret)
			deleted := false
			for _, tk := range ts {
				if tk.Hash == h {
					if err := e.db.DeleteToken(ctx, tk.ID); err != nil {
						t.Fatal(err)
					}
					deleted = true
				}
			}
			if !deleted {
				t.Fatal("the token is not in the store")
			}
			advance(tokenTTL)
			if r := e.do(c.op, c.method, c.path, secret, c.body); r.Status != c.denied {
				t.Errorf("tokenTTL after the delete: %d %s, want %d", r.Status, r.Body, c.denied)
			}
			// Refused from then on, not cached as refused-then-forgotten.
			advance(time.Millisecond)
			if r := e.do(c.op, c.method, c.path, secret, c.body); r.Status != c.denied {
				t.Errorf("after: %d %s, want %d", r.Status, r.Body, c.denied)
			}
		})
	}
	// A token created now works on its first call (nothing negative is cached).
	tok, th := store.NewToken(store.TokenUser)
	if _, err := e.db.CreateToken(ctx, store.Token{OrgID: org.ID, Kind: store.TokenUser, Name: "late", Hash: th}); err != nil {
		t.Fatal(err)
	}
	if r := e.do("getPipeline", "GET", "/api/v0/organizations/acme/pipelines/ci", tok, nil); r.Status != 200 {
		t.Errorf("a new token: %d %s", r.Status, r.Body)
	}
}

func TestTokenCacheBounds(t *testing.T) {
	var c tokenCache
	t0 := time.Unix(1000, 0)
	a := auth{Token: store.Token{ID: "t"}}
	c.put("h", a, t0)
	for _, tc := range []struct {
		at time.Duration
		ok bool
	}{{0, true}, {tokenTTL - time.Nanosecond, true}, {tokenTTL, false}, {-time.Nanosecond, false}} {
		if _, ok := c.get("h", t0.Add(tc.at)); ok != tc.ok {
			t.Errorf("get at %v = %v, want %v", tc.at, ok, tc.ok)
		}
	}
	for i := range tokenCacheMax + 10 {
		c.put(store.TokenHash(string(rune(i))+"x"), a, t0)
	}
	if len(c.m) > tokenCacheMax {
		t.Errorf("%d tokens cached, bound %d", len(c.m), tokenCacheMax)
	}
}
