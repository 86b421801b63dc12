package pgbeat

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema names the tables a Store reads and writes.
type Schema string

const (
	// SchemaPeriodicTask is the team's own periodic_task table, created by
	// Migrate (gocelery beat migrate).
	SchemaPeriodicTask Schema = "periodic_task"
	// SchemaDjango is django-celery-beat 2.9's tables, created by Django's
	// migrations; this package never creates or alters them.
	SchemaDjango Schema = "django"
)

// ErrNoTables reports a store whose tables are missing: run Migrate
// (periodic_task) or Django's migrate (django).
var ErrNoTables = errors.New("pgbeat: tables missing")

// ParseSchema reads the --schema flag.
func ParseSchema(s string) (Schema, error) {
	switch Schema(s) {
	case SchemaPeriodicTask, SchemaDjango:
		return Schema(s), nil
	}
	return "", fmt.Errorf("pgbeat: schema %q: want periodic_task or django", s)
}

// notifyChannel is the LISTEN channel of a schema's changes.
func (s Schema) notifyChannel() string { return "gocelery_beat_" + string(s) }

// stateDDL is this package's own bookkeeping, for both schemas: the leader
// row (fencing token) and, per entry, the run being sent, a run-now request
// and the last run's outcome.
const stateDDL = `
CREATE TABLE IF NOT EXISTS gocelery_beat_leader (
    name        text PRIMARY KEY,
    fence       bigint NOT NULL DEFAULT 0,
    holder      text,
    acquired_at timestamptz
);
CREATE TABLE IF NOT EXISTS gocelery_beat_state (
    kind        text NOT NULL,
    name        text NOT NULL,
    run_now_at  timestamptz,
    due_ms      bigint,
    task_id     text,
    fence       bigint,
    claim_state text,
    outcome     jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, name)
);
INSERT INTO gocelery_beat_leader (name) VALUES ('periodic_task'), ('django') ON CONFLICT DO NOTHING;
-- The fencing check of a claim: fails the claim's transaction unless token
-- is the current one, and keeps it current (FOR SHARE) until that commits.
CREATE OR REPLACE FUNCTION gocelery_beat_fence(leader text, token bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM gocelery_beat_leader WHERE name = leader AND fence = token FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gocelery beat: fencing token % is not the current one', token
            USING ERRCODE = 'GCB01';
    END IF;
END $$;
`

// fenceErrCode is the SQLSTATE gocelery_beat_fence raises.
const fenceErrCode = "GCB01"

// periodicTaskDDL is the periodic_task table: the seed's columns (name,
// description, args, last_run_time, trigger, status, enabled, job_id,
// result, log_path) and what a scheduler needs. The triggers keep
// updated_at and announce definition changes with NOTIFY; the leader's own
// writes (last run, count, next run, outcome) announce nothing.
const periodicTaskDDL = `
CREATE TABLE IF NOT EXISTS periodic_task (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    description     text NOT NULL DEFAULT '',
    task            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '[]',
    kwargs          jsonb NOT NULL DEFAULT '{}',
    options         jsonb NOT NULL DEFAULT '{}',
    trigger         text NOT NULL,
    timezone        text NOT NULL DEFAULT 'UTC',
    enabled         boolean NOT NULL DEFAULT true,
    start_time      timestamptz,
    end_time        timestamptz,
    last_run_time   timestamptz,
    total_run_count integer NOT NULL DEFAULT 0,
    next_run_at     timestamptz,
    status          text,
    job_id          text,
    result          jsonb,
    error           text,
    log_path        text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS periodic_task_next_run_at ON periodic_task (next_run_at) WHERE enabled;

CREATE OR REPLACE FUNCTION gocelery_beat_periodic_task_touch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.name, NEW.description, NEW.task, NEW.args, NEW.kwargs, NEW.options, NEW.trigger,
        NEW.timezone, NEW.enabled, NEW.start_time, NEW.end_time, NEW.log_path)
       IS DISTINCT FROM
       (OLD.name, OLD.description, OLD.task, OLD.args, OLD.kwargs, OLD.options, OLD.trigger,
        OLD.timezone, OLD.enabled, OLD.start_time, OLD.end_time, OLD.log_path) THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION gocelery_beat_periodic_task_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('gocelery_beat_periodic_task', '*');
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('gocelery_beat_periodic_task', OLD.name);
    ELSIF TG_OP = 'UPDATE' THEN
        IF NEW.updated_at IS DISTINCT FROM OLD.updated_at OR NEW.name <> OLD.name THEN
            PERFORM pg_notify('gocelery_beat_periodic_task', OLD.name);
            PERFORM pg_notify('gocelery_beat_periodic_task', NEW.name);
        END IF;
    ELSE
        PERFORM pg_notify('gocelery_beat_periodic_task', NEW.name);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS periodic_task_touch ON periodic_task;
CREATE TRIGGER periodic_task_touch BEFORE UPDATE ON periodic_task
    FOR EACH ROW EXECUTE FUNCTION gocelery_beat_periodic_task_touch();
DROP TRIGGER IF EXISTS periodic_task_notify ON periodic_task;
CREATE TRIGGER periodic_task_notify AFTER INSERT OR UPDATE OR DELETE ON periodic_task
    FOR EACH ROW EXECUTE FUNCTION gocelery_beat_periodic_task_notify();
DROP TRIGGER IF EXISTS periodic_task_notify_truncate ON periodic_task;
CREATE TRIGGER periodic_task_notify_truncate AFTER TRUNCATE ON periodic_task
    FOR EACH STATEMENT EXECUTE FUNCTION gocelery_beat_periodic_task_notify();
`

// migrateLock serializes migrations of one database (replicas starting
// together would race on CREATE ... IF NOT EXISTS).
const migrateLock = 0x6763_6265_6174_0001

// Migrate creates what the schema needs, idempotently: for periodic_task,
// the table and its triggers; for both, this package's bookkeeping tables
// (gocelery_beat_leader, gocelery_beat_state). Django's tables are never
// created or altered: Migrate checks they exist.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema Schema) error {
	if _, err := ParseSchema(string(schema)); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, stateDDL); err != nil {
			return err
		}
		if schema == SchemaPeriodicTask {
			_, err := tx.Exec(ctx, periodicTaskDDL)
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pgbeat: migrate %s: %w", schema, err)
	}
	return checkTables(ctx, pool, schema)
}

// tablesOf are the tables a schema reads.
func tablesOf(schema Schema) []string {
	if schema == SchemaDjango {
		return []string{"django_celery_beat_periodictask", "django_celery_beat_intervalschedule",
			"django_celery_beat_crontabschedule", "django_celery_beat_clockedschedule",
			"django_celery_beat_solarschedule", "django_celery_beat_periodictasks",
			"gocelery_beat_leader", "gocelery_beat_state"}
	}
	return []string{"periodic_task", "gocelery_beat_leader", "gocelery_beat_state"}
}

// checkTables reports the schema's missing tables as ErrNoTables.
func checkTables(ctx context.Context, q querier, schema Schema) error {
	var missing []string
	err := pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL`, tablesOf(schema))
		if err != nil {
			return err
		}
		missing, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return fmt.Errorf("pgbeat: checking tables: %w", err)
	}
	if len(missing) > 0 {
		hint := "run gocelery beat migrate --schema " + string(schema)
		if schema == SchemaDjango {
			hint = "run Django's manage.py migrate django_celery_beat, then gocelery beat migrate --schema django"
		}
		return fmt.Errorf("%w: %v (%s)", ErrNoTables, missing, hint)
	}
	return nil
}

// querier is what both a pool and a connection offer.
type querier interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}
