package beat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/protocol"
)

// ErrBadEntry reports an entry that cannot be stored or read: no name or
// task, no schedule, or a definition this package cannot decode.
var ErrBadEntry = errors.New("beat: bad entry")

// ErrUnsupportedSchedule reports a stored schedule type this package does
// not implement (solar, or a redbeat rrule other than a one-off).
var ErrUnsupportedSchedule = errors.New("beat: unsupported schedule")

// Entry is one periodic task: its definition (what and when) and its state
// (when it last ran and what that run did).
type Entry struct {
	// Name is unique in the store; the Redis key is the prefix + Name.
	Name        string
	Description string
	// Task is the task name sent, with Args and Kwargs.
	Task   string
	Args   []any
	Kwargs map[string]any
	// Options are apply_async's options, stored verbatim as redbeat does:
	// "queue", "exchange", "routing_key", "priority", "expires" (seconds
	// after the send) and "headers" are used; others are kept.
	Options  map[string]any
	Schedule Schedule
	Enabled  bool
	// StartTime and EndTime bound the runs: none before StartTime, none
	// after EndTime (zero: no bound).
	StartTime, EndTime time.Time
	// LogPath is where the task's own log goes, kept for operators.
	LogPath string

	// LastRunAt and TotalRunCount are redbeat's meta: when the last run
	// was sent (zero: never) and how many were.
	LastRunAt     time.Time
	TotalRunCount int
	// Last is what the last run did, from the result backend.
	Last Outcome
	// RunNow, when set, is a run-now request: the entry is due at that time
	// whatever its schedule says.
	RunNow time.Time

	meta  string // the stored meta JSON this entry was read with ("" if none)
	claim claim
}

// Outcome is the last run of an entry as the result backend reports it.
type Outcome struct {
	TaskID string    `json:"task_id,omitempty"`
	Due    time.Time `json:"due,omitzero"`
	// DueMS is Due in Unix milliseconds, for the store's scripts to compare.
	DueMS  int64     `json:"due_ms,omitempty"`
	SentAt time.Time `json:"sent_at,omitzero"`
	// Status is SENT until the backend has a state, then Celery's state
	// (SUCCESS, FAILURE, ...); SKIPPED for a missed run skipped by policy.
	Status   string    `json:"status,omitempty"`
	Result   any       `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
	DateDone time.Time `json:"date_done,omitzero"`
}

// claim is the run being sent: recorded with the meta update before the
// send, marked sent after it.
type claim struct {
	DueMS  int64  `json:"due_ms"`
	TaskID string `json:"task_id"`
	Fence  int64  `json:"fence"`
	State  string `json:"state"` // claimed, sent
}

// NextRun is when the entry runs next after last (its LastRunAt normally),
// with StartTime, EndTime and RunNow applied; zero means never.
func (e *Entry) NextRun(last time.Time) time.Time {
	if e.Schedule == nil {
		return time.Time{}
	}
	next := e.Schedule.Next(last)
	if !e.StartTime.IsZero() && !next.IsZero() && next.Before(e.StartTime) {
		if _, ok := e.Schedule.(*Interval); ok {
			next = e.StartTime
		} else {
			next = e.Schedule.Next(e.StartTime.Add(-time.Microsecond))
		}
	}
	if !e.EndTime.IsZero() && next.After(e.EndTime) {
		next = time.Time{}
	}
	if !e.RunNow.IsZero() && (next.IsZero() || e.RunNow.Before(next)) {
		next = e.RunNow
	}
	return next
}

// taskNamespace derives run task ids: uuid5(namespace, "<name>@<due ms>").
var taskNamespace = uuid.MustParse("6c0c3f4e-2c64-5a44-9d3e-6265617431d5")

// TaskID is the id of the run of entry name due at due: the same for
// every replica, so a re-sent run is recognisable.
func TaskID(name string, due time.Time) string {
	return uuid.NewSHA1(taskNamespace, []byte(name+"@"+strconv.FormatInt(due.UnixMilli(), 10))).String()
}

// --- redbeat's JSON ---

type definitionJSON struct {
	Name     string          `json:"name"`
	Task     string          `json:"task"`
	Args     []any           `json:"args"`
	Kwargs   map[string]any  `json:"kwargs"`
	Options  map[string]any  `json:"options"`
	Schedule json.RawMessage `json:"schedule"`
	Enabled  *bool           `json:"enabled"`
}

// extJSON is the "gocelery" hash field: what redbeat has no place for.
type extJSON struct {
	Description string    `json:"description,omitempty"`
	Timezone    string    `json:"timezone,omitempty"`
	StartTime   time.Time `json:"start_time,omitzero"`
	EndTime     time.Time `json:"end_time,omitzero"`
	LogPath     string    `json:"log_path,omitempty"`
}

// pyDatetime is redbeat's encoding of a UTC datetime, keys in its order
// (written by hand: the leader writes one per run).
func pyDatetime(t time.Time) []byte {
	t = t.UTC()
	b := make([]byte, 0, 160)
	b = append(b, `{"__type__": "datetime", "year": `...)
	b = strconv.AppendInt(b, int64(t.Year()), 10)
	for _, f := range []struct {
		k string
		v int
	}{{"month", int(t.Month())}, {"day", t.Day()}, {"hour", t.Hour()}, {"minute", t.Minute()},
		{"second", t.Second()}, {"microsecond", t.Nanosecond() / 1000}} {
		b = append(b, `, "`...)
		b = append(b, f.k...)
		b = append(b, `": `...)
		b = strconv.AppendInt(b, int64(f.v), 10)
	}
	return append(b, `, "timezone": "UTC"}`...)
}

func parsePyDatetime(v any) (time.Time, error) {
	m, ok := v.(map[string]any)
	if !ok || m["__type__"] != "datetime" {
		return time.Time{}, fmt.Errorf("not a redbeat datetime: %v", v)
	}
	n := func(k string) int {
		f, _ := protocol.AsFloat64(m[k])
		return int(f)
	}
	loc := time.UTC
	switch z := m["timezone"].(type) {
	case string:
		l, err := time.LoadLocation(z)
		if err != nil {
			return time.Time{}, err
		}
		loc = l
	case json.Number, float64:
		off, _ := protocol.AsFloat64(z)
		loc = time.FixedZone("", int(off))
	}
	return time.Date(n("year"), time.Month(n("month")), n("day"), n("hour"), n("minute"), n("second"), n("microsecond")*1000, loc), nil
}

// encodeSchedule writes a schedule as redbeat's JSON; a one-off is an
// rrule with count 1, which redbeat runs once too.
func encodeSchedule(s Schedule) (json.RawMessage, error) {
	var f []kv
	switch s := s.(type) {
	case *Interval:
		f = []kv{{"__type__", "interval"}, {"every", json.Number(strconv.FormatFloat(s.Every.Seconds(), 'f', -1, 64) + dotZero(s.Every))}, {"relative", s.Relative}}
	case *Crontab:
		f = []kv{{"__type__", "crontab"}, {"minute", s.Minute}, {"hour", s.Hour},
			{"day_of_week", s.DayOfWeek}, {"day_of_month", s.DayOfMonth}, {"month_of_year", s.MonthOfYear}}
	case *Clocked:
		f = []kv{{"__type__", "rrule"}, {"freq", 0}, {"interval", 1}, {"wkst", nil}, {"count", 1},
			{"bysetpos", nil}, {"bymonth", nil}, {"bymonthday", nil}, {"byyearday", nil}, {"byeaster", nil},
			{"byweekno", nil}, {"byweekday", nil}, {"byhour", nil}, {"byminute", nil}, {"bysecond", nil},
			{"dtstart", s.At.Unix()}, {"dtstart_tz", 0}}
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedSchedule, s)
	}
	return marshalOrdered(f)
}

// dotZero keeps whole seconds a Python float ("10.0"), as redbeat writes.
func dotZero(d time.Duration) string {
	if d%time.Second == 0 {
		return ".0"
	}
	return ""
}

func decodeSchedule(raw json.RawMessage, loc *time.Location) (Schedule, error) {
	var m map[string]any
	if err := unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: schedule %s", ErrBadEntry, raw)
	}
	switch m["__type__"] {
	case "interval":
		every, ok := protocol.AsFloat64(m["every"])
		if !ok || every <= 0 {
			return nil, fmt.Errorf("%w: interval %s", ErrBadEntry, raw)
		}
		rel, _ := m["relative"].(bool)
		return &Interval{Every: time.Duration(math.Round(every * 1e9)), Relative: rel, Location: loc}, nil
	case "crontab":
		f := func(k string) string {
			switch v := m[k].(type) {
			case string:
				return v
			case json.Number:
				return v.String()
			case []any: // a list of ints, as Python allows
				var b bytes.Buffer
				for i, x := range v {
					if i > 0 {
						b.WriteByte(',')
					}
					fmt.Fprint(&b, x)
				}
				return b.String()
			}
			return "*"
		}
		return NewCrontab(f("minute"), f("hour"), f("day_of_week"), f("day_of_month"), f("month_of_year"), loc)
	case "rrule":
		count, _ := protocol.AsFloat64(m["count"])
		start, ok := protocol.AsFloat64(m["dtstart"])
		if count != 1 || !ok {
			return nil, fmt.Errorf("%w: rrule other than a one-off (count 1 with dtstart)", ErrUnsupportedSchedule)
		}
		return &Clocked{At: time.Unix(int64(start), 0).UTC()}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrUnsupportedSchedule, m["__type__"])
}

func unmarshal(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	return d.Decode(v)
}

// encodeDefinition returns the "definition" and "gocelery" field values.
func (e *Entry) encodeDefinition() (def, ext []byte, err error) {
	if e.Name == "" || e.Task == "" || e.Schedule == nil {
		return nil, nil, fmt.Errorf("%w: %q needs a name, a task and a schedule", ErrBadEntry, e.Name)
	}
	sched, err := encodeSchedule(e.Schedule)
	if err != nil {
		return nil, nil, err
	}
	kwargs := e.Kwargs
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	opts := e.Options
	if opts == nil {
		opts = map[string]any{}
	}
	args := e.Args
	if args == nil {
		args = []any{}
	}
	// Key order as redbeat's save() writes it.
	def, err = marshalOrdered([]kv{{"name", e.Name}, {"task", e.Task}, {"args", args}, {"kwargs", kwargs},
		{"options", opts}, {"schedule", sched}, {"enabled", e.Enabled}})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q: %w", ErrBadEntry, e.Name, err)
	}
	x := extJSON{Description: e.Description, StartTime: e.StartTime, EndTime: e.EndTime, LogPath: e.LogPath}
	if loc := scheduleLocation(e.Schedule); loc != nil && loc != time.UTC {
		x.Timezone = loc.String()
	}
	ext, err = json.Marshal(x)
	return def, ext, err
}

func scheduleLocation(s Schedule) *time.Location {
	switch s := s.(type) {
	case *Crontab:
		return s.Location
	case *Interval:
		return s.Location
	}
	return nil
}

type kv struct {
	k string
	v any
}

// marshalOrdered writes an object with Python's json.dumps separators.
func marshalOrdered(fields []kv) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteString(", ")
		}
		k, _ := json.Marshal(f.k)
		b.Write(k)
		b.WriteString(": ")
		v, err := json.Marshal(f.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// encodeMeta is redbeat's meta: {"last_run_at": ..., "total_run_count": n}.
func encodeMeta(last time.Time, count int) string {
	b := make([]byte, 0, 220)
	b = append(b, `{"last_run_at": `...)
	if last.IsZero() {
		b = append(b, "null"...)
	} else {
		b = append(b, pyDatetime(last)...)
	}
	b = append(b, `, "total_run_count": `...)
	b = strconv.AppendInt(b, int64(count), 10)
	return string(append(b, '}'))
}

// decodeEntry builds an entry from its hash fields.
func decodeEntry(fields map[string]string) (*Entry, error) {
	raw, ok := fields["definition"]
	if !ok {
		return nil, fmt.Errorf("%w: no definition", ErrBadEntry)
	}
	var d definitionJSON
	if err := unmarshal([]byte(raw), &d); err != nil {
		return nil, fmt.Errorf("%w: definition: %w", ErrBadEntry, err)
	}
	e := &Entry{Name: d.Name, Task: d.Task, Args: d.Args, Kwargs: d.Kwargs, Options: d.Options, Enabled: d.Enabled == nil || *d.Enabled}
	var x extJSON
	if s := fields["gocelery"]; s != "" {
		if err := json.Unmarshal([]byte(s), &x); err != nil {
			return nil, fmt.Errorf("%w: %q: gocelery field: %w", ErrBadEntry, d.Name, err)
		}
	}
	e.Description, e.StartTime, e.EndTime, e.LogPath = x.Description, x.StartTime, x.EndTime, x.LogPath
	loc := time.UTC
	if x.Timezone != "" {
		l, err := time.LoadLocation(x.Timezone)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: timezone: %w", ErrBadEntry, d.Name, err)
		}
		loc = l
	}
	sched, err := decodeSchedule(d.Schedule, loc)
	if err != nil {
		return e, fmt.Errorf("entry %q: %w", d.Name, err)
	}
	e.Schedule = sched
	if m, ok := fields["meta"]; ok {
		e.meta = m
		var meta map[string]any
		if err := unmarshal([]byte(m), &meta); err != nil {
			return nil, fmt.Errorf("%w: %q: meta: %w", ErrBadEntry, d.Name, err)
		}
		if v := meta["last_run_at"]; v != nil {
			if e.LastRunAt, err = parsePyDatetime(v); err != nil {
				return nil, fmt.Errorf("%w: %q: last_run_at: %w", ErrBadEntry, d.Name, err)
			}
		}
		if n, ok := protocol.AsFloat64(meta["total_run_count"]); ok {
			e.TotalRunCount = int(n)
		}
	}
	if s := fields["outcome"]; s != "" {
		_ = unmarshal([]byte(s), &e.Last) // informational; a bad one is ignored
	}
	if s := fields["claim"]; s != "" {
		_ = json.Unmarshal([]byte(s), &e.claim)
	}
	if s := fields["run_now"]; s != "" {
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
			e.RunNow = time.UnixMilli(ms)
		}
	}
	return e, nil
}
