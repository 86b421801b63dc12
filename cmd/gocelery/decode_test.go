package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDecodeCommand(t *testing.T) {
	const fixtures = "../../protocol/testdata/"
	tests := []struct {
		name     string
		args     []string
		stdin    string
		wantCode int
		want     []string // substrings of stdout (or stderr when the code is not 0)
	}{
		{"redis fixture", []string{"decode", fixtures + "fixtures/producer-eta-expires-timelimit.json"}, "", 0,
			[]string{"Task shadowname[eta1] received ETA:[2030-01-02T03:04:05.678901+00:00] queue:celery", `"timelimit": [`, "30,"}},
		{"several messages", []string{"decode", fixtures + "fixtures/producer-group.json"}, "", 0,
			[]string{"Task proj.add[g1] received", "Task proj.add[g2] received", `"group_index": 1`}},
		{"vector", []string{"decode", "--json", fixtures + "vectors/compression-zlib.json"}, "", 0,
			[]string{`"compression": "application/x-gzip"`}},
		{"raw amqp body from stdin", []string{"decode", "--header", "task=proj.add", "--headers", `{"id": "x1", "timelimit": [30, 20]}`, "-"},
			`[[1, 2], {"z": 1}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`, 0,
			[]string{"Task proj.add[x1] received", `"z": 1`}},
		{"v1 body without headers", []string{"decode", "-"}, `{"task": "proj.add", "id": "v1", "args": [1], "kwargs": {}}`, 0,
			[]string{"(protocol v1, application/json)"}},
		{"pickle refused", []string{"decode", "--content-type", "application/x-python-serialize", "--header", "task=a", "-"}, "\x80\x04", 1,
			[]string{"pickle is never deserialized"}},
		{"garbage", []string{"decode", "--header", "task=a", "-"}, "[[1", 1, []string{"invalid json at offset 3"}},
		{"unknown command", []string{"frobnicate"}, "", 2, []string{"unknown command"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(tt.stdin), &out, &errOut)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out.String(), errOut.String())
			}
			text := out.String()
			if code != 0 {
				text = errOut.String()
			}
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
		})
	}
}
