// Package events sends Celery's monitoring events (the celeryev exchange)
// so that Flower, `celery events` and any app.events.Receiver see a Go
// worker as they see a Python one: worker-online, worker-heartbeat every
// two seconds, worker-offline, and the task-* events, batched as Celery's
// worker batches them ("task.multi").
package events

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gocelery/gocelery/protocol"
)

// Clock is a Lamport clock, kombu's LamportClock: events and remote
// control share one per worker so monitors can order what they see.
type Clock struct{ v atomic.Int64 }

// Forward advances the clock for a message sent and returns the new value.
func (c *Clock) Forward() int64 { return c.v.Add(1) }

// Adjust moves the clock past a value received: max(own, other) + 1.
func (c *Clock) Adjust(other int64) int64 {
	for {
		cur := c.v.Load()
		next := max(cur, other) + 1
		if c.v.CompareAndSwap(cur, next) {
			return next
		}
	}
}

// Value returns the clock's value.
func (c *Clock) Value() int64 { return c.v.Load() }

// Field is one event field; events keep Celery's key order.
type Field struct {
	Key   string
	Value any
}

// Event is one monitoring event: its type ("task-succeeded") and fields
// after the standard ones.
type Event struct {
	Type   string
	Fields []Field
	Time   time.Time
}

// UTCOffset is the utcoffset field: hours west of UTC, with Python's
// floor division (time.timezone // 3600), so UTC+2 is -2.
func UTCOffset(t time.Time) int {
	_, east := t.Zone()
	return int(math.Floor(float64(-east) / 3600))
}

// appendEvent writes e in Celery's key order: hostname, utcoffset, pid,
// clock, the event's fields, timestamp, type.
func appendEvent(b []byte, e *Event, hostname string, pid int, clock int64) []byte {
	b = appendHead(b, hostname, e.Time, pid, clock)
	for _, f := range e.Fields {
		b = append(b, ", "...)
		b, _ = protocol.AppendJSON(b, f.Key)
		b = append(b, ": "...)
		nb, err := protocol.AppendJSON(b, f.Value)
		if err != nil { // a value JSON cannot carry: its repr instead
			nb, _ = protocol.AppendJSON(b, protocol.Repr(f.Value))
		}
		b = nb
	}
	return appendTail(b, e.Time, e.Type)
}

// appendHead opens an event with the standard fields every event starts with.
func appendHead(b []byte, hostname string, t time.Time, pid int, clock int64) []byte {
	b = append(b, `{"hostname": `...)
	b, _ = protocol.AppendJSON(b, hostname)
	b = append(b, `, "utcoffset": `...)
	b = strconv.AppendInt(b, int64(UTCOffset(t)), 10)
	b = append(b, `, "pid": `...)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, `, "clock": `...)
	return strconv.AppendInt(b, clock, 10)
}

// appendTail closes an event with timestamp and type, which come last.
func appendTail(b []byte, t time.Time, typ string) []byte {
	b = append(b, `, "timestamp": `...)
	b = strconv.AppendFloat(b, float64(t.UnixMicro())/1e6, 'f', -1, 64)
	b = append(b, `, "type": `...)
	b, _ = protocol.AppendJSON(b, typ)
	return append(b, '}')
}

// routingKey is Celery's: the type with dashes as dots.
func routingKey(typ string) string { return strings.ReplaceAll(typ, "-", ".") }

// loadavg reads /proc/loadavg, rounded up to two decimals as Celery does;
// zeros where there is none.
func loadavg() []any {
	out := []any{0.0, 0.0, 0.0}
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return out
	}
	for i, f := range strings.Fields(string(data)) {
		if i == 3 {
			break
		}
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			out[i] = math.Ceil(v*100) / 100
		}
	}
	return out
}

// swSys is platform.system(): "Linux", "Darwin", "Windows".
func swSys() string {
	switch runtime.GOOS {
	case "darwin":
		return "Darwin"
	case "windows":
		return "Windows"
	}
	s := runtime.GOOS
	return strings.ToUpper(s[:1]) + s[1:]
}
