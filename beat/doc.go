// Package beat is Celery beat in Go: periodic tasks kept as data in Redis
// in celery-redbeat's layout, schedules with Celery's semantics (interval,
// crontab, one-off), and a scheduler that any number of replicas can run:
// one leader, elected with a short-TTL Redis lock and a fencing token,
// sends each due run exactly once.
//
// Schedules: [Interval] (Celery's schedule, with relative), [Crontab]
// (Celery's crontab: day of month AND day of week, 0 = Sunday, names,
// ranges that wrap, steps; per-schedule time zone) and [Clocked] (one run).
//
// Store: [Store] reads and writes the redbeat keys ("<prefix>:schedule"
// sorted set, "<prefix><name>" hashes with "definition" and "meta"), plus
// hash fields redbeat ignores for what it has no place for ("gocelery":
// description, time zone, start/end, log path; "claim": the run being
// sent; "outcome": the last run's task id, state and result). A Python
// "celery beat -S redbeat.RedBeatScheduler" and this package can take
// turns on one store: they share redbeat's lock key.
//
// Exactly once: the leader claims each run before sending it, in one Lua
// script that checks it still owns the lock and that the entry's meta is
// the one it computed the run from, and records the claim and the next
// run. The task id is derived from the entry name and the due time, so a
// run re-sent by a new leader after a crash between claim and publish has
// the same id (see [Scheduler] for the window and the choice made).
package beat
