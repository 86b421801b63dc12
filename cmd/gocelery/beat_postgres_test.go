package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gocelery/gocelery/beat"
)

func TestUsesPostgres(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  string
		want bool
	}{
		{[]string{"--store", "postgres://u@h/db"}, "", true},
		{[]string{"list", "--store=postgresql://u@h/db", "--json"}, "", true},
		{[]string{"-store", "postgres://u@h/db"}, "", true},
		{[]string{"migrate"}, "", true},
		{[]string{"list", "--redis", "redis://h/0"}, "", false},
		{[]string{"--store", "redis://h/0"}, "postgres://u@h/db", false},
		{[]string{"list"}, "postgres://u@h/db", true},
		{[]string{"add", "x", "--task", "t", "--trigger", "every 1s"}, "", false},
		{[]string{"--key-prefix", "store"}, "", false},
	} {
		t.Setenv("GOCELERY_BEAT_STORE", c.env)
		if got := usesPostgres(c.args); got != c.want {
			t.Errorf("usesPostgres(%q) with GOCELERY_BEAT_STORE=%q = %v, want %v", c.args, c.env, got, c.want)
		}
	}
}

// TestBeatCLIOnPostgres runs the store commands on both schemas against a
// fresh database (skipped without PostgreSQL unless CI is set).
func TestBeatCLIOnPostgres(t *testing.T) {
	admin := os.Getenv("PGBEAT_TEST_URL")
	if admin == "" {
		admin = "postgres://gocelery:gocelery@127.0.0.1:5432/gocelery_test"
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, admin)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL not reachable at %s (run scripts/services.sh): %v", admin, err)
		}
		t.Fatal(err)
	}
	defer c.Close(ctx)
	db := fmt.Sprintf("beatcli_%d", time.Now().UnixNano())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+db); err != nil {
		t.Fatal(err)
	}
	defer c.Exec(ctx, "DROP DATABASE "+db+" WITH (FORCE)")
	url := admin[:strings.LastIndex(admin, "/")+1] + db
	run := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := runBeat(ctx, args, nil, &out, &errOut)
		if err != nil {
			err = fmt.Errorf("%w (stderr: %s)", err, errOut.String())
		}
		return out.String(), err
	}
	// The django schema needs Django's tables first.
	ddl, err := os.ReadFile("../../beat/pgbeat/testdata/django_celery_beat_2.9.0.sql")
	if err != nil {
		t.Fatal(err)
	}
	dc, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}
	dc.Close(ctx)
	for _, schema := range []string{"periodic_task", "django"} {
		t.Run(schema, func(t *testing.T) {
			flags := []string{"--store", url, "--schema", schema}
			if out, err := run(append([]string{"migrate"}, flags...)...); err != nil || !strings.Contains(out, "ready") {
				t.Fatalf("migrate: %q %v", out, err)
			}
			if _, err := run(append([]string{"add", "nightly", "--task", "reports.nightly", "--trigger", "30 2 * * mon-fri",
				"--timezone", "Europe/Berlin", "--queue", "reports", "--kwargs", `{"day": 1}`}, flags...)...); err != nil {
				t.Fatal(err)
			}
			list := func() map[string]any {
				out, err := run(append([]string{"list", "--json"}, flags...)...)
				if err != nil {
					t.Fatal(err)
				}
				var e map[string]any
				if err := json.Unmarshal([]byte(out), &e); err != nil {
					t.Fatalf("list: %q: %v", out, err)
				}
				return e
			}
			e := list()
			if e["name"] != "nightly" || e["trigger"] != "30 2 * * mon-fri" || e["enabled"] != true ||
				e["options"].(map[string]any)["queue"] != "reports" {
				t.Errorf("listed %v", e)
			}
			for _, step := range []struct {
				sub     string
				enabled bool
			}{{"disable", false}, {"enable", true}} {
				if _, err := run(append([]string{step.sub, "nightly"}, flags...)...); err != nil {
					t.Fatal(err)
				}
				if got := list()["enabled"]; got != step.enabled {
					t.Errorf("after %s: enabled %v", step.sub, got)
				}
			}
			if _, err := run(append([]string{"run-now", "nightly"}, flags...)...); err != nil {
				t.Fatal(err)
			}
			if next, _ := time.Parse(time.RFC3339Nano, list()["next_run"].(string)); time.Until(next) > time.Second {
				t.Errorf("after run-now the next run is %v", next)
			}
			if _, err := run(append([]string{"remove", "nightly"}, flags...)...); err != nil {
				t.Fatal(err)
			}
			if _, err := run(append([]string{"remove", "nightly"}, flags...)...); !errors.Is(err, beat.ErrNotFound) {
				t.Errorf("removing twice: %v, want ErrNotFound", err)
			}
		})
	}
	if _, err := run("list", "--store", url, "--schema", "redbeat"); err == nil {
		t.Error("--schema redbeat accepted")
	}
}
