package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/internal/redisurl"
)

// ErrURL is returned by Dial for a broker URL it cannot use.
var ErrURL = errors.New("redis: invalid broker URL")

// parseURL reads a Celery broker URL into go-redis options. kombu's rules:
// the database is the path (the "virtual host"), 0 when empty; rediss://
// is TLS, configured by Celery's redis-py style ssl_* query parameters;
// other query parameters are go-redis's (dial_timeout, pool_size, ...).
// The client is created with ContextTimeoutEnabled, so contexts bound the
// waits on a server that stopped answering.
func parseURL(raw string, tlsConfig *tls.Config) (*redis.Options, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrURL, err)
	}
	redacted := u.Redacted()
	switch strings.ToLower(u.Scheme) {
	case "redis", "rediss", "unix":
	case "sentinel", "sentinels":
		return nil, "", fmt.Errorf("%w: %s: Sentinel URLs are not supported; pass a redis.NewFailoverClient to New", ErrURL, redacted)
	default:
		return nil, "", fmt.Errorf("%w: scheme %q (want redis, rediss or unix)", ErrURL, u.Scheme)
	}
	opts, err := redisurl.Parse(raw, tlsConfig)
	if err != nil {
		if errors.Is(err, redisurl.ErrURL) {
			return nil, "", fmt.Errorf("%w: %s: %v", ErrURL, redacted, err)
		}
		return nil, "", err
	}
	opts.ContextTimeoutEnabled = true
	return opts, redacted, nil
}
