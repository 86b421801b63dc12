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

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/beat/pgbeat"
	"github.com/gocelery/gocelery/broker/dial"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/results"
)

const beatPostgresUsage = `usage (schedule in PostgreSQL):
  gocelery beat migrate --store postgres://user:pw@host/db [--schema periodic_task|django]
  gocelery beat --store postgres://... [--schema periodic_task|django] [flags]
  gocelery beat list|add|enable|disable|remove|run-now ... --store postgres://... [--schema ...]

--schema periodic_task (default): the periodic_task table that "migrate"
creates (idempotent), with triggers that announce every change.
--schema django: django-celery-beat 2.9's tables (run Django's migrate
first; "migrate" then only adds gocelery_beat_leader and gocelery_beat_state,
which gocelery beat also creates itself). Env GOCELERY_BEAT_STORE and
GOCELERY_BEAT_SCHEMA set the defaults.`

// usesPostgres reports whether a beat command line is for a PostgreSQL
// store: "migrate", a --store postgres:// flag, or GOCELERY_BEAT_STORE.
func usesPostgres(args []string) bool {
	if len(args) > 0 && args[0] == "migrate" {
		return true
	}
	isPG := func(u string) bool {
		return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
	}
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "store" {
			continue
		}
		if !hasVal && i+1 < len(args) {
			val = args[i+1]
		}
		return isPG(val)
	}
	return isPG(os.Getenv("GOCELERY_BEAT_STORE"))
}

// pgFlags are the flags of every beat command on PostgreSQL.
type pgFlags struct {
	url, schema string
}

func (pf *pgFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&pf.url, "store", os.Getenv("GOCELERY_BEAT_STORE"), "PostgreSQL holding the schedule (postgres://user:password@host:5432/db; env GOCELERY_BEAT_STORE)")
	fs.StringVar(&pf.schema, "schema", envOr("GOCELERY_BEAT_SCHEMA", string(pgbeat.SchemaPeriodicTask)), "tables: periodic_task (gocelery beat migrate creates it) or django (django-celery-beat's)")
}

func (pf *pgFlags) open(ctx context.Context) (*pgxpool.Pool, *pgbeat.Store, error) {
	schema, err := pgbeat.ParseSchema(pf.schema)
	if err != nil {
		return nil, nil, fmt.Errorf("--schema: %w", err)
	}
	if pf.url == "" {
		return nil, nil, errors.New("--store: name the PostgreSQL database (postgres://...)")
	}
	pool, err := pgxpool.New(ctx, pf.url)
	if err != nil {
		return nil, nil, fmt.Errorf("--store: %w", err)
	}
	st, err := pgbeat.NewStore(pool, schema)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return pool, st, nil
}

// runBeatPostgres is "gocelery beat" and its subcommands on PostgreSQL.
func runBeatPostgres(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, rest := args[0], args[1:]
		switch sub {
		case "migrate":
			return beatPGMigrate(ctx, rest, stdout, stderr)
		case "list":
			return beatPGList(ctx, rest, stdout, stderr)
		case "add":
			return beatPGAdd(ctx, rest, stdout, stderr)
		case "enable", "disable", "remove", "run-now":
			return beatPGNamed(ctx, sub, rest, stdout, stderr)
		}
		return fmt.Errorf("unknown subcommand %q\n%s", sub, beatPostgresUsage)
	}
	return beatPGRun(ctx, args, stderr)
}

func beatPGMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat migrate", stderr)
	var pf pgFlags
	pf.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, st, err := pf.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := pgbeat.Migrate(ctx, pool, st.Schema()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrated: schema %s is ready\n", st.Schema())
	return nil
}

func beatPGRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat", stderr)
	var pf pgFlags
	pf.register(fs)
	brokerURL := fs.String("broker", envOr("CELERY_BROKER_URL", "amqp://guest:guest@localhost:5672//"), "broker URL (amqp://, redis://; env CELERY_BROKER_URL)")
	backendURL := fs.String("result-backend", envOr("CELERY_RESULT_BACKEND", ""), "result backend URL (redis://, sentinel://): each run's state and result are recorded on the entry")
	bopts, ropts := make(map[string]any), make(map[string]any)
	fs.Var(dial.TransportOptionsFlag(bopts), "broker-transport-option", "KEY=VALUE of broker_transport_options, repeatable; VALUE may be JSON")
	fs.Var(dial.TransportOptionsFlag(ropts), "result-backend-transport-option", "KEY=VALUE of result_backend_transport_options, repeatable; VALUE may be JSON")
	file := fs.String("schedule-file", "", "YAML schedule file written into the store on start")
	ttl := fs.Duration("lock-ttl", beat.DefaultLockTTL, "how long a leader whose session checks fail keeps sending (a dead leader's lock is freed when its session ends)")
	missed := fs.String("missed", "once", "a run found late (downtime, clock jump): once (send it once) or skip (if later than --grace)")
	grace := fs.Duration("grace", time.Second, "with --missed skip: how late a run may still be sent")
	replicas := fs.Int("replicas", 1, "schedulers in this process (each takes part in the election; for trials)")
	queue := fs.String("default-queue", "celery", "queue for entries that name none (task_default_queue)")
	syncEvery := fs.Duration("sync-interval", 30*time.Second, "re-read the whole store this often")
	poll := fs.Duration("poll-interval", time.Second, "django: how often Django's change marker and a checksum of its rows are read")
	level := fs.String("loglevel", "info", "debug, info, warning, error")
	fs.Usage = func() { fmt.Fprintln(stderr, beatPostgresUsage+"\n\nflags:"); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.Replace(strings.ToLower(*level), "warning", "warn", 1))); err != nil {
		return fmt.Errorf("--loglevel: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	cfg := pgbeat.Config{Config: beat.Config{LockTTL: *ttl, Grace: *grace, SyncInterval: *syncEvery, Logger: log}, PollInterval: *poll}
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
	pool, st, err := pf.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *file != "" {
		entries, err := beat.LoadFile(*file)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := st.Put(ctx, e); err != nil {
				return err
			}
		}
		log.Info("beat: schedule file written", "file", *file, "entries", len(entries))
	}
	b, err := dial.Broker(ctx, *brokerURL, dial.Config{Logger: log})
	if err != nil {
		return err
	}
	defer b.Close()
	var backend *results.Redis
	if *backendURL != "" {
		if backend, err = results.OpenRedis(*backendURL, results.Config{TransportOptions: ropts}); err != nil {
			return err
		}
		defer backend.Close()
		cfg.Results = backend
	}
	p := producer.New(b, backend, producer.Config{DefaultQueue: *queue})
	log.Info("beat ready", "replicas", *replicas, "lock_ttl", *ttl, "store", "postgres", "schema", st.Schema())
	var wg sync.WaitGroup
	errs := make([]error, *replicas)
	for i := range *replicas {
		c := cfg
		c.Logger = log.With("replica", i)
		s := pgbeat.New(st, p, c)
		wg.Go(func() { errs[i] = s.Run(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func beatPGList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat list", stderr)
	var pf pgFlags
	pf.register(fs)
	asJSON := fs.Bool("json", false, "one JSON object per entry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pool, st, err := pf.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	entries, listErr := st.List(ctx)
	if entries == nil && listErr != nil {
		return listErr
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, e := range entries {
			if err := enc.Encode(map[string]any{
				"name": e.Name, "description": e.Description, "task": e.Task, "args": e.Args, "kwargs": e.Kwargs,
				"options": e.Options, "trigger": fmt.Sprint(e.Schedule), "enabled": e.Enabled,
				"start_time": optTime(e.StartTime), "end_time": optTime(e.EndTime), "next_run": optTime(e.NextRun(e.LastRunAt)),
				"last_run_at": optTime(e.LastRunAt), "total_run_count": e.TotalRunCount, "log_path": e.LogPath,
				"last": e.Last,
			}); err != nil {
				return err
			}
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tENABLED\tTRIGGER\tTASK\tNEXT RUN\tLAST RUN\tRUNS\tLAST STATUS\tLAST TASK ID")
		for _, e := range entries {
			next := time.Time{}
			if e.Enabled {
				next = e.NextRun(e.LastRunAt)
			}
			fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Name, e.Enabled, e.Schedule, e.Task,
				fmtTime(next), fmtTime(e.LastRunAt), e.TotalRunCount, dash(e.Last.Status), dash(e.Last.TaskID))
		}
		tw.Flush()
	}
	if listErr != nil {
		fmt.Fprintln(stderr, "gocelery beat list: some entries could not be read:", listErr)
	}
	return nil
}

func beatPGAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat add", stderr)
	var pf pgFlags
	pf.register(fs)
	var fe beat.FileEntry
	fs.StringVar(&fe.Task, "task", "", "task name (required)")
	fs.StringVar(&fe.Trigger, "trigger", "", `crontab ("*/15 * * * mon-fri"), "every 10s" or "at <RFC 3339 time>" (required)`)
	fs.StringVar(&fe.Description, "description", "", "what the entry is for")
	fs.StringVar(&fe.Timezone, "timezone", "", "zone the crontab is read in (default UTC)")
	fs.StringVar(&fe.LogPath, "log-path", "", "where the task's log goes (periodic_task only)")
	argsJSON := fs.String("args", "", "positional args, a JSON list")
	kwargsJSON := fs.String("kwargs", "", "keyword args, a JSON object")
	optsJSON := fs.String("options", "", `apply_async options, a JSON object ("queue", "exchange", "routing_key", "priority", "expires", "headers")`)
	queue := fs.String("queue", "", "queue (sets options.queue)")
	start := fs.String("start", "", "no run before this RFC 3339 time")
	end := fs.String("end", "", "no run after this RFC 3339 time (django: expires)")
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
	pool, st, err := pf.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := st.Put(ctx, e); err != nil {
		return err
	}
	got, err := st.Get(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "added %s: %s %s, next run %s\n", name, e.Task, e.Schedule, fmtTime(got.NextRun(got.LastRunAt)))
	return nil
}

func beatPGNamed(ctx context.Context, sub string, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gocelery beat "+sub, stderr)
	var pf pgFlags
	pf.register(fs)
	name, err := nameAndFlags(fs, args)
	if err != nil {
		return err
	}
	pool, st, err := pf.open(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	switch sub {
	case "enable", "disable":
		err = st.SetEnabled(ctx, name, sub == "enable")
	case "remove":
		err = st.Remove(ctx, name)
	case "run-now":
		err = st.RunNow(ctx, name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s\n", name, map[string]string{"enable": "enabled", "disable": "disabled",
		"remove": "removed", "run-now": "will run at once"}[sub])
	return nil
}
