// Package pgbeat keeps beat's periodic tasks in PostgreSQL and runs them
// with the guarantees of beat's Redis store: any number of replicas, one
// leader, each due run sent once.
//
// Two schemas, chosen by [Schema]:
//
//   - periodic_task: the team's own table (name, description, task, args,
//     kwargs and options as jsonb, trigger as a crontab string, "every 10s"
//     or "at <RFC 3339 time>", timezone, enabled, start and end, and what
//     the scheduler writes: last_run_time, total_run_count, next_run_at,
//     and from the result backend status, job_id, result, error). [Migrate]
//     creates it with triggers that NOTIFY every definition change, so the
//     leader sees an INSERT or UPDATE from any client at once.
//   - django: django-celery-beat 2.9's tables, read and written as its
//     DatabaseScheduler does (last_run_at, total_run_count, one_off,
//     expires and expire_seconds, queue, exchange, routing_key, priority,
//     headers with periodic_task_name, per-crontab time zone). Changes are
//     seen by polling Django's change marker and a checksum of the rows, so
//     QuerySet.update() is noticed too. Solar schedules are refused.
//
// The leader lock is a session-level advisory lock; its fencing token is a
// counter in gocelery_beat_leader. Each run is claimed, in one transaction
// on the lock's session that checks the token, by advancing its row only
// if the row is as read; see [Scheduler].
package pgbeat
