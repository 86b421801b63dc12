package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The README's first command: the demo runs end to end with nothing but Go
// and every task ends in the state Celery would give it.
func TestDemo(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"demo"}, strings.NewReader(""), &out, &errOut); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	for _, want := range []string{
		"embedded Redis-protocol broker at redis://127.0.0.1:",
		"PROGRESS", "RETRY", "STARTED",
		"ValueError: boom",
		"celery.exceptions.NotRegistered: 'apps.tasks.scheduled_job.calc_post_score'",
		"7 of 7 tasks ended as expected",
		`app.send_task("interop.add", (2, 3), queue="demo")`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}
