package pgbeat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gocelery/gocelery/beat"
)

// Store keeps entries in PostgreSQL in one of two schemas. It is safe for
// concurrent use. Every change it makes is announced (NOTIFY), so a running
// leader sees it at once.
type Store struct {
	pool   *pgxpool.Pool
	schema Schema
}

// NewStore returns a store on pool in schema.
func NewStore(pool *pgxpool.Pool, schema Schema) (*Store, error) {
	if _, err := ParseSchema(string(schema)); err != nil {
		return nil, err
	}
	return &Store{pool: pool, schema: schema}, nil
}

// Schema is the store's schema.
func (s *Store) Schema() Schema { return s.schema }

// Check reports missing tables (ErrNoTables) or an unreachable database.
func (s *Store) Check(ctx context.Context) error { return checkTables(ctx, s.pool, s.schema) }

// entry is a stored entry with what the claim compares: the row's values
// as read, so a claim made from a stale read changes nothing.
type entry struct {
	*beat.Entry
	id      int64
	dbLast  *time.Time // last_run_at / last_run_time as stored (nil: NULL)
	count   int        // total_run_count as stored
	version time.Time  // updated_at / date_changed as stored
	runNow  *time.Time // gocelery_beat_state.run_now_at as stored
	oneOff  bool
	claim   claim
	// expired: a django row whose expires has passed (Django disables it).
	expired bool
}

// claim is the run being sent, in gocelery_beat_state.
type claim struct {
	DueMS  int64
	TaskID string
	Fence  int64
	State  string // claimed, sent, skipped
}

// micro is t as PostgreSQL stores it (microseconds), so values compare
// equal after a round trip.
func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond) }

func (s *Store) kind() string { return string(s.schema) }

const stateCols = `st.run_now_at, st.due_ms, st.task_id, st.fence, st.claim_state, st.outcome`

const ptSelect = `SELECT p.id, p.name, p.description, p.task, p.args, p.kwargs, p.options, p.trigger,
    p.timezone, p.enabled, p.start_time, p.end_time, p.last_run_time, p.total_run_count, p.log_path,
    p.created_at, p.updated_at, p.status, p.job_id, p.result, p.error, ` + stateCols + `
FROM periodic_task p
LEFT JOIN gocelery_beat_state st ON st.kind = 'periodic_task' AND st.name = p.name`

const djSelect = `SELECT t.id, t.name, t.description, t.task, t.args, t.kwargs, t.queue, t.exchange,
    t.routing_key, t.priority, t.headers, t.expires, t.expire_seconds, t.one_off, t.start_time,
    t.enabled, t.last_run_at, t.total_run_count, t.date_changed,
    t.interval_id, i.every, i.period, t.crontab_id, c.minute, c.hour, c.day_of_week, c.day_of_month,
    c.month_of_year, c.timezone, t.clocked_id, k.clocked_time, t.solar_id, ` + stateCols + `
FROM django_celery_beat_periodictask t
LEFT JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id
LEFT JOIN django_celery_beat_crontabschedule c ON c.id = t.crontab_id
LEFT JOIN django_celery_beat_clockedschedule k ON k.id = t.clocked_id
LEFT JOIN gocelery_beat_state st ON st.kind = 'django' AND st.name = t.name`

// stateScan are the gocelery_beat_state columns of a row.
type stateScan struct {
	runNow  *time.Time
	dueMS   *int64
	taskID  *string
	fence   *int64
	state   *string
	outcome []byte
}

func (st *stateScan) dest() []any {
	return []any{&st.runNow, &st.dueMS, &st.taskID, &st.fence, &st.state, &st.outcome}
}

func (st *stateScan) apply(e *entry) {
	e.runNow = st.runNow
	if st.runNow != nil {
		e.RunNow = *st.runNow
	}
	if st.dueMS != nil && st.taskID != nil && st.fence != nil && st.state != nil {
		e.claim = claim{DueMS: *st.dueMS, TaskID: *st.taskID, Fence: *st.fence, State: *st.state}
	}
	if len(st.outcome) > 0 {
		_ = decodeJSON(st.outcome, &e.Last) // informational; a bad one is ignored
	}
}

func decodeJSON(b []byte, v any) error {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	return d.Decode(v)
}

// scanPT reads a periodic_task row. The entry is returned with an error
// when only its schedule is bad, so List can report it by name.
func scanPT(row pgx.Row) (*entry, error) {
	e := &entry{Entry: &beat.Entry{}}
	var args, kwargs, opts, result []byte
	var trigger, tz string
	var created time.Time
	var status, jobID, errText *string
	var st stateScan
	var start, end *time.Time
	dest := []any{&e.id, &e.Name, &e.Description, &e.Task, &args, &kwargs, &opts, &trigger,
		&tz, &e.Enabled, &start, &end, &e.dbLast, &e.count, &e.LogPath, &created, &e.version,
		&status, &jobID, &result, &errText}
	if err := row.Scan(append(dest, st.dest()...)...); err != nil {
		return nil, err
	}
	if start != nil {
		e.StartTime = *start
	}
	if end != nil {
		e.EndTime = *end
	}
	e.TotalRunCount = e.count
	st.apply(e)
	if status != nil {
		e.Last.Status = *status
	}
	if jobID != nil {
		e.Last.TaskID = *jobID
	}
	if errText != nil {
		e.Last.Error = *errText
	}
	if len(result) > 0 {
		e.Last.Result = nil
		_ = decodeJSON(result, &e.Last.Result)
	}
	for _, f := range []struct {
		col  string
		raw  []byte
		into any
	}{{"args", args, &e.Args}, {"kwargs", kwargs, &e.Kwargs}, {"options", opts, &e.Options}} {
		if err := decodeJSON(f.raw, f.into); err != nil {
			return e, fmt.Errorf("%w: %q: %s: %w", beat.ErrBadEntry, e.Name, f.col, err)
		}
	}
	// Never run: the schedule counts from the row's creation, as Celery
	// counts from the entry's (a crontab waits for its next match).
	e.LastRunAt = created
	if e.dbLast != nil {
		e.LastRunAt = *e.dbLast
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return e, fmt.Errorf("%w: %q: timezone %q: %w", beat.ErrBadEntry, e.Name, tz, err)
	}
	sched, err := beat.ParseTrigger(trigger, loc)
	if err != nil {
		return e, fmt.Errorf("entry %q: %w", e.Name, err)
	}
	if iv, ok := sched.(*beat.Interval); ok {
		iv.Location = loc
	}
	e.Schedule = sched
	return e, nil
}

// djangoPeriods are IntervalSchedule.period's values.
var djangoPeriods = map[string]time.Duration{"days": 24 * time.Hour, "hours": time.Hour,
	"minutes": time.Minute, "seconds": time.Second, "microseconds": time.Microsecond}

// scanDjango reads a django_celery_beat_periodictask row with its schedule,
// as django-celery-beat's ModelEntry does.
func scanDjango(row pgx.Row, now time.Time) (*entry, error) {
	e := &entry{Entry: &beat.Entry{}}
	var args, kwargs, headers string
	var queue, exchange, routingKey *string
	var priority, expireSeconds *int
	var expires, start *time.Time
	var intervalID, crontabID, clockedID, solarID *int64
	var every *int
	var period, minute, hour, dow, dom, moy, tz *string
	var clocked *time.Time
	var st stateScan
	dest := []any{&e.id, &e.Name, &e.Description, &e.Task, &args, &kwargs, &queue, &exchange,
		&routingKey, &priority, &headers, &expires, &expireSeconds, &e.oneOff, &start,
		&e.Enabled, &e.dbLast, &e.count, &e.version,
		&intervalID, &every, &period, &crontabID, &minute, &hour, &dow, &dom,
		&moy, &tz, &clockedID, &clocked, &solarID}
	if err := row.Scan(append(dest, st.dest()...)...); err != nil {
		return nil, err
	}
	e.TotalRunCount = e.count
	st.apply(e)
	if start != nil {
		e.StartTime = *start
	}
	opts := map[string]any{}
	for k, v := range map[string]*string{"queue": queue, "exchange": exchange, "routing_key": routingKey} {
		if v != nil {
			opts[k] = *v
		}
	}
	if priority != nil {
		opts["priority"] = *priority
	}
	// expires_: the absolute expires, else expire_seconds (after the send).
	if expires != nil {
		opts["expires"] = *expires
		e.EndTime = *expires
		e.expired = !now.Before(*expires)
	} else if expireSeconds != nil {
		opts["expires"] = *expireSeconds
	}
	hdrs := map[string]any{}
	if headers != "" {
		if err := decodeJSON([]byte(headers), &hdrs); err != nil {
			return e, fmt.Errorf("%w: %q: headers: %w", beat.ErrBadEntry, e.Name, err)
		}
	}
	if hdrs == nil { // 'null'
		hdrs = map[string]any{}
	}
	hdrs["periodic_task_name"] = e.Name
	opts["headers"] = hdrs
	e.Options = opts
	if args == "" {
		args = "[]"
	}
	if kwargs == "" {
		kwargs = "{}"
	}
	if err := decodeJSON([]byte(args), &e.Args); err != nil {
		return e, fmt.Errorf("%w: %q: args: %w", beat.ErrBadEntry, e.Name, err)
	}
	if err := decodeJSON([]byte(kwargs), &e.Kwargs); err != nil {
		return e, fmt.Errorf("%w: %q: kwargs: %w", beat.ErrBadEntry, e.Name, err)
	}
	// last_run_at unset: date_changed, or 30 years back when there is a
	// start_time, so the first run is at start_time (ModelEntry.__init__).
	e.LastRunAt = e.version
	if e.dbLast != nil {
		e.LastRunAt = *e.dbLast
	} else if start != nil {
		e.LastRunAt = e.version.AddDate(0, 0, -365*30)
	}
	switch {
	case intervalID != nil:
		unit, ok := djangoPeriods[deref(period)]
		if !ok || every == nil || *every < 1 {
			return e, fmt.Errorf("%w: %q: interval every %v %q", beat.ErrBadEntry, e.Name, every, deref(period))
		}
		e.Schedule = &beat.Interval{Every: time.Duration(*every) * unit}
	case crontabID != nil:
		loc, err := time.LoadLocation(deref(tz))
		if err != nil {
			return e, fmt.Errorf("%w: %q: crontab timezone %q: %w", beat.ErrBadEntry, e.Name, deref(tz), err)
		}
		c, err := beat.NewCrontab(deref(minute), deref(hour), deref(dow), deref(dom), deref(moy), loc)
		if err != nil {
			return e, fmt.Errorf("entry %q: %w", e.Name, err)
		}
		e.Schedule = c
	case clockedID != nil && clocked != nil:
		// Due once its time has come, whenever the row was changed: the
		// date_changed fallback does not apply (clocked.is_due ignores it).
		e.Schedule = &beat.Clocked{At: *clocked}
		if e.dbLast == nil {
			e.LastRunAt = time.Time{}
		}
	case solarID != nil:
		return e, fmt.Errorf("entry %q: %w: solar schedules are not run by gocelery beat", e.Name, beat.ErrUnsupportedSchedule)
	default:
		return e, fmt.Errorf("%w: %q: no interval, crontab or clocked schedule", beat.ErrBadEntry, e.Name)
	}
	return e, nil
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

// list reads every entry; entries that cannot be run are left out and
// reported in the joined error.
func (s *Store) list(ctx context.Context, where string, args ...any) ([]*entry, error) {
	q := ptSelect
	if s.schema == SchemaDjango {
		q = djSelect
	}
	rows, err := s.pool.Query(ctx, q+" "+where, args...)
	if err != nil {
		return nil, fmt.Errorf("pgbeat: list: %w", err)
	}
	defer rows.Close()
	now := time.Now()
	var out []*entry
	var errs []error
	for rows.Next() {
		var e *entry
		if s.schema == SchemaDjango {
			e, err = scanDjango(rows, now)
		} else {
			e, err = scanPT(rows)
		}
		if err != nil {
			if e == nil {
				return nil, fmt.Errorf("pgbeat: list: %w", err)
			}
			errs = append(errs, err)
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgbeat: list: %w", err)
	}
	return out, errors.Join(errs...)
}

func (s *Store) get(ctx context.Context, name string) (*entry, error) {
	col := "p.name"
	if s.schema == SchemaDjango {
		col = "t.name"
	}
	es, err := s.list(ctx, "WHERE "+col+" = $1", name)
	if len(es) == 1 {
		return es[0], nil
	}
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %q", beat.ErrNotFound, name)
}

// List reads every entry, in next-run order. Entries that cannot be run
// (a solar schedule, bad JSON) are left out and reported in the joined
// error.
func (s *Store) List(ctx context.Context) ([]*beat.Entry, error) {
	es, err := s.list(ctx, "")
	out := make([]*beat.Entry, len(es))
	for i, e := range es {
		out[i] = e.Entry
	}
	sortByNext(out)
	return out, err
}

// Get reads one entry.
func (s *Store) Get(ctx context.Context, name string) (*beat.Entry, error) {
	e, err := s.get(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.Entry, nil
}

// notify announces a change of name to the leader, in tx.
func (s *Store) notify(ctx context.Context, tx pgx.Tx, name string) error {
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", s.schema.notifyChannel(), name)
	return err
}

// djangoChanged is PeriodicTasks.update_changed: the marker Django's
// schedulers poll.
const djangoChanged = `INSERT INTO django_celery_beat_periodictasks (ident, last_update) VALUES (1, $1)
ON CONFLICT (ident) DO UPDATE SET last_update = EXCLUDED.last_update`

// Put writes an entry's definition, keeping its run state when it exists
// already. A new entry's last run is now (its first run one interval from
// now, or a crontab's next match), as Celery's.
func (s *Store) Put(ctx context.Context, e *beat.Entry) error {
	if e.Name == "" || e.Task == "" || e.Schedule == nil {
		return fmt.Errorf("%w: %q needs a name, a task and a schedule", beat.ErrBadEntry, e.Name)
	}
	args, kwargs, opts := e.Args, e.Kwargs, e.Options
	if args == nil {
		args = []any{}
	}
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	if opts == nil {
		opts = map[string]any{}
	}
	now := micro(time.Now())
	last := now
	if !e.LastRunAt.IsZero() {
		last = micro(e.LastRunAt)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if s.schema == SchemaDjango {
			return s.putDjango(ctx, tx, e, args, kwargs, opts, now, last)
		}
		trigger, tz, err := triggerOf(e.Schedule)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO periodic_task (name, description, task, args, kwargs, options,
    trigger, timezone, enabled, start_time, end_time, log_path, last_run_time, total_run_count)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, task = EXCLUDED.task,
    args = EXCLUDED.args, kwargs = EXCLUDED.kwargs, options = EXCLUDED.options, trigger = EXCLUDED.trigger,
    timezone = EXCLUDED.timezone, enabled = EXCLUDED.enabled, start_time = EXCLUDED.start_time,
    end_time = EXCLUDED.end_time, log_path = EXCLUDED.log_path`,
			e.Name, e.Description, e.Task, args, kwargs, opts, trigger, tz, e.Enabled,
			optTime(e.StartTime), optTime(e.EndTime), e.LogPath, last, e.TotalRunCount)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgbeat: put %q: %w", e.Name, err)
	}
	return nil
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// triggerOf writes a schedule in the periodic_task trigger notation.
func triggerOf(sc beat.Schedule) (trigger, tz string, err error) {
	switch sc := sc.(type) {
	case *beat.Crontab:
		return sc.String(), sc.Location.String(), nil
	case *beat.Interval:
		if sc.Relative {
			return "", "", fmt.Errorf("%w: relative intervals have no periodic_task trigger", beat.ErrUnsupportedSchedule)
		}
		return "every " + sc.Every.String(), "UTC", nil
	case *beat.Clocked:
		return "at " + sc.At.UTC().Format(time.RFC3339), "UTC", nil
	}
	return "", "", fmt.Errorf("%w: %T", beat.ErrUnsupportedSchedule, sc)
}

// putDjango writes a PeriodicTask and its schedule row as Django's admin
// does: an equal schedule row is reused (from_schedule), the change marker
// is bumped.
func (s *Store) putDjango(ctx context.Context, tx pgx.Tx, e *beat.Entry, args []any, kwargs, opts map[string]any, now, last time.Time) error {
	var interval, crontab, clocked *int64
	var id int64
	switch sc := e.Schedule.(type) {
	case *beat.Interval:
		every, period := int64(sc.Every/time.Second), "seconds"
		if sc.Every%time.Second != 0 {
			every, period = int64(sc.Every/time.Microsecond), "microseconds"
		}
		err := tx.QueryRow(ctx, `SELECT id FROM django_celery_beat_intervalschedule WHERE every = $1 AND period = $2 ORDER BY id LIMIT 1`, every, period).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			err = tx.QueryRow(ctx, `INSERT INTO django_celery_beat_intervalschedule (every, period) VALUES ($1, $2) RETURNING id`, every, period).Scan(&id)
		}
		if err != nil {
			return err
		}
		interval = &id
	case *beat.Crontab:
		f := []any{sc.Minute, sc.Hour, sc.DayOfWeek, sc.DayOfMonth, sc.MonthOfYear, sc.Location.String()}
		err := tx.QueryRow(ctx, `SELECT id FROM django_celery_beat_crontabschedule WHERE minute = $1 AND hour = $2
    AND day_of_week = $3 AND day_of_month = $4 AND month_of_year = $5 AND timezone = $6 ORDER BY id LIMIT 1`, f...).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			err = tx.QueryRow(ctx, `INSERT INTO django_celery_beat_crontabschedule (minute, hour, day_of_week, day_of_month,
    month_of_year, timezone) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, f...).Scan(&id)
		}
		if err != nil {
			return err
		}
		crontab = &id
	case *beat.Clocked:
		err := tx.QueryRow(ctx, `INSERT INTO django_celery_beat_clockedschedule (clocked_time) VALUES ($1) RETURNING id`, sc.At).Scan(&id)
		if err != nil {
			return err
		}
		clocked = &id
	default:
		return fmt.Errorf("%w: %T", beat.ErrUnsupportedSchedule, sc)
	}
	str := func(k string) *string {
		if v, ok := opts[k].(string); ok && v != "" {
			return &v
		}
		return nil
	}
	var priority *int64
	if p, ok := opts["priority"].(json.Number); ok {
		n, _ := p.Int64()
		priority = &n
	} else if p, ok := opts["priority"].(float64); ok {
		n := int64(p)
		priority = &n
	}
	var expireSeconds *int64
	if x, ok := opts["expires"].(json.Number); ok {
		n, _ := x.Int64()
		expireSeconds = &n
	}
	headers := "{}"
	if h, ok := opts["headers"].(map[string]any); ok {
		b, _ := json.Marshal(h)
		headers = string(b)
	}
	a, _ := json.Marshal(args)
	k, _ := json.Marshal(kwargs)
	// A new task has no last run, as one made in Django's admin: its
	// schedule counts from date_changed (now). PeriodicTask.save: nor has a
	// disabled one.
	var lastRun *time.Time
	if !e.LastRunAt.IsZero() && e.Enabled {
		lastRun = &last
	}
	_, err := tx.Exec(ctx, `INSERT INTO django_celery_beat_periodictask (name, task, args, kwargs, queue, exchange,
    routing_key, expires, enabled, last_run_at, total_run_count, date_changed, description, crontab_id,
    interval_id, solar_id, one_off, start_time, priority, headers, clocked_id, expire_seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, NULL, $15, $16, $17, $18, $19, $20)
ON CONFLICT (name) DO UPDATE SET task = EXCLUDED.task, args = EXCLUDED.args, kwargs = EXCLUDED.kwargs,
    queue = EXCLUDED.queue, exchange = EXCLUDED.exchange, routing_key = EXCLUDED.routing_key,
    expires = EXCLUDED.expires, enabled = EXCLUDED.enabled, date_changed = EXCLUDED.date_changed,
    description = EXCLUDED.description, crontab_id = EXCLUDED.crontab_id, interval_id = EXCLUDED.interval_id,
    solar_id = NULL, one_off = EXCLUDED.one_off, start_time = EXCLUDED.start_time, priority = EXCLUDED.priority,
    headers = EXCLUDED.headers, clocked_id = EXCLUDED.clocked_id, expire_seconds = EXCLUDED.expire_seconds`,
		e.Name, e.Task, string(a), string(k), str("queue"), str("exchange"), str("routing_key"),
		optTime(e.EndTime), e.Enabled, lastRun, now, e.Description, crontab, interval, clocked != nil,
		optTime(e.StartTime), priority, headers, clocked, expireSeconds)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, djangoChanged, now); err != nil {
		return err
	}
	return s.notify(ctx, tx, e.Name)
}

// table and its name column, for the simple statements.
func (s *Store) table() (table, nameCol string) {
	if s.schema == SchemaDjango {
		return "django_celery_beat_periodictask", "name"
	}
	return "periodic_task", "name"
}

// Remove deletes an entry.
func (s *Store) Remove(ctx context.Context, name string) error {
	table, col := s.table()
	return s.change(ctx, name, "remove", func(tx pgx.Tx) (int64, error) {
		tag, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE "+col+" = $1", name)
		if err != nil {
			return 0, err
		}
		_, err = tx.Exec(ctx, "DELETE FROM gocelery_beat_state WHERE kind = $1 AND name = $2", s.kind(), name)
		return tag.RowsAffected(), err
	})
}

// SetEnabled enables or disables an entry. As Django's save, disabling a
// django task clears its last_run_at.
func (s *Store) SetEnabled(ctx context.Context, name string, enabled bool) error {
	return s.change(ctx, name, "enable", func(tx pgx.Tx) (int64, error) {
		q := "UPDATE periodic_task SET enabled = $2 WHERE name = $1"
		if s.schema == SchemaDjango {
			q = `UPDATE django_celery_beat_periodictask SET enabled = $2, date_changed = now(),
    last_run_at = CASE WHEN $2 THEN last_run_at END WHERE name = $1`
		}
		tag, err := tx.Exec(ctx, q, name, enabled)
		return tag.RowsAffected(), err
	})
}

// RunNow asks the leader to run an entry at once (once), whatever its
// schedule; its schedule then goes on from this run.
func (s *Store) RunNow(ctx context.Context, name string) error {
	table, col := s.table()
	return s.change(ctx, name, "run-now", func(tx pgx.Tx) (int64, error) {
		// Lock the row, so a claim running now either sees the request or
		// is done before it is written.
		tag, err := tx.Exec(ctx, "SELECT 1 FROM "+table+" WHERE "+col+" = $1 FOR UPDATE", name)
		if err != nil || tag.RowsAffected() == 0 {
			return 0, err
		}
		_, err = tx.Exec(ctx, `INSERT INTO gocelery_beat_state (kind, name, run_now_at) VALUES ($1, $2, $3)
ON CONFLICT (kind, name) DO UPDATE SET run_now_at = EXCLUDED.run_now_at, updated_at = now()`, s.kind(), name, micro(time.Now()))
		return 1, err
	})
}

// change runs one change of name in a transaction that also announces it.
func (s *Store) change(ctx context.Context, name, what string, f func(pgx.Tx) (int64, error)) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		n, err := f(tx)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%w: %q", beat.ErrNotFound, name)
		}
		if s.schema == SchemaDjango && what != "run-now" {
			if _, err := tx.Exec(ctx, djangoChanged, micro(time.Now())); err != nil {
				return err
			}
		}
		return s.notify(ctx, tx, name)
	})
	if err != nil && !errors.Is(err, beat.ErrNotFound) {
		return fmt.Errorf("pgbeat: %s %q: %w", what, name, err)
	}
	return err
}

// unfinished are the states of a run that is not done.
var unfinished = []string{"SENT", "PENDING", "RECEIVED", "STARTED", "RETRY"}

// RecordOutcome stores what run o.TaskID of entry name did, unless the
// final state of a run due later is recorded already. On periodic_task it
// also fills status, job_id, result and error.
func (s *Store) RecordOutcome(ctx context.Context, name string, o beat.Outcome) error {
	if !o.Due.IsZero() {
		o.DueMS = o.Due.UnixMilli()
	}
	b, err := json.Marshal(o)
	if err != nil {
		o.Result = fmt.Sprint(o.Result)
		b, _ = json.Marshal(o)
	}
	var result []byte
	if o.Result != nil {
		result, _ = json.Marshal(o.Result)
	}
	args := []any{s.kind(), name, b, o.TaskID, o.DueMS, unfinished}
	if s.schema == SchemaPeriodicTask {
		args = append(args, o.Status, result, o.Error)
	}
	_, err = s.pool.Exec(ctx, recordSQL(s.schema), args...)
	if err != nil {
		return fmt.Errorf("pgbeat: record outcome of %q: %w", name, err)
	}
	return nil
}

// recordSQL records an outcome in gocelery_beat_state under the rule of
// RecordOutcome and, on periodic_task, in the row's own columns too.
// Arguments: kind, name, outcome, task id, due ms, unfinished states, and
// for periodic_task status, result JSON, error.
func recordSQL(schema Schema) string {
	q := `WITH ok AS (
    INSERT INTO gocelery_beat_state AS st (kind, name, outcome) VALUES ($1, $2, $3)
    ON CONFLICT (kind, name) DO UPDATE SET outcome = EXCLUDED.outcome, updated_at = now()
    WHERE st.outcome IS NULL OR st.outcome->>'task_id' = $4 OR st.outcome->>'status' = ANY ($6)
        OR COALESCE((st.outcome->>'due_ms')::bigint, 0) < $5
    RETURNING 1)`
	if schema == SchemaPeriodicTask {
		return q + `
UPDATE periodic_task SET status = $7, job_id = $4, result = $8::jsonb, error = NULLIF($9, '')
WHERE name = $2 AND EXISTS (SELECT 1 FROM ok)`
	}
	return q + ` SELECT count(*) FROM ok`
}
