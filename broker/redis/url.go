package redis

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

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
	case "sentinel":
		return nil, "", fmt.Errorf("%w: %s: a Sentinel URL list opens with newClient", ErrURL, redacted)
	default:
		return nil, "", fmt.Errorf("%w: scheme %q (want redis, rediss, unix or sentinel)", ErrURL, u.Scheme)
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

// newClient opens the client for a broker URL: parseURL's forms, or
// Celery's Sentinel list sentinel://host:26379[/db];sentinel://...
// with the transport options kombu's SentinelChannel reads (master_name
// required; see redisurl.ParseSentinel). A Sentinel client is go-redis's
// failover client: each new connection asks the sentinels for the
// master, and connections to a replaced master are closed, so the
// components' retries and BRPOP land on the new master.
//
// The transport options wait_replicas, visibility_timeout and
// unacked_mutex_expire fill the fields of opts left zero.
func newClient(raw string, opts *Config) (*redis.Client, int, string, error) {
	if err := applyTransportOptions(opts); err != nil {
		return nil, 0, "", err
	}
	if !redisurl.IsSentinel(raw) {
		ropts, redacted, err := parseURL(raw, opts.TLSConfig)
		if err != nil {
			return nil, 0, "", err
		}
		return redis.NewClient(ropts), ropts.DB, redacted, nil
	}
	c, err := redisurl.NewClient(raw, opts.TransportOptions, opts.TLSConfig)
	if err != nil {
		if errors.Is(err, redisurl.ErrURL) {
			return nil, 0, "", fmt.Errorf("%w: %s: %v", ErrURL, redisurl.Redact(raw), err)
		}
		return nil, 0, "", err
	}
	return c.Client, c.DB, c.Redacted, nil
}

// applyTransportOptions fills opts' zero fields from the transport options
// kombu's Redis channel reads (durations in seconds, as in Python).
func applyTransportOptions(opts *Config) error {
	if v, ok := opts.TransportOptions["wait_replicas"]; ok && opts.WaitReplicas == 0 {
		n, err := strconv.Atoi(strings.TrimSuffix(fmt.Sprint(v), ".0"))
		if err != nil || n < 0 {
			return fmt.Errorf("%w: transport option wait_replicas: %v is not a count", ErrURL, v)
		}
		opts.WaitReplicas = n
	}
	for _, o := range []struct {
		name string
		d    *time.Duration
	}{
		{"visibility_timeout", &opts.VisibilityTimeout},
		{"unacked_mutex_expire", &opts.UnackedMutexExpire},
	} {
		v, ok := opts.TransportOptions[o.name]
		if !ok || *o.d != 0 {
			continue
		}
		s, err := strconv.ParseFloat(fmt.Sprint(v), 64)
		if err != nil || s <= 0 || s > math.MaxInt64/float64(time.Second) {
			return fmt.Errorf("%w: transport option %s: %v is not a number of seconds", ErrURL, o.name, v)
		}
		*o.d = time.Duration(s * float64(time.Second))
	}
	return nil
}
