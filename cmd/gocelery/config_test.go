package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigFile: beat, inspect and control read --config (the URLs here
// cannot be dialled, so the error shows which one was used), and a flag
// wins over it.
func TestConfigFile(t *testing.T) {
	t.Setenv("CELERY_BROKER_URL", "")
	t.Setenv("REDBEAT_REDIS_URL", "")
	path := filepath.Join(t.TempDir(), "worker.yaml")
	if err := os.WriteFile(path, []byte("broker_url: fromfile://x\nredbeat_redis_url: redisfromfile://x\ntask_serializer: json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", "--config", path, "ping"}, `"fromfile"`},
		{[]string{"control", "--config", path, "-b", "fromflag://x", "shutdown"}, `"fromflag"`},
		{[]string{"beat", "--config", path}, "redisfromfile"},
		{[]string{"inspect", "--config", filepath.Join(t.TempDir(), "none.yaml"), "ping"}, "no such file"},
	} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10e9)
		code := run(ctx, tt.args, nil, &stdout, &stderr)
		cancel()
		if code == 0 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tt.args, code, stderr.String(), tt.want)
		}
		if tt.want != "no such file" && !strings.Contains(stderr.String(), "task_serializer is a Celery setting gocelery ignores") {
			t.Errorf("%v: no warning for task_serializer: %q", tt.args, stderr.String())
		}
	}
}
