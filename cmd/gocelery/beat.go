package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/broker/dial"
	"github.com/gocelery/gocelery/internal/redisurl"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

const beatUsage = `usage:
  gocelery beat [flags]                      run the scheduler (any number of replicas; one leads)
  gocelery beat list [--json]                the entries, their next run and what the last run did
  gocelery beat add NAME --task T --trigger "*/15 * * * *" [--args JSON] [--kwargs JSON] [--queue Q] ...
  gocelery beat enable|disable|remove|run-now NAME

Triggers: a crontab "minute hour day-of-month month day-of-week" (Celery's
crontab.from_string; day of week 0 = Sunday, names like mon-fri; a
restricted day of month AND day of week must both match), "every 10s", or
"at 2026-12-24T18:00:00Z" (once). The store is celery-redbeat's layout: a
Python "celery beat -S redbeat.RedBeatScheduler" with the same
redbeat_key_prefix shares it (and the lock).

With --store postgres://user:pw@host/db [--schema periodic_task|django] the
schedule is in PostgreSQL instead ("gocelery beat migrate --store ..."
creates the periodic_task table); every command above works there too.`

// runBeat is "gocelery beat": the scheduler, or a store subcommand.
func runBeat(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	if usesPostgres(args) { // --store postgres://... or "migrate": beat_postgres.go
		return runBeatPostgres(ctx, args, stdout, stderr)
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, rest := args[0], args[1:]
		switch sub {
		case "list":
			return beatList(ctx, rest, stdout, stderr)
		case "add":
			return beatAdd(ctx, rest, stdout, stderr)
		case "enable", "disable", "remove", "run-now":
			return beatNamed(ctx, sub, rest, stdout, stderr)
		case "help":
			fmt.Fprintln(stdout, beatUsage)
			return nil
		}
		return fmt.Errorf("unknown subcommand %q\n%s", sub, beatUsage)
	}
	return beatRun(ctx, args, stderr)
}

// storeFlags are the flags every beat command has.
type storeFlags struct {
	redisURL, prefix string
	// options are redbeat's redis options for a sentinel:// store URL
	// (master_name, sentinel_kwargs, socket_timeout), Celery's names.
	options map[string]any
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (sf *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&sf.redisURL, "redis", envOr("REDBEAT_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis holding the schedule (redbeat_redis_url; env REDBEAT_REDIS_URL; gocelery beat defaults to the Redis result backend, then a Redis broker)")
	fs.StringVar(&sf.prefix, "key-prefix", beat.DefaultKeyPrefix, "key prefix (redbeat_key_prefix)")
	sf.options = make(map[string]any)
	fs.Var(dial.TransportOptionsFlag(sf.options), "redis-transport-option", "KEY=VALUE for the store's connection, repeatable (master_name=mymaster for a sentinel:// --redis); VALUE may be JSON")
}

func (sf *storeFlags) open() (goredis.UniversalClient, *beat.Store, error) {
	c, err := redisurl.NewClient(sf.redisURL, sf.options, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("--redis: %w", err)
	}
	return c.Client, beat.NewStore(c.Client, sf.prefix), nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func beatRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat", stderr)
	var sf storeFlags
	sf.register(fs)
	brokerURL := fs.String("broker", envOr("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"), "broker URL (amqp://, redis://; env CELERY_BROKER_URL)")
	backendURL := fs.String("result-backend", envOr("CELERY_RESULT_BACKEND", ""), "result backend URL (redis://, sentinel://): the last run's state and result are recorded on the entry")
	bopts, ropts := make(map[string]any), make(map[string]any)
	fs.Var(dial.TransportOptionsFlag(bopts), "broker-transport-option", "KEY=VALUE of broker_transport_options, repeatable; VALUE may be JSON")
	fs.Var(dial.TransportOptionsFlag(ropts), "result-backend-transport-option", "KEY=VALUE of result_backend_transport_options, repeatable; VALUE may be JSON")
	file := fs.String("schedule-file", "", "YAML schedule file synced into the store on start (entries removed from it are removed)")
	ttl := fs.Duration("lock-ttl", beat.DefaultLockTTL, "leader lock TTL: a dead leader is replaced within it")
	missed := fs.String("missed", "once", "a run found late (downtime, clock jump): once (send it once) or skip (if later than --grace)")
	grace := fs.Duration("grace", time.Second, "with --missed skip: how late a run may still be sent")
	replicas := fs.Int("replicas", 1, "schedulers in this process (each takes part in the election; for trials)")
	queue := fs.String("default-queue", "celery", "queue for entries that name none (task_default_queue)")
	syncEvery := fs.Duration("sync-interval", 30*time.Second, "re-read the whole store this often (changes made by gocelery are seen at once)")
	level := fs.String("loglevel", "info", "debug, info, warning, error")
	cfgFile := celeryConfig{brokerOptions: bopts, backendOptions: ropts}
	cfgFile.register(fs)
	fs.Usage = func() { fmt.Fprintln(stderr, beatUsage+"\n\nflags:"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfgFile.apply(fs, stderr); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.Replace(strings.ToLower(*level), "warning", "warn", 1))); err != nil {
		return fmt.Errorf("--loglevel: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg := beat.Config{KeyPrefix: sf.prefix, LockTTL: *ttl, Grace: *grace, SyncInterval: *syncEvery, Logger: log}
	switch *missed {
	case "once":
		cfg.Missed = beat.MissedRunOnce
	case "skip":
		cfg.Missed = beat.MissedSkip
	default:
		return fmt.Errorf("--missed: want once or skip, got %q", *missed)
	}
	if *replicas < 1 {
		return errors.New("--replicas: at least 1")
	}
	// Like redbeat_redis_url: unset, the store is the Redis result backend,
	// else the Redis broker.
	redisSet := os.Getenv("REDBEAT_REDIS_URL") != ""
	fs.Visit(func(f *flag.Flag) { redisSet = redisSet || f.Name == "redis" })
	if !redisSet {
		for i, u := range []string{*backendURL, *brokerURL} {
			if strings.HasPrefix(u, "redis://") || strings.HasPrefix(u, "rediss://") || redisurl.IsSentinel(u) {
				sf.redisURL = u
				if len(sf.options) == 0 { // the same connection as that URL's
					sf.options = []map[string]any{ropts, bopts}[i]
				}
				break
			}
		}
	}
	rdb, store, err := sf.open()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if *file != "" {
		entries, err := beat.LoadFile(*file)
		if err != nil {
			return err
		}
		if err := store.Sync(ctx, entries); err != nil {
			return err
		}
		log.Info("beat: schedule file synced", "file", *file, "entries", len(entries))
	}
	b, closeBroker, err := openBeatBroker(ctx, *brokerURL, bopts, log)
	if err != nil {
		return err
	}
	defer closeBroker()
	var backend *results.Redis
	if *backendURL != "" {
		if backend, err = results.OpenRedis(*backendURL, results.Config{TransportOptions: ropts}); err != nil {
			return err
		}
		defer backend.Close()
		cfg.Results = backend
	}
	p := producer.New(b, backend, producer.Config{DefaultQueue: *queue})
	log.Info("beat ready", "replicas", *replicas, "lock_ttl", *ttl, "key_prefix", sf.prefix)
	var wg sync.WaitGroup
	errs := make([]error, *replicas)
	for i := range *replicas {
		c := cfg
		c.Logger = log.With("replica", i)
		s := beat.New(rdb, p, c)
		wg.Go(func() { errs[i] = s.Run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func openBeatBroker(ctx context.Context, url string, topts map[string]any, log *slog.Logger) (producer.Broker, func(), error) {
	b, err := dial.Broker(ctx, url, dial.Config{Logger: log, TransportOptions: topts})
	if err != nil {
		return nil, nil, err
	}
	return b, func() { b.Close() }, nil
}

func beatList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat list", stderr)
	var sf storeFlags
	sf.register(fs)
	asJSON := fs.Bool("json", false, "one JSON object per entry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rdb, store, err := sf.open()
	if err != nil {
		return err
	}
	defer rdb.Close()
	entries, listErr := store.List(ctx)
	if entries == nil && listErr != nil {
		return listErr
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			next := e.NextRun(e.LastRunAt)
			if err := enc.Encode(map[string]any{
				"name": e.Name, "description": e.Description, "task": e.Task, "args": e.Args, "kwargs": e.Kwargs,
				"options": e.Options, "trigger": fmt.Sprint(e.Schedule), "enabled": e.Enabled,
				"start_time": optTime(e.StartTime), "end_time": optTime(e.EndTime), "next_run": optTime(next),
				"last_run_at": optTime(e.LastRunAt), "total_run_count": e.TotalRunCount, "log_path": e.LogPath,
				"last": e.Last,
			}); err != nil {
				return err
			}
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tENABLED\tTRIGGER\tTASK\tNEXT RUN\tLAST RUN\tRUNS\tLAST STATUS\tLAST TASK ID\tRESULT / ERROR")
		for _, e := range entries {
			res := e.Last.Error
			if res == "" && e.Last.Result != nil {
				b, _ := json.Marshal(e.Last.Result)
				res = string(b)
			}
			if len(res) > 60 {
				res = res[:57] + "..."
			}
			fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.Name, e.Enabled, e.Schedule, e.Task,
				fmtTime(e.NextRun(e.LastRunAt)), fmtTime(e.LastRunAt), e.TotalRunCount, dash(e.Last.Status), dash(e.Last.TaskID), res)
		}
		tw.Flush()
	}
	if listErr != nil {
		fmt.Fprintln(stderr, "gocelery beat list: some entries could not be read:", listErr)
	}
	return nil
}

func optTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// nameAndFlags splits "NAME --flags..." (the name may also come last).
func nameAndFlags(fs *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if name == "" {
		return "", errors.New("name the entry")
	}
	return name, nil
}

func beatAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat add", stderr)
	var sf storeFlags
	sf.register(fs)
	var fe beat.FileEntry
	fs.StringVar(&fe.Task, "task", "", "task name (required)")
	fs.StringVar(&fe.Trigger, "trigger", "", `crontab ("*/15 * * * mon-fri"), "every 10s" or "at <RFC 3339 time>" (required)`)
	fs.StringVar(&fe.Description, "description", "", "what the entry is for")
	fs.StringVar(&fe.Timezone, "timezone", "", "zone the crontab is read in (default UTC)")
	fs.BoolVar(&fe.Relative, "relative", false, "interval: round to its resolution, as Celery's relative=True")
	fs.StringVar(&fe.LogPath, "log-path", "", "where the task's log goes (kept for operators)")
	argsJSON := fs.String("args", "", "positional args, a JSON list")
	kwargsJSON := fs.String("kwargs", "", "keyword args, a JSON object")
	optsJSON := fs.String("options", "", `apply_async options, a JSON object ("queue", "exchange", "routing_key", "priority", "expires", "headers")`)
	queue := fs.String("queue", "", "queue (sets options.queue)")
	start := fs.String("start", "", "no run before this RFC 3339 time")
	end := fs.String("end", "", "no run after this RFC 3339 time")
	disabled := fs.Bool("disabled", false, "add it disabled")
	name, err := nameAndFlags(fs, args)
	if err != nil {
		return err
	}
	fe.Name = name
	for _, j := range []struct {
		flag, val string
		into      any
	}{{"--args", *argsJSON, &fe.Args}, {"--kwargs", *kwargsJSON, &fe.Kwargs}, {"--options", *optsJSON, &fe.Options}} {
		if j.val == "" {
			continue
		}
		d := json.NewDecoder(strings.NewReader(j.val))
		d.UseNumber()
		if err := d.Decode(j.into); err != nil {
			return fmt.Errorf("%s: %w", j.flag, err)
		}
	}
	if *queue != "" {
		if fe.Options == nil {
			fe.Options = map[string]any{}
		}
		fe.Options["queue"] = *queue
	}
	for _, tf := range []struct {
		flag, val string
		into      *time.Time
	}{{"--start", *start, &fe.StartTime}, {"--end", *end, &fe.EndTime}} {
		if tf.val == "" {
			continue
		}
		if *tf.into, err = time.Parse(time.RFC3339, tf.val); err != nil {
			return fmt.Errorf("%s: %w", tf.flag, err)
		}
	}
	enabled := !*disabled
	fe.Enabled = &enabled
	e, err := fe.Entry()
	if err != nil {
		return err
	}
	rdb, store, err := sf.open()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := store.Put(ctx, e); err != nil {
		return err
	}
	got, err := store.Get(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "added %s: %s %s, next run %s\n", name, e.Task, e.Schedule, fmtTime(got.NextRun(got.LastRunAt)))
	return nil
}

func beatNamed(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat "+sub, stderr)
	var sf storeFlags
	sf.register(fs)
	name, err := nameAndFlags(fs, args)
	if err != nil {
		return err
	}
	rdb, store, err := sf.open()
	if err != nil {
		return err
	}
	defer rdb.Close()
	switch sub {
	case "enable", "disable":
		err = store.SetEnabled(ctx, name, sub == "enable")
	case "remove":
		err = store.Remove(ctx, name)
	case "run-now":
		err = store.RunNow(ctx, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s\n", name, map[string]string{"enable": "enabled", "disable": "disabled",
		"remove": "removed", "run-now": "will run at once"}[sub])
	return nil
}
