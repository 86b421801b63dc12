package amqp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// ErrURL is returned by Dial for a broker URL it cannot use.
var ErrURL = errors.New("amqp: invalid broker URL")

// target is a broker URL taken apart as Celery's kombu reads it.
type target struct {
	dialURL  string // what amqp091 dials: scheme amqp, explicit port
	vhost    string
	tls      bool
	host     string // for TLS server name verification
	redacted string // for logs
}

// parseURL reads a Celery broker URL. kombu's rules: the schemes amqp,
// pyamqp (the py-amqp transport) and amqps (TLS); the virtual host is the
// path without its first "/", URL-unescaped, and "/" when that is empty,
// so "amqp://host", "amqp://host/" and "amqp://host//" (Celery's default
// spelling) all mean the vhost "/", and "amqp://host/%2Fx" means "/x".
//
// TLS is done by the dialer rather than amqp091 (see fixConn), so the URL
// handed to amqp091 always says amqp, with the port made explicit.
func parseURL(raw string) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, fmt.Errorf("%w: %v", ErrURL, err)
	}
	var t target
	port := "5672"
	switch strings.ToLower(u.Scheme) {
	case "amqp", "pyamqp":
	case "amqps":
		t.tls, port = true, "5671"
	default:
		return target{}, fmt.Errorf("%w: scheme %q (want amqp, pyamqp or amqps)", ErrURL, u.Scheme)
	}
	if u.Opaque != "" {
		return target{}, fmt.Errorf("%w: %q has no //host part", ErrURL, u.Redacted())
	}
	t.host = u.Hostname()
	if t.host == "" {
		t.host = "localhost"
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.vhost = strings.TrimPrefix(u.Path, "/")
	if t.vhost == "" {
		t.vhost = "/"
	}
	d := *u
	d.Scheme = "amqp"
	d.Host = net.JoinHostPort(t.host, port)
	// amqp091 takes the vhost from Config.Vhost; the path is left out so it
	// cannot reinterpret it.
	d.Path, d.RawPath = "", ""
	t.dialURL = d.String()
	t.redacted = u.Redacted()
	return t, nil
}
