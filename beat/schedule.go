package beat

import (
	"fmt"
	"time"
)

// Schedule says when an entry runs next. Next returns the first run after
// last (the entry's last_run_at), which may already be in the past (the
// entry is due), or the zero time when the schedule has no more runs.
// A zero last means "never ran".
type Schedule interface {
	Next(last time.Time) time.Time
}

// Interval is Celery's schedule(run_every): one run every Every after the
// last one. With Relative, the deadline is rounded down to the interval's
// resolution (days, hours or minutes) in Location, as Celery's
// relative=True does.
type Interval struct {
	Every    time.Duration
	Relative bool
	// Location is where Relative rounds (UTC when nil).
	Location *time.Location
}

// Next is last + Every (rounded when Relative); a never-run entry is due
// at once, as in redbeat.
func (iv *Interval) Next(last time.Time) time.Time {
	if last.IsZero() {
		return time.Unix(0, 0)
	}
	end := last.Add(iv.Every)
	if !iv.Relative {
		return end
	}
	loc := iv.Location
	if loc == nil {
		loc = time.UTC
	}
	r := roundDown(end.In(loc), iv.Every)
	if iv.Every >= time.Minute && !r.After(last) {
		// Celery never rounds to a boundary at or before the start.
		r = roundDown(end.In(loc).Add(resolution(iv.Every)), iv.Every)
	}
	return r
}

func resolution(d time.Duration) time.Duration {
	switch {
	case d >= 24*time.Hour:
		return 24 * time.Hour
	case d >= time.Hour:
		return time.Hour
	case d >= time.Minute:
		return time.Minute
	}
	return time.Second
}

// roundDown is Celery's delta_resolution: truncate t to the day, hour or
// minute (for intervals of at least that), or to the second.
func roundDown(t time.Time, every time.Duration) time.Time {
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	switch {
	case every >= 24*time.Hour:
		return wallTime(y, mo, d, 0, 0, t.Location())
	case every >= time.Hour:
		return wallTime(y, mo, d, h, 0, t.Location())
	case every >= time.Minute:
		return wallTime(y, mo, d, h, mi, t.Location())
	}
	return time.Date(y, mo, d, h, mi, s, 0, t.Location())
}

// String is "every 10s" (with ", relative").
func (iv *Interval) String() string {
	if iv.Relative {
		return fmt.Sprintf("every %s, relative", iv.Every)
	}
	return "every " + iv.Every.String()
}

// Clocked runs once, at At (django-celery-beat's clocked one-off).
type Clocked struct {
	At time.Time
}

// Next is At until a run at or after At happened, then never.
func (c *Clocked) Next(last time.Time) time.Time {
	if !last.IsZero() && !last.Before(c.At) {
		return time.Time{}
	}
	return c.At
}

// String is "once at <RFC 3339 time>".
func (c *Clocked) String() string { return "once at " + c.At.UTC().Format(time.RFC3339) }

// ParseTrigger reads the trigger notation of schedule files and the CLI:
// a five-field crontab string ("*/15 * * * mon-fri"), "every <duration>"
// or a bare Go duration ("every 10s", "90s"), or "at <RFC 3339 time>" for
// a one-off run. Crontabs are read in loc.
func ParseTrigger(s string, loc *time.Location) (Schedule, error) {
	switch {
	case len(s) > 6 && s[:6] == "every ":
		return parseEvery(s[6:], s)
	case len(s) > 3 && s[:3] == "at ":
		t, err := time.Parse(time.RFC3339, s[3:])
		if err != nil {
			return nil, fmt.Errorf("beat: trigger %q: %w", s, err)
		}
		return &Clocked{At: t}, nil
	}
	if _, err := time.ParseDuration(s); err == nil {
		return parseEvery(s, s)
	}
	return ParseCrontab(s, loc)
}

func parseEvery(d, trigger string) (Schedule, error) {
	every, err := time.ParseDuration(d)
	if err != nil {
		return nil, fmt.Errorf("beat: trigger %q: %w", trigger, err)
	}
	if every <= 0 {
		return nil, fmt.Errorf("beat: trigger %q: the interval must be positive", trigger)
	}
	return &Interval{Every: every}, nil
}
