// Package redisurl reads Celery's Redis URLs (broker_url, result_backend)
// into go-redis options, including redis-py's ssl_* query parameters that
// go-redis's own parser rejects. The broker and the result backend share it
// so one URL means the same connection to both.
package redisurl

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

// ErrURL reports a URL that cannot be used.
var ErrURL = errors.New("invalid Redis URL")

var sslParams = [...]string{"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}

// Parse reads redis://[[user]:password@]host[:port][/db], rediss://... and
// unix://path. For rediss, Celery's ssl_cert_reqs (required, optional,
// none, or the CERT_* names), ssl_ca_certs, ssl_certfile and ssl_keyfile
// are applied on top of base (nil: go-redis's default TLS config); other
// query parameters are go-redis's. Errors wrap ErrURL or the file error.
func Parse(raw string, base *tls.Config) (*redis.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrURL, err)
	}
	q := u.Query()
	ssl := make(map[string]string)
	for _, k := range sslParams {
		if q.Has(k) {
			ssl[k] = q.Get(k)
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrURL, u.Redacted(), err)
	}
	if opts.TLSConfig == nil {
		if len(ssl) > 0 {
			return nil, fmt.Errorf("%w: ssl_* parameters need a rediss:// URL", ErrURL)
		}
		return opts, nil
	}
	if base != nil {
		host := opts.TLSConfig.ServerName
		opts.TLSConfig = base.Clone()
		if opts.TLSConfig.ServerName == "" {
			opts.TLSConfig.ServerName = host
		}
	}
	if err := applySSL(opts.TLSConfig, ssl); err != nil {
		return nil, err
	}
	return opts, nil
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
