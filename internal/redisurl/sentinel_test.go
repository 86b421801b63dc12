package redisurl

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSentinel(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		topts map[string]any
		addrs []string
		db    int
		pw    string
		spw   string
		tls   bool
		read  time.Duration
		err   bool
	}{
		{name: "celery form", url: "sentinel://:pw@h1:26380/3;sentinel://h2:26381;sentinel://h3",
			topts: map[string]any{"master_name": "mymaster"},
			addrs: []string{"h1:26380", "h2:26381", "h3:26379"}, db: 3, pw: "pw"},
		{name: "one sentinel, defaults", url: "sentinel://",
			topts: map[string]any{"master_name": "m"}, addrs: []string{"127.0.0.1:26379"}},
		{name: "sentinel_kwargs", url: "sentinel://h:1/0",
			topts: map[string]any{"master_name": "m", "socket_timeout": 2.5,
				"sentinel_kwargs": map[string]any{"password": "s3", "ssl": true, "ssl_cert_reqs": "none"}},
			addrs: []string{"h:1"}, spw: "s3", tls: true, read: 2500 * time.Millisecond},
		{name: "string number from a flag", url: "sentinel://h:1",
			topts: map[string]any{"master_name": "m", "socket_timeout": "3"}, addrs: []string{"h:1"}, read: 3 * time.Second},
		{name: "no master_name", url: "sentinel://h:1", err: true},
		{name: "master_name not a string", url: "sentinel://h:1", topts: map[string]any{"master_name": 3.0}, err: true},
		{name: "mixed schemes", url: "sentinel://h:1;redis://h2", topts: map[string]any{"master_name": "m"}, err: true},
		{name: "bad db", url: "sentinel://h:1/x", topts: map[string]any{"master_name": "m"}, err: true},
		{name: "query", url: "sentinel://h:1/0?master_name=m", topts: map[string]any{"master_name": "m"}, err: true},
		{name: "sentinel_kwargs not a map", url: "sentinel://h:1", topts: map[string]any{"master_name": "m", "sentinel_kwargs": "x"}, err: true},
		{name: "negative timeout", url: "sentinel://h:1", topts: map[string]any{"master_name": "m", "socket_timeout": -1.0}, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := ParseSentinel(tt.url, tt.topts, nil)
			if tt.err {
				if !errors.Is(err, ErrURL) {
					t.Fatalf("err = %v, want ErrURL", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(o.SentinelAddrs, tt.addrs) || o.DB != tt.db || o.Password != tt.pw ||
				o.SentinelPassword != tt.spw || (o.TLSConfig != nil) != tt.tls || o.ReadTimeout != tt.read ||
				!o.ContextTimeoutEnabled || o.MasterName == "" {
				t.Errorf("got %+v", o)
			}
			if tt.tls && !o.TLSConfig.InsecureSkipVerify {
				t.Error("ssl_cert_reqs none not applied")
			}
		})
	}
}

func TestParseSentinelNamesTheMissingOption(t *testing.T) {
	_, err := ParseSentinel("sentinel://h:1", nil, nil)
	if err == nil || !contains(err.Error(), "master_name") {
		t.Fatalf("err = %v, want one naming master_name", err)
	}
}

func TestNewClient(t *testing.T) {
	c, err := NewClient("sentinel://:pw@h:1/2;sentinel://h2:2", map[string]any{"master_name": "m"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Sentinel || c.DB != 2 || contains(c.Redacted, ":pw@") {
		t.Errorf("got sentinel %v db %d redacted %q", c.Sentinel, c.DB, c.Redacted)
	}
	p, err := NewClient("redis://127.0.0.1:6390/5", map[string]any{"socket_timeout": 1.5, "max_connections": 7.0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if o := p.Options(); p.Sentinel || p.DB != 5 || o.ReadTimeout != 1500*time.Millisecond || o.PoolSize != 7 {
		t.Errorf("got %+v", o)
	}
}

func TestParseOption(t *testing.T) {
	m := map[string]any{}
	for _, kv := range []string{"master_name=mymaster", "socket_timeout=2", `sentinel_kwargs={"password": "x"}`, "visibility_timeout=3600.5", "empty="} {
		if err := ParseOption(m, kv); err != nil {
			t.Fatal(err)
		}
	}
	if m["master_name"] != "mymaster" || m["socket_timeout"] != 2.0 || m["visibility_timeout"] != 3600.5 || m["empty"] != "" {
		t.Errorf("got %#v", m)
	}
	if kw, _ := m["sentinel_kwargs"].(map[string]any); kw["password"] != "x" {
		t.Errorf("sentinel_kwargs = %#v", m["sentinel_kwargs"])
	}
	if err := ParseOption(m, "novalue"); err == nil {
		t.Error("KEY without =VALUE accepted")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
