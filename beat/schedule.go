package beat

import (
	"fmt"
	"slices"
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
// at once, as in redbeat. Relative follows Celery 5.7's remaining(): the
// last boundary at or before last + Every, never at or before last, with
// both occurrences of a wall time repeated by a DST change considered.
func (iv *Interval) Next(last time.Time) time.Time {
	if last.IsZero() {
		return time.Unix(0, 0)
	}
	if !iv.Relative {
		return last.Add(iv.Every)
	}
	loc := iv.Location
	if loc == nil {
		loc = time.UTC
	}
	every := iv.Every
	startWall := naiveWall(last.In(loc))
	var endWall time.Time
	if every >= 24*time.Hour {
		endWall = startWall.Add(every) // calendar days, on the wall clock
	} else {
		endWall = naiveWall(last.Add(every).In(loc))
	}
	cands := roundedInstants(endWall, every, loc)
	if every >= 24*time.Hour {
		if f := after(cands, last); len(f) > 0 {
			return slices.MinFunc(f, time.Time.Compare)
		}
		first, _ := wallInstants(endWall, loc)
		return first
	}
	end := last.Add(every)
	var rounded time.Time
	if b := notAfter(cands, end); len(b) > 0 {
		rounded = slices.MaxFunc(b, time.Time.Compare)
	} else {
		rounded = slices.MinFunc(cands, time.Time.Compare)
	}
	if every >= time.Minute && !rounded.After(last) {
		// A partial-hour rollback put the boundary before the start.
		unit := time.Minute
		if every >= time.Hour {
			unit = time.Hour
		}
		cands = append(cands, roundedInstants(endWall.Add(unit), every, loc)...)
		cands = append(cands, roundedInstants(startWall.Add(every), every, loc)...)
		future := after(cands, last)
		if b := notAfter(future, end); len(b) > 0 {
			rounded = slices.MaxFunc(b, time.Time.Compare)
		} else if len(future) > 0 {
			rounded = slices.MinFunc(future, time.Time.Compare)
		} else {
			rounded = end
		}
	}
	return rounded
}

// naiveWall is t's wall clock as a UTC time (Python's naive datetime).
func naiveWall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// roundedInstants is Celery's _relative_end_dates: the wall time rounded
// to the interval's resolution (delta_resolution, microseconds dropped),
// as the instants of both its folds.
func roundedInstants(wall time.Time, every time.Duration, loc *time.Location) []time.Time {
	y, mo, d := wall.Date()
	h, mi, s := wall.Clock()
	var r time.Time
	switch {
	case every >= 24*time.Hour:
		r = time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
	case every >= time.Hour:
		r = time.Date(y, mo, d, h, 0, 0, 0, time.UTC)
	case every >= time.Minute:
		r = time.Date(y, mo, d, h, mi, 0, 0, time.UTC)
	default:
		r = time.Date(y, mo, d, h, mi, s, 0, time.UTC)
	}
	first, second := wallInstants(r, loc)
	return []time.Time{first, second}
}

func after(ts []time.Time, t time.Time) []time.Time {
	var out []time.Time
	for _, x := range ts {
		if x.After(t) {
			out = append(out, x)
		}
	}
	return out
}

func notAfter(ts []time.Time, t time.Time) []time.Time {
	var out []time.Time
	for _, x := range ts {
		if !x.After(t) {
			out = append(out, x)
		}
	}
	return out
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
