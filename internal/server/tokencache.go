package server

import (
	"sync"
	"time"

	"github.com/hmci/hm/internal/store"
)

// tokenTTL is how long a token found in the store is trusted without looking it up again:
// a token deleted from the store (by this server, another replica or hm server's own
// commands on the same data) is refused within tokenTTL. Its last use is recorded once per
// tokenTTL instead of on every call.
const tokenTTL = 2 * time.Second

// tokenCacheMax bounds the cached tokens; past it, the expired are dropped, and all of them
// when none is.
const tokenCacheMax = 1024

// tokenCache holds the callers of the last tokenTTL by their token's hash. A bearer lookup
// was a write transaction (recording the token's last use) and an org read on every call:
// an agent shipping a big log makes a call per 1000 lines, and each waited for the store's
// write lock behind the log's own writes. Only tokens found are cached: one the store does
// not know is looked up every time, as before, so a token just created works at once.
type tokenCache struct {
	mu sync.Mutex
	m  map[store.TokenHash]cachedAuth
}

type cachedAuth struct {
	a     auth
	until time.Time
}

func (c *tokenCache) get(h store.TokenHash, now time.Time) (auth, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[h]
	// A clock that went back more than the TTL (tests, a corrected clock) does not extend
	// the entry: it is trusted in [until-TTL, until) only.
	if !ok || !now.Before(e.until) || now.Before(e.until.Add(-tokenTTL)) {
		return auth{}, false
	}
	return e.a, true
}

func (c *tokenCache) put(h store.TokenHash, a auth, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[store.TokenHash]cachedAuth{}
	}
	if len(c.m) >= tokenCacheMax {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= tokenCacheMax {
			clear(c.m)
		}
	}
	c.m[h] = cachedAuth{a: a, until: now.Add(tokenTTL)}
}
