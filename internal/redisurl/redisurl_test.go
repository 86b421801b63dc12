package redisurl

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		url      string
		addr     string
		db       int
		tls      bool
		insecure bool
		err      error
	}{
		{"redis://127.0.0.1:6379/3", "127.0.0.1:6379", 3, false, false, nil},
		{"redis://:pw@host/0", "host:6379", 0, false, false, nil},
		{"rediss://host:6380/1?ssl_cert_reqs=CERT_NONE", "host:6380", 1, true, true, nil},
		{"rediss://host/1?ssl_cert_reqs=required", "host:6379", 1, true, false, nil},
		{"redis://host/1?ssl_cert_reqs=none", "", 0, false, false, ErrURL},
		{"rediss://host/1?ssl_cert_reqs=sometimes", "", 0, false, false, ErrURL},
		{"http://host/1", "", 0, false, false, ErrURL},
	}
	for _, tt := range tests {
		o, err := Parse(tt.url, nil)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("%s: err = %v, want %v", tt.url, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if o.Addr != tt.addr || o.DB != tt.db || (o.TLSConfig != nil) != tt.tls ||
			(o.TLSConfig != nil && o.TLSConfig.InsecureSkipVerify != tt.insecure) {
			t.Errorf("%s: addr %s db %d tls %v", tt.url, o.Addr, o.DB, o.TLSConfig)
		}
	}
}
