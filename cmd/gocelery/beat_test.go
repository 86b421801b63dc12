package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	goredis "github.com/redis/go-redis/v9"
)

// TestBeatStoreCommands drives add/list/disable/run-now/remove against the
// beat tests' Redis DB (5) under a unique prefix.
func TestBeatStoreCommands(t *testing.T) {
	prefix := "clitest:" + uuid.NewString()[:8] + ":"
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379", DB: 5})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Redis (run scripts/services.sh): %v", err)
	}
	t.Cleanup(func() {
		keys, _ := rdb.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
		rdb.Close()
	})
	store := []string{"--redis", "redis://127.0.0.1:6379/5", "--key-prefix", prefix}
	call := func(args ...string) (code int, stdout, stderr string) {
		var o, e bytes.Buffer
		code = run(context.Background(), append(args, store...), nil, &o, &e)
		return code, o.String(), e.String()
	}
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"beat", "add", "nightly", "--task", "proj.nightly", "--trigger", "30 2 * * mon-fri", "--queue", "reports"}, 0, "added nightly: proj.nightly 30 2 * * mon-fri", ""},
		{[]string{"beat", "add", "bad", "--task", "t", "--trigger", "0 0 * * 1-8"}, 1, "", `bad crontab: day_of_week "1-8": invalid end range: 8 > 6`},
		{[]string{"beat", "add", "bad", "--task", "t", "--trigger", "0 0 * *"}, 1, "", "want 5 space-separated fields"},
		{[]string{"beat", "add", "hb", "--task", "interop.add", "--args", "[1, 2]", "--trigger", "every 2s"}, 0, "added hb", ""},
		{[]string{"beat", "disable", "hb"}, 0, "hb: disabled", ""},
		{[]string{"beat", "list"}, 0, "hb       false    every 2s", ""},
		{[]string{"beat", "run-now", "nightly"}, 0, "nightly: will run at once", ""},
		{[]string{"beat", "remove", "nope"}, 1, "", `no such entry: "nope"`},
		{[]string{"beat", "remove", "hb"}, 0, "hb: removed", ""},
	}
	for _, tt := range tests {
		code, out, errOut := call(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
			t.Errorf("gocelery %s: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				strings.Join(tt.args, " "), code, out, errOut, tt.code, tt.out, tt.err)
		}
	}
}
