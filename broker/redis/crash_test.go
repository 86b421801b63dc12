package redis

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
)

// A worker killed with kill -9 is simulated by a helper process: this test
// binary run again with helperEnv set, which consumes one message, prints
// its tag and waits to be killed.
const helperEnv = "GOCELERY_REDIS_TEST_HELPER"

func runHelper() {
	db, _ := strconv.Atoi(os.Getenv(helperEnv + "_DB"))
	vt, _ := time.ParseDuration(os.Getenv(helperEnv + "_VT"))
	// Killed during a restore scan it would hold unacked_mutex for its
	// expiry (as a Python worker would), stopping the restores the tests
	// wait for: no scans unless a test asks for them (_MUTEX_EXPIRE).
	restoreEvery := time.Duration(-1)
	mutexExpire, _ := time.ParseDuration(os.Getenv(helperEnv + "_MUTEX_EXPIRE"))
	if mutexExpire > 0 {
		restoreEvery = time.Hour // the first scan runs at once
	}
	ctx := context.Background()
	b, err := Dial(ctx, redisURL(db), Config{
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		VisibilityTimeout:  vt,
		KeyPrefix:          os.Getenv(helperEnv + "_PREFIX"),
		RestoreInterval:    restoreEvery,
		UnackedMutexExpire: mutexExpire,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if at := os.Getenv(helperEnv + "_KILL_AT"); at != "" {
		b.testHook = killAtHook(at)
	}
	ds, err := b.Consume(ctx, []broker.Queue{{Name: os.Getenv(helperEnv + "_QUEUE")}}, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Getenv(helperEnv+"_KILL_AT") != "" {
		fmt.Println("consuming")
	}
	d := <-ds
	fmt.Println(d.Tag)
	select {} // until SIGKILL
}

// crashedConsumer starts a helper process that takes one message from
// queue and is then killed with SIGKILL; it returns the message's tag.
func crashedConsumer(t *testing.T, db int, prefix, queue string, vt time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := helperCommand(ctx, db, prefix, queue, vt)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	return strings.TrimSpace(line)
}

// helperCommand is the helper process consuming queue, with more
// helperEnv_* settings in extra ("KILL_AT=popped").
func helperCommand(ctx context.Context, db int, prefix, queue string, vt time.Duration, extra ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1",
		helperEnv+"_DB="+strconv.Itoa(db),
		helperEnv+"_VT="+vt.String(),
		helperEnv+"_PREFIX="+prefix,
		helperEnv+"_QUEUE="+queue,
	)
	for _, e := range extra {
		cmd.Env = append(cmd.Env, helperEnv+"_"+e)
	}
	cmd.Stderr = os.Stderr
	return cmd
}
