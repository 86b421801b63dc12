package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// runRedis is the consumption bench on the Redis broker (kombu's layout):
// the same queue of n interop.add from Python Celery, drained by the Go
// worker (without and with Redis results), by Celery's prefork worker, and
// by a bare go-redis consumer doing one BRPOP per round trip, kombu's own
// way of taking a message, with no bookkeeping: the ceiling.
func runRedis(n int, brokerURL, resultsURL, goworker, python string, concurrency, cores int, skipPython bool) ([]result, error) {
	opt, err := redis.ParseURL(brokerURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	var all []result
	for _, withResults := range []bool{false, true} {
		backend := ""
		if withResults {
			backend = resultsURL
		}
		q := fmt.Sprintf("bench.redis.%d.%t", os.Getpid(), withResults)
		depth := func() (int, error) { n, err := rdb.LLen(ctx, q).Result(); return int(n), err }
		fill := func() error { return fillQueue(python, brokerURL, backend, q, n) }
		if err := fill(); err != nil {
			return nil, err
		}
		args := []string{"--broker", brokerURL, "-Q", q, "-l", "warning"}
		if concurrency > 0 {
			args = append(args, "-c", strconv.Itoa(concurrency))
		}
		if backend != "" {
			args = append(args, "--result-backend", backend)
		}
		r, err := drainWith(depth, n, goworker, args, nil)
		if err != nil {
			return nil, fmt.Errorf("go worker on redis: %w", err)
		}
		r.name, r.results = "gocelery worker", withResults
		all = append(all, r)

		if !skipPython {
			if err := fill(); err != nil {
				return nil, err
			}
			celery := filepath.Join(filepath.Dir(python), "celery")
			env := []string{"BENCH_BROKER=" + brokerURL, "BENCH_BACKEND=" + backend}
			r, err = drainWith(depth, n, celery, []string{"-A", "pyworker", "worker", "-P", "prefork",
				"-c", strconv.Itoa(cores), "-Q", q, "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"}, env)
			if err != nil {
				return nil, fmt.Errorf("python worker on redis: %w", err)
			}
			r.name, r.results = "Python Celery prefork", withResults
			all = append(all, r)
		}
		if !withResults {
			if err := fill(); err != nil {
				return nil, err
			}
			r, err = drainBRPOP(ctx, rdb, q, n)
			if err != nil {
				return nil, fmt.Errorf("bare BRPOP consumer: %w", err)
			}
			r.name = "bare BRPOP consumer"
			all = append(all, r)
		}
		rdb.Del(ctx, q, "unacked", "unacked_index")
	}
	return all, nil
}

// drainBRPOP takes n messages with one BRPOP each and nothing else: no
// decoding, no unacked bookkeeping, no ack.
func drainBRPOP(ctx context.Context, rdb *redis.Client, q string, n int) (result, error) {
	var start time.Time
	deadline := time.Now().Add(5 * time.Minute)
	for i := 0; i < n; i++ {
		if time.Now().After(deadline) {
			return result{}, errors.New("timed out")
		}
		if _, err := rdb.BRPop(ctx, time.Second, q).Result(); err != nil {
			if errors.Is(err, redis.Nil) {
				i--
				continue
			}
			return result{}, err
		}
		if i == 0 {
			start = time.Now()
		}
	}
	return result{rate: float64(n-1) / time.Since(start).Seconds()}, nil
}

// reportRedis prints the Redis rows and their ratios.
func reportRedis(all []result, n int) {
	fmt.Printf("\n%d interop.add tasks per run on the Redis broker, filled by Python Celery\n\n", n)
	rate := printRows(all)
	if a, b := rate["gocelery worker/none"], rate["Python Celery prefork/none"]; a > 0 && b > 0 {
		fmt.Printf("%-44s %6.1fx\n", "Go worker / Python prefork (no results)", a/b)
	}
	if a, b := rate["gocelery worker/none"], rate["bare BRPOP consumer/none"]; a > 0 && b > 0 {
		fmt.Printf("%-44s %6.0f%%\n", "Go worker / bare BRPOP consumer", 100*a/b)
	}
	if a, b := rate["gocelery worker/redis"], rate["gocelery worker/none"]; a > 0 && b > 0 {
		fmt.Printf("%-44s %6.0f%%\n", "Go worker with Redis results / without", 100*a/b)
	}
}

// redisBench builds the Go worker and runs and reports the Redis rows.
func redisBench(n int, brokerURL, resultsURL string, concurrency int, python string, skipPython bool) error {
	tmp, err := os.MkdirTemp("", "gocelery-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	goworker := filepath.Join(tmp, "goworker")
	if out, err := exec.Command("go", "build", "-o", goworker, "./interop/goworker").CombinedOutput(); err != nil {
		return fmt.Errorf("build goworker: %v\n%s", err, out)
	}
	all, err := runRedis(n, brokerURL, resultsURL, goworker, python, concurrency, runtime.NumCPU(), skipPython)
	if err != nil {
		return err
	}
	reportRedis(all, n)
	return nil
}
