// Command bench measures end-to-end task throughput on RabbitMQ in one
// run: a queue is filled with N interop.add tasks by Python Celery, then
// drained by (1) the gocelery Go worker, (2) Python Celery's prefork worker
// with concurrency = cores, and (3) a bare amqp091-go consumer with manual
// acks and the Go worker's prefetch, doing no work: the ceiling. Each is
// measured without results and with the Redis result backend, and the
// rates are printed with their ratios, plus the Go worker's RSS and CPU
// time per task.
//
//	go run ./bench -n 20000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/worker"
)

type result struct {
	name    string
	results bool
	rate    float64 // tasks per second
	cpuPer  time.Duration
	rssKB   int64
}

func main() {
	n := flag.Int("n", 20000, "tasks per run")
	brokerURL := flag.String("broker", "amqp://guest:guest@127.0.0.1:5672//", "RabbitMQ URL")
	redisURL := flag.String("redis", "redis://127.0.0.1:6379/3", "result backend for the runs with results")
	concurrency := flag.Int("c", 0, "Go worker concurrency (default: its own default)")
	python := flag.String("python", ".venv/bin/python", "Python with Celery 5.7 (relative to the repository root)")
	skipPython := flag.Bool("skip-python", false, "measure only the Go worker and the raw consumer")
	publishOnly := flag.Bool("publish-only", false, "measure only the publish rates (Go producer against Python send_task)")
	chordOnly := flag.Int("chord", 0, "measure only a chord of this many Go tasks (0: the chord of 1,000 runs after the other measures)")
	redisBroker := flag.String("redis-broker", "redis://127.0.0.1:6379/5", "Redis broker for the consumption runs on Redis (\"\" skips them)")
	redisOnly := flag.Bool("redis-only", false, "measure only the consumption runs on the Redis broker")
	goProfile := flag.String("goprofile", "", "write the Go worker's CPU profile (pprof) for its runs to FILE.noresults and FILE.results")
	flag.Parse()
	py, err := filepath.Abs(*python)
	switch {
	case err != nil:
	case *publishOnly:
		err = publishBench(*brokerURL, py, *n)
	case *chordOnly > 0:
		err = chordBench(*brokerURL, *redisURL, *chordOnly)
	case *redisOnly:
		err = redisBench(*n, *redisBroker, *redisURL, *concurrency, py, *skipPython)
	default:
		err = run(*n, *brokerURL, *redisURL, *concurrency, py, *skipPython, *goProfile)
		if err == nil && *redisBroker != "" {
			err = redisBench(*n, *redisBroker, *redisURL, *concurrency, py, *skipPython)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n int, brokerURL, redisURL string, concurrency int, python string, skipPython bool, goProfile string) error {
	tmp, err := os.MkdirTemp("", "gocelery-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	goworker := filepath.Join(tmp, "goworker")
	if out, err := exec.Command("go", "build", "-o", goworker, "./interop/goworker").CombinedOutput(); err != nil {
		return fmt.Errorf("build goworker: %v\n%s", err, out)
	}
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	cores := runtime.NumCPU()
	goConc := concurrency
	if goConc == 0 {
		goConc = 4 * runtime.GOMAXPROCS(0)
	}
	prefetch := goConc * 4

	var all []result
	for _, withResults := range []bool{false, true} {
		backend := ""
		if withResults {
			backend = redisURL
		}
		q := fmt.Sprintf("bench.%d.%t", os.Getpid(), withResults)
		fill := func() error { return fillQueue(python, brokerURL, backend, q, n) }
		depth, closeDepth, err := amqpDepth(conn, q)
		if err != nil {
			return err
		}
		defer closeDepth()

		if err := fill(); err != nil {
			return err
		}
		args := []string{"--broker", brokerURL, "-Q", q, "-l", "warning"}
		if concurrency > 0 {
			args = append(args, "-c", strconv.Itoa(concurrency))
		}
		if backend != "" {
			args = append(args, "--result-backend", backend)
		}
		profArgs := args
		if goProfile != "" {
			profArgs = append(args[:len(args):len(args)], "--cpuprofile", goProfile+map[bool]string{false: ".noresults", true: ".results"}[withResults])
		}
		r, err := drainWith(depth, n, goworker, profArgs, nil)
		if err != nil {
			return fmt.Errorf("go worker: %w", err)
		}
		r.name, r.results = "gocelery worker", withResults
		all = append(all, r)
		if !withResults {
			// The same with task events on (-E), as Flower needs them.
			if err := fill(); err != nil {
				return err
			}
			r, err := drainWith(depth, n, goworker, append(args, "-E"), nil)
			if err != nil {
				return fmt.Errorf("go worker -E: %w", err)
			}
			r.name, r.results = "gocelery worker -E", false
			all = append(all, r)
		}

		if !skipPython {
			if err := fill(); err != nil {
				return err
			}
			celery := filepath.Join(filepath.Dir(python), "celery")
			env := []string{"BENCH_BROKER=" + brokerURL, "BENCH_BACKEND=" + backend}
			r, err = drainWith(depth, n, celery, []string{"-A", "pyworker", "worker", "-P", "prefork",
				"-c", strconv.Itoa(cores), "-Q", q, "-l", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"}, env)
			if err != nil {
				return fmt.Errorf("python worker: %w", err)
			}
			r.name, r.results = "Python Celery prefork", withResults
			all = append(all, r)
		}

		if !withResults {
			if err := fill(); err != nil {
				return err
			}
			r, err = drainRaw(conn, q, n, prefetch)
			if err != nil {
				return fmt.Errorf("raw consumer: %w", err)
			}
			r.name = "raw amqp091 consumer"
			all = append(all, r)
		}
		ch, err := conn.Channel()
		if err == nil {
			ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	}
	if withRedisCleanup(redisURL) != nil {
		fmt.Fprintln(os.Stderr, "bench: could not clean the result keys")
	}
	report(all, n, cores, goConc, prefetch)
	fmt.Println()
	if err := publishBench(brokerURL, python, n); err != nil {
		return err
	}
	fmt.Println()
	if err := publishBench(redisURL, python, n); err != nil {
		return err
	}
	fmt.Println()
	return chordBench(brokerURL, redisURL, 1000)
}

// publishBench prints the Go producer's publish rate (confirms and
// mandatory on, as always) against Python send_task's on the same broker,
// in the same run.
func publishBench(brokerURL, python string, n int) error {
	pyRate, pyConfirmRate, err := pythonPublishRate(python, brokerURL, n)
	if err != nil {
		return fmt.Errorf("python send_task: %w", err)
	}
	fmt.Printf("publish %d interop.add on %s, rate once connected:\n", n, brokerURL)
	fmt.Printf("  %-46s %8.0f/s\n", "Python send_task (Celery defaults, no confirms)", pyRate)
	if !strings.HasPrefix(brokerURL, "redis") {
		fmt.Printf("  %-46s %8.0f/s\n", "Python send_task (confirm_publish=True)", pyConfirmRate)
	}
	isAMQP := !strings.HasPrefix(brokerURL, "redis")
	ceiling := 0.0
	if isAMQP {
		if ceiling, err = rawPublishRate(brokerURL, n); err != nil {
			return fmt.Errorf("raw publish: %w", err)
		}
		fmt.Printf("  %-46s %8.0f/s  (the broker's ceiling for this message on this machine)\n", "raw amqp091, same message, 2048 in flight", ceiling)
	}
	for _, workers := range []int{1, 8, 64} {
		rate, err := goPublishRate(brokerURL, n, workers)
		if err != nil {
			return fmt.Errorf("go producer: %w", err)
		}
		if !isAMQP {
			label := fmt.Sprintf("Go SendTask, %d goroutine(s)", workers)
			fmt.Printf("  %-46s %8.0f/s  %5.1fx Python\n", label, rate, rate/pyRate)
			continue
		}
		label := fmt.Sprintf("Go SendTask, confirms+mandatory, %d goroutine(s)", workers)
		fmt.Printf("  %-46s %8.0f/s  %5.1fx Python defaults, %5.1fx Python with confirms, %3.0f%% of raw\n",
			label, rate, rate/pyRate, rate/pyConfirmRate, 100*rate/ceiling)
	}
	for _, m := range []struct {
		label string
		mode  publishMode
	}{
		{"Go SendTaskAsync, 1 goroutine, 1024 unconfirmed", publishAsync},
		{"Go SendTasks, batches of 1000, 1 goroutine", publishBulk},
	} {
		rate, err := goPublishRateMode(brokerURL, n, 1, m.mode)
		if err != nil {
			return fmt.Errorf("go producer: %w", err)
		}
		if !isAMQP {
			fmt.Printf("  %-46s %8.0f/s  %5.1fx Python\n", m.label, rate, rate/pyRate)
			continue
		}
		fmt.Printf("  %-46s %8.0f/s  %5.1fx Python defaults, %5.1fx Python with confirms, %3.0f%% of raw\n",
			m.label, rate, rate/pyRate, rate/pyConfirmRate, 100*rate/ceiling)
	}
	if isAMQP {
		// delivery_mode=1 (apply_async's transient): RabbitMQ skips the disk.
		rate, err := goPublishRate(brokerURL, n, 64, producer.Transient())
		if err != nil {
			return fmt.Errorf("go producer: %w", err)
		}
		fmt.Printf("  %-46s %8.0f/s  %5.1fx Python defaults, %5.1fx Python with confirms\n",
			"Go SendTask, transient, confirms, 64 goroutines", rate, rate/pyRate, rate/pyConfirmRate)
	}
	return nil
}

// rawPublishRate publishes n copies of a typical Celery message (the
// headers of interop.add, persistent) with bare amqp091-go, confirms on and
// up to 2048 unconfirmed: what the broker itself takes per second.
func rawPublishRate(url string, n int) (float64, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q := fmt.Sprintf("bench.raw.%d", os.Getpid())
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return 0, err
	}
	defer deleteQueue(url, q)
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	id := "0c5b3e8e-1f1e-4c3d-9b1e-1234567890ab"
	m := amqp.Publishing{
		Headers: amqp.Table{"lang": "py", "task": "interop.add", "id": id, "shadow": nil, "eta": nil,
			"expires": nil, "group": nil, "group_index": nil, "retries": int32(0), "timelimit": []any{nil, nil},
			"root_id": id, "parent_id": nil, "argsrepr": "(1, 1)", "kwargsrepr": "{}", "origin": "gen1@host",
			"ignore_result": false, "replaced_task_nesting": int32(0), "stamped_headers": nil, "stamps": amqp.Table{}},
		Body:        []byte(`[[1, 1], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`),
		ContentType: "application/json", ContentEncoding: "utf-8", DeliveryMode: 2, CorrelationId: id,
	}
	inflight := make(chan *amqp.DeferredConfirmation, 2048)
	done := make(chan bool)
	go func() {
		ok := true
		for dc := range inflight {
			ok = dc.Wait() && ok
		}
		done <- ok
	}()
	start := time.Now()
	for range n {
		dc, err := ch.PublishWithDeferredConfirm("", q, true, false, m)
		if err != nil {
			close(inflight)
			<-done
			return 0, err
		}
		inflight <- dc
	}
	close(inflight)
	if !<-done {
		return 0, errors.New("a publish was nacked")
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// pythonPublishRate runs bench/pyworker.py pubrate.
func pythonPublishRate(python, brokerURL string, n int) (plain, confirmed float64, err error) {
	q := fmt.Sprintf("bench.pypub.%d", os.Getpid())
	cmd := exec.Command(python, "pyworker.py", "pubrate", q, strconv.Itoa(n))
	cmd.Dir = "bench"
	cmd.Env = append(os.Environ(), "BENCH_BROKER="+brokerURL)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	deleteQueue(brokerURL, q)
	if err != nil {
		return 0, 0, err
	}
	_, err = fmt.Sscan(string(out), &plain, &confirmed)
	return plain, confirmed, err
}

// deleteQueue removes a bench queue from either broker.
func deleteQueue(url, q string) {
	if strings.HasPrefix(url, "redis") {
		opt, err := redis.ParseURL(url)
		if err == nil {
			c := redis.NewClient(opt)
			c.Del(context.Background(), q)
			c.Close()
		}
		return
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		ch.QueueDelete(q, false, false, false)
	}
}

// goPublishRate publishes n tasks with producer.SendTask from the given
// number of goroutines (publisher confirms on) to a fresh queue, then
// deletes it.
func goPublishRate(url string, n, workers int, opts ...producer.Option) (float64, error) {
	return goPublishRateMode(url, n, workers, publishSync, opts...)
}

// publishMode is how goPublishRateMode's goroutines send.
type publishMode int

const (
	publishSync  publishMode = iota // SendTask: each call waits for its confirm
	publishAsync                    // SendTaskAsync, Sent 1024 calls later
	publishBulk                     // SendTasks of 1000 calls
)

func goPublishRateMode(url string, n, workers int, mode publishMode, opts ...producer.Option) (float64, error) {
	ctx := context.Background()
	b, err := worker.DialBroker(ctx, url, worker.DialConfig{})
	if err != nil {
		return 0, err
	}
	defer b.Close()
	q := fmt.Sprintf("bench.pub.%d", os.Getpid())
	p := producer.New(b, nil, producer.Config{DefaultQueue: q})
	if _, err := p.SendTask(ctx, "interop.add", []any{0, 0}, nil); err != nil {
		return 0, err
	}
	errs := make(chan error, workers)
	start := time.Now()
	for w := range workers {
		go func() {
			switch mode {
			case publishAsync:
				const window = 1024
				var inFlight []*producer.AsyncResult
				for i := w; i < n; i += workers {
					r, err := p.SendTaskAsync(ctx, "interop.add", []any{i, i}, nil, opts...)
					if err != nil {
						errs <- err
						return
					}
					inFlight = append(inFlight, r)
					if len(inFlight) > window {
						if err := inFlight[0].Sent(ctx); err != nil {
							errs <- err
							return
						}
						inFlight = inFlight[1:]
					}
				}
				for _, r := range inFlight {
					if err := r.Sent(ctx); err != nil {
						errs <- err
						return
					}
				}
			case publishBulk:
				var calls []producer.Call
				for i := w; i < n; i += workers {
					calls = append(calls, producer.Call{Name: "interop.add", Args: []any{i, i}, Options: opts})
					if len(calls) == 1000 || i+workers >= n {
						if _, err := p.SendTasks(ctx, calls); err != nil {
							errs <- err
							return
						}
						calls = calls[:0]
					}
				}
			default:
				for i := w; i < n; i += workers {
					if _, err := p.SendTask(ctx, "interop.add", []any{i, i}, nil, opts...); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	rate := float64(n) / time.Since(start).Seconds()
	deleteQueue(url, q)
	return rate, nil
}

func fillQueue(python, brokerURL, backend, queue string, n int) error {
	cmd := exec.Command(python, "pyworker.py", "fill", queue, strconv.Itoa(n))
	cmd.Dir = "bench"
	cmd.Env = append(os.Environ(), "BENCH_BROKER="+brokerURL, "BENCH_BACKEND="+backend)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	return nil
}

// drainWith starts a worker process on the filled queue and times it from
// the first message taken to the last one, excluding start-up.
func drainWith(depth func() (int, error), n int, bin string, args, env []string) (result, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = "bench"
	cmd.Env = append(os.Environ(), env...)
	stderr, _ := os.CreateTemp("", "bench-worker-*.log")
	defer os.Remove(stderr.Name())
	cmd.Stderr, cmd.Stdout = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		if slices.Contains(args, "--cpuprofile") { // a warm stop writes the profile
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			select {
			case <-exited:
				return
			case <-time.After(15 * time.Second):
			}
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()
	start, end, err := watchDrain(depth, n, 5*time.Minute)
	if err != nil {
		tail, _ := os.ReadFile(stderr.Name())
		return result{}, fmt.Errorf("%w\n%s", err, lastLines(string(tail), 20))
	}
	cpuTicks, rss := procUsage(cmd.Process.Pid)
	r := result{rate: float64(n) / end.Sub(start).Seconds()}
	if bin != "" && strings.HasSuffix(bin, "goworker") {
		r.cpuPer = time.Duration(float64(cpuTicks) * float64(time.Second) / 100 / float64(n))
		r.rssKB = rss
	}
	return r, nil
}

// watchDrain polls the queue depth: the clock starts when it first drops
// and stops when no message is ready. At that point at most one prefetch
// window (32 of 20,000 by default, 0.16%) is still being worked on.
func watchDrain(depth func() (int, error), n int, limit time.Duration) (start, end time.Time, err error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		left, err := depth()
		if err != nil {
			return start, end, err
		}
		now := time.Now()
		if start.IsZero() && left < n {
			start = now
		}
		if !start.IsZero() && left == 0 {
			return start, now, nil
		}
		time.Sleep(time.Millisecond)
	}
	return start, end, errors.New("queue did not drain in time")
}

// amqpDepth reads a RabbitMQ queue's ready count.
func amqpDepth(conn *amqp.Connection, q string) (func() (int, error), func(), error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, err
	}
	return func() (int, error) {
		st, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		return st.Messages, err
	}, func() { ch.Close() }, nil
}

// drainRaw is the ceiling: amqp091-go with manual acks, no decoding, no work.
func drainRaw(conn *amqp.Connection, q string, n, prefetch int) (result, error) {
	ch, err := conn.Channel()
	if err != nil {
		return result{}, err
	}
	defer ch.Close()
	if err := ch.Qos(prefetch, 0, true); err != nil {
		return result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	deliveries, err := ch.ConsumeWithContext(ctx, q, "", false, false, false, false, nil)
	if err != nil {
		return result{}, err
	}
	var start time.Time
	var cpu0 time.Duration
	for i := 0; i < n; i++ {
		select {
		case d := <-deliveries:
			if i == 0 {
				start, cpu0 = time.Now(), selfCPU()
			}
			if err := d.Ack(false); err != nil {
				return result{}, err
			}
		case <-ctx.Done():
			return result{}, errors.New("raw consumer timed out")
		}
	}
	// n-1 intervals between the first and the last delivery.
	return result{rate: float64(n-1) / time.Since(start).Seconds(), cpuPer: (selfCPU() - cpu0) / time.Duration(n-1)}, nil
}

// selfCPU is this process's CPU time so far (user and system): while the
// raw consumer drains, nothing else here runs, so it is the CPU per task
// amqp091-go itself spends receiving and acking a Celery message.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procUsage returns CPU clock ticks (utime+stime) and peak RSS in KiB.
func procUsage(pid int) (ticks int64, rssKB int64) {
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 13 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				ticks = u + st
			}
		}
	}
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				rssKB, _ = strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			}
		}
	}
	return ticks, rssKB
}

func withRedisCleanup(url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	return c.FlushDB(context.Background()).Err()
}

func lastLines(s string, k int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, "\n")
}

func report(all []result, n, cores, conc, prefetch int) {
	fmt.Printf("\n%d interop.add tasks per run, filled by Python Celery; %d cores; Go worker concurrency %d, prefetch %d\n\n", n, cores, conc, prefetch)
	rate := printRows(all)
	ratio := func(label, a, b string) {
		if rate[a] > 0 && rate[b] > 0 {
			fmt.Printf("%-44s %6.1fx\n", label, rate[a]/rate[b])
		}
	}
	ratio("Go worker / Python prefork (no results)", "gocelery worker/none", "Python Celery prefork/none")
	if a, b := rate["gocelery worker -E/none"], rate["gocelery worker/none"]; a > 0 && b > 0 {
		fmt.Printf("%-44s %6.0f%%\n", "Go worker with task events (-E) / without", 100*a/b)
	}
	ratio("Go worker / Python prefork (Redis results)", "gocelery worker/redis", "Python Celery prefork/redis")
	if r := rate["raw amqp091 consumer/none"]; r > 0 {
		fmt.Printf("%-44s %6.0f%%\n", "Go worker / raw consumer (no results)", 100*rate["gocelery worker/none"]/r)
	}
}

// printRows prints one line per run and returns the rates by
// "name/results".
func printRows(all []result) map[string]float64 {
	fmt.Printf("%-24s %-8s %12s\n", "consumer", "results", "tasks/s")
	rate := map[string]float64{}
	for _, r := range all {
		res := "none"
		if r.results {
			res = "redis"
		}
		rate[r.name+"/"+res] = r.rate
		fmt.Printf("%-24s %-8s %12.0f", r.name, res, r.rate)
		switch {
		case r.rssKB > 0:
			fmt.Printf("   peak RSS %.1f MB, CPU %.1f µs/task", float64(r.rssKB)/1024, float64(r.cpuPer.Nanoseconds())/1000)
		case r.cpuPer > 0:
			fmt.Printf("   CPU %.1f µs/task (this process: the client library's floor)", float64(r.cpuPer.Nanoseconds())/1000)
		}
		fmt.Println()
	}
	fmt.Println()
	return rate
}
