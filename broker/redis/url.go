package redis

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
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
	q := u.Query()
	ssl := make(map[string]string)
	for _, k := range [...]string{"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"} {
		if q.Has(k) {
			ssl[k] = q.Get(k)
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s: %v", ErrURL, redacted, err)
	}
	if opts.TLSConfig != nil {
		if tlsConfig != nil {
			host := opts.TLSConfig.ServerName
			opts.TLSConfig = tlsConfig.Clone()
			if opts.TLSConfig.ServerName == "" {
				opts.TLSConfig.ServerName = host
			}
		}
		if err := applySSL(opts.TLSConfig, ssl); err != nil {
			return nil, "", err
		}
	} else if len(ssl) > 0 {
		return nil, "", fmt.Errorf("%w: ssl_* parameters need a rediss:// URL", ErrURL)
	}
	opts.ContextTimeoutEnabled = true
	return opts, redacted, nil
}

// applySSL maps Celery's redis-py SSL URL parameters onto cfg.
func applySSL(cfg *tls.Config, ssl map[string]string) error {
	switch strings.ToLower(strings.TrimPrefix(strings.ToUpper(ssl["ssl_cert_reqs"]), "CERT_")) {
	case "", "required", "optional":
	case "none":
		cfg.InsecureSkipVerify = true
	default:
		return fmt.Errorf("%w: ssl_cert_reqs %q", ErrURL, ssl["ssl_cert_reqs"])
	}
	if path := ssl["ssl_ca_certs"]; path != "" {
		pem, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("redis: ssl_ca_certs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%w: ssl_ca_certs %s holds no PEM certificate", ErrURL, path)
		}
		cfg.RootCAs = pool
	}
	if cert, key := ssl["ssl_certfile"], ssl["ssl_keyfile"]; cert != "" || key != "" {
		if key == "" {
			key = cert // redis-py accepts a certfile holding the key too
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("redis: ssl_certfile/ssl_keyfile: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return nil
}
