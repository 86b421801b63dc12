package beat

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrBadCrontab reports a crontab expression Celery would refuse; the
// returned error wraps it and names the field and the value.
var ErrBadCrontab = errors.New("beat: bad crontab")

// Crontab is Celery's crontab schedule: a run at every minute whose month,
// day of month, day of week (0 = Sunday), hour and minute all match. Unlike
// Vixie cron, a restricted day of month AND a restricted day of week must
// both match. Times are evaluated in Location (UTC when nil).
type Crontab struct {
	// The original field specs, in Celery's constructor order, as redbeat
	// stores them.
	Minute, Hour, DayOfWeek, DayOfMonth, MonthOfYear string
	// Location is the time zone the fields are read in.
	Location *time.Location

	minute, hour, dow, dom, moy []int // sorted expansions
}

// ParseCrontab parses the classic five-field string "minute hour
// day-of-month month day-of-week", as Celery's crontab.from_string does
// (fields separated by single spaces).
func ParseCrontab(s string, loc *time.Location) (*Crontab, error) {
	f := strings.Split(strings.TrimSpace(s), " ")
	if len(f) != 5 {
		return nil, fmt.Errorf("%w: %q: want 5 space-separated fields (minute hour day-of-month month day-of-week), got %d", ErrBadCrontab, s, len(f))
	}
	return NewCrontab(f[0], f[1], f[4], f[2], f[3], loc)
}

// NewCrontab builds a crontab from field specs in Celery's constructor
// order: crontab(minute, hour, day_of_week, day_of_month, month_of_year).
// An empty spec means "*".
func NewCrontab(minute, hour, dayOfWeek, dayOfMonth, monthOfYear string, loc *time.Location) (*Crontab, error) {
	c := &Crontab{Minute: star(minute), Hour: star(hour), DayOfWeek: star(dayOfWeek),
		DayOfMonth: star(dayOfMonth), MonthOfYear: star(monthOfYear), Location: loc}
	if c.Location == nil {
		c.Location = time.UTC
	}
	var err error
	for _, f := range []struct {
		name     string
		spec     string
		max, min int
		out      *[]int
	}{
		{"minute", c.Minute, 60, 0, &c.minute},
		{"hour", c.Hour, 24, 0, &c.hour},
		{"day_of_week", c.DayOfWeek, 7, 0, &c.dow},
		{"day_of_month", c.DayOfMonth, 31, 1, &c.dom},
		{"month_of_year", c.MonthOfYear, 12, 1, &c.moy},
	} {
		if *f.out, err = parseField(f.spec, f.max, f.min); err != nil {
			return nil, fmt.Errorf("%w: %s %q: %v", ErrBadCrontab, f.name, f.spec, err)
		}
	}
	// Celery refuses a day of month that no allowed month has (Feb 29 counts).
	daysIn := [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}
	possible := false
	for _, m := range c.moy {
		possible = possible || c.dom[0] <= daysIn[m]
	}
	if !possible {
		return nil, fmt.Errorf("%w: day_of_month %q never occurs in month_of_year %q", ErrBadCrontab, c.DayOfMonth, c.MonthOfYear)
	}
	return c, nil
}

func star(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

// String returns the five-field form ParseCrontab reads.
func (c *Crontab) String() string {
	return c.Minute + " " + c.Hour + " " + c.DayOfMonth + " " + c.MonthOfYear + " " + c.DayOfWeek
}

// The patterns of Celery's crontab_parser, tried in order with re.match
// (anchored at the start only, as Python's match is).
var (
	reRangeSteps = regexp.MustCompile(`^(\w+?)-(\w+)/(\w+)?`)
	reRange      = regexp.MustCompile(`^(\w+?)-(\w+)`)
	reStarSteps  = regexp.MustCompile(`^\*/(\w+)?`)
)

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dayNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

// parseField expands one field as crontab_parser(max, min).parse does.
func parseField(spec string, max, min int) ([]int, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(spec, ",") {
		if part == "" {
			return nil, errors.New("empty part")
		}
		vals, err := parsePart(part, max, min)
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			set[v] = true
		}
	}
	out := make([]int, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

func parsePart(part string, max, min int) ([]int, error) {
	if m := reRangeSteps.FindStringSubmatch(part); m != nil {
		if m[3] == "" {
			return nil, errors.New("empty filter")
		}
		r, err := expandRange(m[1], m[2], max, min)
		if err != nil {
			return nil, err
		}
		return step(r, m[3])
	}
	if m := reRange.FindStringSubmatch(part); m != nil {
		return expandRange(m[1], m[2], max, min)
	}
	if m := reStarSteps.FindStringSubmatch(part); m != nil {
		if m[1] == "" {
			return nil, errors.New("empty filter")
		}
		all := make([]int, 0, max)
		for i := min; i < min+max; i++ {
			all = append(all, i)
		}
		return step(all, m[1])
	}
	if part == "*" {
		all := make([]int, 0, max)
		for i := min; i < min+max; i++ {
			all = append(all, i)
		}
		return all, nil
	}
	n, err := expandNumber(part, max, min)
	if err != nil {
		return nil, err
	}
	return []int{n}, nil
}

// step is Python's list[::n].
func step(vals []int, s string) ([]int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("invalid step %q", s)
	}
	if n <= 0 {
		return nil, fmt.Errorf("step %d must be positive", n)
	}
	var out []int
	for i := 0; i < len(vals); i += n {
		out = append(out, vals[i])
	}
	return out, nil
}

// expandRange is a-b, wrapping around the field's end when b < a.
func expandRange(a, b string, max, min int) ([]int, error) {
	fr, err := expandNumber(a, max, min)
	if err != nil {
		return nil, err
	}
	to, err := expandNumber(b, max, min)
	if err != nil {
		return nil, err
	}
	var out []int
	if to < fr {
		for i := fr; i < min+max; i++ {
			out = append(out, i)
		}
		for i := min; i <= to; i++ {
			out = append(out, i)
		}
		return out, nil
	}
	for i := fr; i <= to; i++ {
		out = append(out, i)
	}
	return out, nil
}

// expandNumber reads a number, a month name or a day name (first three
// letters, any case), in that order, as Celery does in every field.
func expandNumber(s string, max, min int) (int, error) {
	if strings.HasPrefix(s, "-") {
		return 0, errors.New("negative numbers not supported")
	}
	i, err := strconv.Atoi(s)
	if err != nil {
		abbr := strings.ToLower(s)
		if len(abbr) > 3 {
			abbr = abbr[:3]
		}
		if k := slices.Index(monthNames, abbr); k >= 0 {
			i = k + 1
		} else if k := slices.Index(dayNames, abbr); k >= 0 {
			i = k
		} else {
			return 0, fmt.Errorf("invalid weekday literal %q", s)
		}
	}
	if maxVal := min + max - 1; i > maxVal {
		return 0, fmt.Errorf("invalid end range: %d > %d", i, maxVal)
	}
	if i < min {
		return 0, fmt.Errorf("invalid beginning range: %d < %d", i, min)
	}
	return i, nil
}

// Next returns the first run after last, as Celery's
// crontab.remaining_delta computes it: the next matching minute after
// last's minute, read in the schedule's time zone. A wall time that falls
// in a DST gap or overlap resolves as Python's fold=0 does (the offset in
// force before the transition).
func (c *Crontab) Next(last time.Time) time.Time {
	l := last.In(c.Location)
	y, mo, d := l.Date()
	h, mi := l.Hour(), l.Minute()
	dowNum := int(l.Weekday()) // 0 = Sunday, as isoweekday() % 7
	thisDate := slices.Contains(c.moy, int(mo)) && slices.Contains(c.dom, d) && slices.Contains(c.dow, dowNum)
	maxMinute, maxHour := c.minute[len(c.minute)-1], c.hour[len(c.hour)-1]
	if thisDate && slices.Contains(c.hour, h) && mi < maxMinute {
		return wallTime(y, mo, d, h, firstAbove(c.minute, mi), c.Location)
	}
	nextMinute := c.minute[0]
	if thisDate && h < maxHour {
		return wallTime(y, mo, d, firstAbove(c.hour, h), nextMinute, c.Location)
	}
	nextHour := c.hour[0]
	if c.DayOfMonth == "*" && c.MonthOfYear == "*" {
		// ffwd(weeks, weekday, hour, minute): the next allowed weekday,
		// a week ahead when it is today's.
		nextDay := c.dow[0]
		for _, v := range c.dow {
			if v > dowNum {
				nextDay = v
				break
			}
		}
		days := 0
		if nextDay == dowNum {
			days = 7
		}
		pyWeekday := (int(l.Weekday()) + 6) % 7 // Monday = 0
		days += (7 - pyWeekday + (nextDay-1+7)%7) % 7
		return wallTime(y, mo, d+days, nextHour, nextMinute, c.Location)
	}
	ny, nmo, nd := c.deltaToNext(l, nextHour, nextMinute)
	return wallTime(ny, time.Month(nmo), nd, nextHour, nextMinute, c.Location)
}

func firstAbove(vals []int, v int) int {
	for _, x := range vals {
		if x > v {
			return x
		}
	}
	return vals[0] // unreachable: callers check v < max first
}

// deltaToNext is Celery's crontab._delta_to_next: the next date whose day
// of month, month and day of week all match, at nextHour:nextMinute after
// last (compared as wall times).
func (c *Crontab) deltaToNext(last time.Time, nextHour, nextMinute int) (year, month, day int) {
	year = last.Year()
	doms, moys := c.dom, c.moy
	var dom, moy int
	lastWall := wallKey(last.Year(), int(last.Month()), last.Day(), last.Hour(), last.Minute(), last.Second(), last.Nanosecond())
	outOfRange := func(y, m, d int) bool {
		return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Day() != d
	}
	beforeLast := func(y, m, d int) bool {
		return wallKey(y, m, d, nextHour, nextMinute, 0, 0) < lastWall
	}
	rollOver := func() bool {
		for range 2000 {
			if dom == len(doms) || outOfRange(year, moys[moy], doms[dom]) || beforeLast(year, moys[moy], doms[dom]) {
				dom = 0
				moy++
				if moy == len(moys) {
					moy = 0
					year++
				}
				continue
			}
			return true
		}
		return false // Celery raises RuntimeError: the spec can never match
	}
	if slices.Contains(moys, int(last.Month())) {
		dom, _ = slices.BinarySearch(doms, last.Day()+1) // bisect_right
		moy, _ = slices.BinarySearch(moys, int(last.Month()))
	} else {
		dom = 0
		moy, _ = slices.BinarySearch(moys, int(last.Month())+1)
		if moy == len(moys) {
			moy = 0
		}
	}
	if !rollOver() {
		return 0, 0, 0
	}
	for range 20000 {
		wd := int(time.Date(year, time.Month(moys[moy]), doms[dom], 0, 0, 0, 0, time.UTC).Weekday())
		if slices.Contains(c.dow, wd) {
			return year, moys[moy], doms[dom]
		}
		dom++
		if !rollOver() {
			return 0, 0, 0
		}
	}
	return 0, 0, 0
}

// wallKey orders wall times without a zone, as Python compares datetimes
// that share a tzinfo.
func wallKey(y, mo, d, h, mi, s, ns int) int64 {
	return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC).UnixNano()
}

// wallTime is the instant of a wall time in loc with Python's fold=0: in an
// overlap the first occurrence, in a gap the offset in force before it.
// year 0 marks "never" and returns the zero time.
func wallTime(y int, mo time.Month, d, h, mi int, loc *time.Location) time.Time {
	if y == 0 {
		return time.Time{}
	}
	first, _ := wallInstants(time.Date(y, mo, d, h, mi, 0, 0, time.UTC), loc)
	return first
}

// wallInstants returns the instants of a wall time (given as its fields in
// a UTC time) in loc as Python's fold=0 and fold=1 see them: the two
// occurrences in an overlap, the same instant otherwise; in a gap both are
// the wall time read with the offset in force before it (dateutil's
// resolve_imaginary moves it forward by the gap).
func wallInstants(naive time.Time, loc *time.Location) (first, second time.Time) {
	n := naive.Unix()
	ns := int64(naive.Nanosecond())
	_, before := time.Unix(n-86400, 0).In(loc).Zone()
	_, after := time.Unix(n+86400, 0).In(loc).Zone()
	var valid []time.Time
	for _, off := range []int{before, after} {
		t := time.Unix(n-int64(off), ns).In(loc)
		if _, o := t.Zone(); o == off && (len(valid) == 0 || !valid[0].Equal(t)) {
			valid = append(valid, t)
		}
	}
	switch len(valid) {
	case 0:
		t := time.Unix(n-int64(before), ns).In(loc)
		return t, t
	case 1:
		return valid[0], valid[0]
	}
	if valid[1].Before(valid[0]) {
		valid[0], valid[1] = valid[1], valid[0]
	}
	return valid[0], valid[1]
}
