package redis

import (
	"errors"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		url      string
		addr     string
		db       int
		user, pw string
		tls      bool
		insecure bool
		err      bool
	}{
		{url: "redis://localhost", addr: "localhost:6379"},
		{url: "redis://localhost/", addr: "localhost:6379"},
		{url: "redis://127.0.0.1:6380/3", addr: "127.0.0.1:6380", db: 3},
		{url: "redis://:secret@h/1", addr: "h:6379", db: 1, pw: "secret"},
		{url: "redis://u:p%40ss@h:1/2", addr: "h:1", db: 2, user: "u", pw: "p@ss"},
		{url: "rediss://h:6380/0", addr: "h:6380", tls: true},
		{url: "rediss://h/0?ssl_cert_reqs=CERT_NONE", addr: "h:6379", tls: true, insecure: true},
		{url: "rediss://h/0?ssl_cert_reqs=required", addr: "h:6379", tls: true},
		{url: "redis://h/0?ssl_cert_reqs=none", err: true},
		{url: "rediss://h/0?ssl_cert_reqs=maybe", err: true},
		{url: "redis://h/x", err: true},
		{url: "amqp://h/", err: true},
		{url: "sentinel://h:26379", err: true}, // newClient opens these
		{url: "::", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			o, _, err := parseURL(tt.url, nil)
			if tt.err {
				if !errors.Is(err, ErrURL) {
					t.Fatalf("err = %v, want ErrURL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.Addr != tt.addr || o.DB != tt.db || o.Username != tt.user || o.Password != tt.pw ||
				(o.TLSConfig != nil) != tt.tls || !o.ContextTimeoutEnabled {
				t.Errorf("got addr %q db %d user %q pw %q tls %v ctx %v", o.Addr, o.DB, o.Username, o.Password, o.TLSConfig != nil, o.ContextTimeoutEnabled)
			}
			if tt.tls && o.TLSConfig.InsecureSkipVerify != tt.insecure {
				t.Errorf("InsecureSkipVerify = %v", o.TLSConfig.InsecureSkipVerify)
			}
		})
	}
}
