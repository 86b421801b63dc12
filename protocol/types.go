package protocol

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Decimal is a Python decimal.Decimal, kept as its exact text ("1.10") so no
// precision is lost in transit.
type Decimal string

// Date is a Python datetime.date.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// String returns the ISO form Python's date.isoformat gives.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day) }

// TimeOfDay is a Python datetime.time. Zone holds the UTC offset suffix as
// sent ("+00:00"), empty for a naive time.
type TimeOfDay struct {
	Hour, Minute, Second, Microsecond int
	Zone                              string
}

// String returns the ISO form Python's time.isoformat gives.
func (t TimeOfDay) String() string {
	s := fmt.Sprintf("%02d:%02d:%02d", t.Hour, t.Minute, t.Second)
	if t.Microsecond != 0 {
		s += fmt.Sprintf(".%06d", t.Microsecond)
	}
	return s + t.Zone
}

// FormatISO formats t as Python's datetime.isoformat does for an aware
// datetime: microseconds only when non-zero, offset as +HH:MM.
func FormatISO(t time.Time) string {
	return string(appendISO(nil, t))
}

func appendISO(b []byte, t time.Time) []byte {
	b = t.AppendFormat(b, "2006-01-02T15:04:05")
	if us := t.Nanosecond() / 1000; us != 0 {
		b = append(b, '.')
		b = appendPadded(b, us, 6)
	}
	_, off := t.Zone()
	sign := byte('+')
	if off < 0 {
		sign, off = '-', -off
	}
	b = append(b, sign)
	b = appendPadded(b, off/3600, 2)
	b = append(b, ':')
	b = appendPadded(b, off%3600/60, 2)
	if s := off % 60; s != 0 {
		b = append(b, ':')
		b = appendPadded(b, s, 2)
	}
	return b
}

func appendPadded(b []byte, v, width int) []byte {
	var tmp [20]byte
	s := strconv.AppendInt(tmp[:0], int64(v), 10)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return append(b, s...)
}

// ParseISO parses the ISO-8601 forms Python's datetime.fromisoformat accepts
// from Celery: date and time separated by 'T' or ' ', optional fraction,
// optional offset or 'Z'. A naive value is taken as UTC, as Celery's v2
// worker does.
func ParseISO(s string) (time.Time, error) {
	if len(s) < 10 {
		return time.Time{}, malformed("invalid ISO-8601 datetime %q", s)
	}
	if len(s) == 10 {
		return time.Parse("2006-01-02", s)
	}
	norm := []byte(s)
	if norm[10] == ' ' {
		norm[10] = 'T'
	}
	str := string(norm)
	layouts := [...]string{
		"2006-01-02T15:04:05.999999999Z07:00",
		"2006-01-02T15:04:05.999999999",
		"2006-01-02T15:04Z07:00",
		"2006-01-02T15:04",
	}
	for _, l := range layouts {
		if t, err := time.Parse(l, str); err == nil {
			return t, nil
		}
	}
	// Offsets with seconds ("+05:30:15") are legal in Python.
	if t, err := time.Parse("2006-01-02T15:04:05.999999999-07:00:00", str); err == nil {
		return t, nil
	}
	return time.Time{}, malformed("invalid ISO-8601 datetime %q", s)
}

func parseDate(s string) (Date, error) {
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return Date{}, malformed("invalid ISO-8601 date %q", s)
	}
	return Date{t.Year(), t.Month(), t.Day()}, nil
}

func parseTimeOfDay(s string) (TimeOfDay, error) {
	bad := malformed("invalid ISO-8601 time %q", s)
	zone := ""
	if i := strings.IndexAny(s, "+-Z"); i >= 0 {
		s, zone = s[:i], s[i:]
		if zone == "Z" {
			zone = "+00:00"
		}
	}
	var frac string
	if i := strings.IndexByte(s, '.'); i >= 0 {
		s, frac = s[:i], s[i+1:]
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return TimeOfDay{}, bad
	}
	var v [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || len(p) != 2 {
			return TimeOfDay{}, bad
		}
		v[i] = n
	}
	us := 0
	if frac != "" {
		if len(frac) > 6 {
			frac = frac[:6]
		}
		n, err := strconv.Atoi(frac + strings.Repeat("0", 6-len(frac)))
		if err != nil {
			return TimeOfDay{}, bad
		}
		us = n
	}
	if v[0] > 23 || v[1] > 59 || v[2] > 59 {
		return TimeOfDay{}, bad
	}
	return TimeOfDay{v[0], v[1], v[2], us, zone}, nil
}
