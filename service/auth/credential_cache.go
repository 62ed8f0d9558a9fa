package auth

import "time"

// cached returns the cache entry of accessKey when it has not expired at now.
func (c *Credentials) cached(accessKey string, now time.Time) (cachedCredential, bool) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()

	entry, ok := c.cache[accessKey]
	if !ok || !now.Before(entry.expires) {
		return cachedCredential{}, false
	}
	return entry, true
}

// remember caches entry. When the cache is full it first drops expired entries, and
// when none has expired it drops them all, which costs one store read and one unseal
// per access key afterwards.
func (c *Credentials) remember(accessKey string, entry cachedCredential, now time.Time) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()

	if _, ok := c.cache[accessKey]; !ok && len(c.cache) >= c.max {
		for key, old := range c.cache {
			if !now.Before(old.expires) {
				delete(c.cache, key)
			}
		}
		if len(c.cache) >= c.max {
			clear(c.cache)
		}
	}
	c.cache[accessKey] = entry
}

// forget drops the cache entry of accessKey.
func (c *Credentials) forget(accessKey string) {
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()

	delete(c.cache, accessKey)
}
