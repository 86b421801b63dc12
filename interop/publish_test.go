// Package interop holds the tests that need both sides: here, messages a Go
// program publishes (through each transport) run on a real Python Celery
// 5.7 worker, and Go reads the results Python stored.
package interop

import (
	"bufio"
	"context"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/broker/redis"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

const backendURL = "redis://127.0.0.1:6379/2"

type publisher interface {
	Declare(ctx context.Context, qs ...broker.Queue) error
	Publish(ctx context.Context, p broker.Publishing) error
	Close() error
}

// celeryBinary is the pinned venv's celery command.
func celeryBinary(t *testing.T) string {
	t.Helper()
	venv, err := filepath.Abs("../.venv/bin/celery")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(venv); err != nil {
		t.Fatalf("no Celery venv (run scripts/services.sh): %v", err)
	}
	return venv
}

func TestGoPublishesPythonRuns(t *testing.T) {
	venv := celeryBinary(t)
	for _, tc := range []struct {
		name, url string
		dial      func(ctx context.Context, url string) (publisher, error)
	}{
		{"amqp", "amqp://guest:guest@127.0.0.1:5672//", func(ctx context.Context, url string) (publisher, error) {
			return amqp.Dial(ctx, url, amqp.Config{})
		}},
		{"redis", "redis://127.0.0.1:6379/4", func(ctx context.Context, url string) (publisher, error) {
			return redis.Dial(ctx, url, redis.Config{})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			queue := "gopub_" + tc.name + "_" + uuid.NewString()[:8]
			startPythonWorker(t, venv, tc.url, queue)
			b, err := tc.dial(ctx, tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			backend, err := results.OpenRedis(backendURL, results.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer backend.Close()
			big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
			cases := []struct {
				task  string
				args  []any
				want  string // kombu JSON of the result, or the exception type
				state string
			}{
				{"pyinterop.add", []any{int64(2), int64(3)}, "5", results.Success},
				{"pyinterop.add", []any{big70, int64(1)}, "1180591620717411303425", results.Success},
				{"pyinterop.echo", []any{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), protocol.Decimal("1.10")},
					`{"args": [{"__type__": "datetime", "__value__": "2030-01-02T03:04:05+00:00"}, {"__type__": "decimal", "__value__": "1.10"}], "kwargs": {}}`, results.Success},
				{"pyinterop.fail", []any{"from go"}, "ValueError", results.Failure},
			}
			for _, c := range cases {
				id := uuid.NewString()
				raw, err := protocol.Encode(&protocol.Message{ID: id, Task: c.task, Args: c.args})
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Publish(ctx, broker.Publishing{Raw: *raw, RoutingKey: queue}); err != nil {
					t.Fatal(err)
				}
				m, err := backend.Wait(ctx, id)
				if err != nil {
					t.Fatalf("%s: waiting for the result: %v", c.task, err)
				}
				if m.Status != c.state {
					t.Errorf("%s: state %s, want %s (%v)", c.task, m.Status, c.state, m.Result)
					continue
				}
				var got string
				if exc, ok := m.Result.(*results.Exception); ok {
					got = exc.Type
				} else {
					b, _ := protocol.MarshalJSON(m.Result)
					got = string(b)
				}
				if got != c.want {
					t.Errorf("%s: result %s, want %s", c.task, got, c.want)
				}
			}
		})
	}
}

// startPythonWorker runs `celery -A pyinterop worker` on queue until the
// test ends, with the interop result backend.
func startPythonWorker(t *testing.T, celery, brokerURL, queue string) {
	t.Helper()
	startPythonWorkerOn(t, celery, brokerURL, backendURL, queue, nil)
}

// startPythonWorkerOn runs `celery -A pyinterop worker` on queue, with
// result backend backend and extra environment, until the test ends.
func startPythonWorkerOn(t *testing.T, celery, brokerURL, backend, queue string, env []string) {
	t.Helper()
	cmd := exec.Command(celery, "-A", "pyinterop", "worker", "-P", "solo", "-Q", queue,
		"-n", queue+"@interop", "-l", "info", "--without-gossip", "--without-mingle", "--without-heartbeat")
	cmd.Dir = "python"
	cmd.Env = append(os.Environ(), "PYINTEROP_BROKER="+brokerURL, "PYINTEROP_BACKEND="+backend,
		"PYINTEROP_QUEUE="+queue, "PYTHONUNBUFFERED=1")
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "ready.") {
				ready <- nil
			}
		}
		ready <- errors.New("worker exited")
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("python worker log:\n%s", log.String())
		}
	})
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("python worker: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("python worker not ready in 60 s")
	}
}
