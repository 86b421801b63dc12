package redisurl

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultSentinelPort is kombu's SentinelTransport.default_port.
const DefaultSentinelPort = "26379"

// IsSentinel reports whether raw is a Sentinel URL list
// (sentinel://host:26379;sentinel://host2:26379;...).
func IsSentinel(raw string) bool {
	scheme, _, _ := strings.Cut(strings.TrimSpace(raw), "://")
	return strings.EqualFold(scheme, "sentinel")
}

// ParseSentinel reads Celery's Sentinel form,
// sentinel://[[user]:password@]host[:port][/db];sentinel://host2[:port];...,
// with the transport options kombu's SentinelChannel and Celery's
// SentinelBackend read (broker_transport_options,
// result_backend_transport_options):
//
//   - master_name (required): the monitored master's name.
//   - sentinel_kwargs: a map for the connections to the sentinels
//     themselves: password, username, socket_timeout,
//     socket_connect_timeout, and ssl (true) with ssl_cert_reqs,
//     ssl_ca_certs, ssl_certfile, ssl_keyfile.
//   - socket_timeout, socket_connect_timeout (seconds), max_connections,
//     client_name: for the master connections, as for redis:// URLs.
//   - min_other_sentinels is accepted and not enforced (go-redis asks any
//     sentinel that answers).
//
// As in kombu, the password, user and database come from the first URL
// and are the master's; the sentinels get only sentinel_kwargs. go-redis
// uses one TLS configuration for sentinels and master: TLS is on when
// sentinel_kwargs has ssl true or base is not nil. Other transport
// options (visibility_timeout, global_keyprefix, ...) are the transport's
// and ignored here. Errors wrap ErrURL or a file error.
func ParseSentinel(raw string, topts map[string]any, base *tls.Config) (*redis.FailoverOptions, error) {
	opts := &redis.FailoverOptions{}
	for i, part := range strings.Split(raw, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrURL, err)
		}
		if !strings.EqualFold(u.Scheme, "sentinel") {
			return nil, fmt.Errorf("%w: %s: every URL of a Sentinel list is sentinel://", ErrURL, u.Redacted())
		}
		if u.RawQuery != "" {
			return nil, fmt.Errorf("%w: %s: Sentinel URLs take no query parameters; give them as transport options", ErrURL, u.Redacted())
		}
		host, port := u.Hostname(), u.Port()
		if host == "" {
			host = "127.0.0.1" // kombu's default host
		}
		if port == "" {
			port = DefaultSentinelPort
		}
		opts.SentinelAddrs = append(opts.SentinelAddrs, net.JoinHostPort(host, port))
		if i > 0 {
			continue
		}
		if u.User != nil {
			opts.Username = u.User.Username()
			opts.Password, _ = u.User.Password()
		}
		if db := strings.Trim(u.Path, "/"); db != "" {
			n, err := strconv.Atoi(db)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%w: %s: database %q is not a number", ErrURL, u.Redacted(), db)
			}
			opts.DB = n
		}
	}
	if len(opts.SentinelAddrs) == 0 {
		return nil, fmt.Errorf("%w: no sentinel address", ErrURL)
	}
	name, err := optString(topts, "master_name")
	if err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%w: a Sentinel URL needs the transport option master_name (broker_transport_options / result_backend_transport_options, or --broker-transport-option master_name=NAME)", ErrURL)
	}
	opts.MasterName = name
	common, err := readCommon(topts)
	if err != nil {
		return nil, err
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = common.dial, common.read, common.read
	opts.PoolSize, opts.ClientName = common.pool, common.name

	var skw map[string]any
	if v, ok := topts["sentinel_kwargs"]; ok && v != nil {
		if skw, ok = v.(map[string]any); !ok {
			return nil, fmt.Errorf("%w: transport option sentinel_kwargs: want a mapping, got %T", ErrURL, v)
		}
	}
	if opts.SentinelPassword, err = optString(skw, "password"); err != nil {
		return nil, fmt.Errorf("sentinel_kwargs: %w", err)
	}
	if opts.SentinelUsername, err = optString(skw, "username"); err != nil {
		return nil, fmt.Errorf("sentinel_kwargs: %w", err)
	}
	// The sentinels' own socket timeouts, when given, are the only ones
	// go-redis can apply to both kinds of connection: take the larger.
	sc, err := readCommon(skw)
	if err != nil {
		return nil, fmt.Errorf("sentinel_kwargs: %w", err)
	}
	opts.DialTimeout = max(opts.DialTimeout, sc.dial)
	opts.ReadTimeout, opts.WriteTimeout = max(opts.ReadTimeout, sc.read), max(opts.WriteTimeout, sc.read)
	useTLS, err := optBool(skw, "ssl")
	if err != nil {
		return nil, fmt.Errorf("sentinel_kwargs: %w", err)
	}
	if useTLS || base != nil {
		if base != nil {
			opts.TLSConfig = base.Clone()
		} else {
			opts.TLSConfig = &tls.Config{}
		}
		ssl := make(map[string]string)
		for _, k := range sslParams {
			if s, err := optString(skw, k); err != nil {
				return nil, fmt.Errorf("sentinel_kwargs: %w", err)
			} else if s != "" {
				ssl[k] = s
			}
		}
		if err := applySSL(opts.TLSConfig, ssl); err != nil {
			return nil, err
		}
	}
	opts.ContextTimeoutEnabled = true
	return opts, nil
}

// Client is an opened Celery Redis URL.
type Client struct {
	*redis.Client
	// DB is the database number the URL names.
	DB int
	// Redacted is the URL (each URL of a Sentinel list) without passwords.
	Redacted string
	// Sentinel tells that Client follows a master through sentinels.
	Sentinel bool
}

// NewClient returns a client for a Celery Redis URL: redis://, rediss://
// and unix:// as Parse reads them, or a Sentinel list as ParseSentinel
// does, in which case it is go-redis's failover client, which asks the
// sentinels for the master at each new connection and drops the
// connections to a master the sentinels replaced. topts are the transport
// options; for plain URLs socket_timeout, socket_connect_timeout,
// max_connections and client_name are applied. Contexts bound every wait
// (ContextTimeoutEnabled).
func NewClient(raw string, topts map[string]any, base *tls.Config) (*Client, error) {
	if IsSentinel(raw) {
		fo, err := ParseSentinel(raw, topts, base)
		if err != nil {
			return nil, err
		}
		return &Client{Client: redis.NewFailoverClient(fo), DB: fo.DB, Redacted: Redact(raw), Sentinel: true}, nil
	}
	o, err := Parse(raw, base)
	if err != nil {
		return nil, err
	}
	c, err := readCommon(topts)
	if err != nil {
		return nil, err
	}
	if c.dial > 0 {
		o.DialTimeout = c.dial
	}
	if c.read > 0 {
		o.ReadTimeout, o.WriteTimeout = c.read, c.read
	}
	if c.pool > 0 {
		o.PoolSize = c.pool
	}
	if c.name != "" {
		o.ClientName = c.name
	}
	o.ContextTimeoutEnabled = true
	return &Client{Client: redis.NewClient(o), DB: o.DB, Redacted: Redact(raw)}, nil
}

// Redact returns raw, a URL or a ";"-separated list of them, with the
// passwords hidden.
func Redact(raw string) string {
	parts := strings.Split(raw, ";")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = "<unparsable URL>"
		}
	}
	return strings.Join(parts, ";")
}

// common are the connection options redis-py takes for any connection.
type common struct {
	dial, read time.Duration
	pool       int
	name       string
}

func readCommon(m map[string]any) (common, error) {
	var c common
	var err error
	if c.read, err = optSeconds(m, "socket_timeout"); err != nil {
		return c, err
	}
	if c.dial, err = optSeconds(m, "socket_connect_timeout"); err != nil {
		return c, err
	}
	var n float64
	if n, err = optNumber(m, "max_connections"); err != nil {
		return c, err
	}
	c.pool = int(n)
	c.name, err = optString(m, "client_name")
	return c, err
}

// optString reads a string option; absent or null is "".
func optString(m map[string]any, k string) (string, error) {
	switch v := m[k].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("%w: transport option %s: want a string, got %T", ErrURL, k, v)
	}
}

// optNumber reads a number option given as a JSON number, a Go number
// or a numeric string (a flag without JSON quoting); absent is 0.
func optNumber(m map[string]any, k string) (float64, error) {
	var f float64
	switch v := m[k].(type) {
	case nil:
		return 0, nil
	case float64:
		f = v
	case float32:
		f = float64(v)
	case int:
		f = float64(v)
	case int64:
		f = float64(v)
	case json.Number:
		var err error
		if f, err = v.Float64(); err != nil {
			return 0, fmt.Errorf("%w: transport option %s: %v", ErrURL, k, err)
		}
	case string:
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			return 0, fmt.Errorf("%w: transport option %s: %q is not a number", ErrURL, k, v)
		}
	default:
		return 0, fmt.Errorf("%w: transport option %s: want a number, got %T", ErrURL, k, v)
	}
	if f < 0 {
		return 0, fmt.Errorf("%w: transport option %s: negative", ErrURL, k)
	}
	return f, nil
}

// optSeconds reads a duration in seconds, as redis-py's socket options.
func optSeconds(m map[string]any, k string) (time.Duration, error) {
	f, err := optNumber(m, k)
	return time.Duration(f * float64(time.Second)), err
}

func optBool(m map[string]any, k string) (bool, error) {
	switch v := m[k].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, fmt.Errorf("%w: transport option %s: %q is not a boolean", ErrURL, k, v)
		}
		return b, nil
	default:
		return false, fmt.Errorf("%w: transport option %s: want a boolean, got %T", ErrURL, k, v)
	}
}

// ParseOption reads a KEY=VALUE flag into m, as Celery's
// --broker-transport-option would: VALUE is JSON when it parses as JSON
// (numbers, true, {"password": "x"}), else the plain string.
func ParseOption(m map[string]any, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("transport option %q: want KEY=VALUE", kv)
	}
	var x any
	if err := json.Unmarshal([]byte(v), &x); err == nil {
		m[k] = x
	} else {
		m[k] = v
	}
	return nil
}
