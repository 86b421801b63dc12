package redis

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/gocelery/gocelery/broker"
)

// sep is kombu's separator between a queue name and its priority step, and
// between the fields of a binding member. Fixed by kombu (transport option
// "sep"); nobody changes it.
const sep = "\x06\x16"

// Key names kombu uses, before the global key prefix.
const (
	bindingPrefix   = "_kombu.binding."
	permanentPrefix = "_kombu.binding_permanent."
	// bindingDeadlinesName is kombu 5.7's keyprefix_binding_deadlines.
	bindingDeadlinesName = "_kombu.binding_deadlines"
	unackedName          = "unacked"
	unackedIdxName       = "unacked_index"
	unackedMutex         = "unacked_mutex"
	popRecordPrefix      = "_gocelery.pop."
)

// keyspace names every key and channel as kombu does for one database and
// global_keyprefix. The prefix is prepended verbatim, with no separator,
// exactly where kombu's PrefixedStrictRedis puts it: on every key and on
// PUB/SUB channels, never inside stored values (binding members,
// envelopes).
type keyspace struct {
	prefix string
	db     int
	steps  []int // sorted priority steps, kombu's priority_steps
}

func newKeyspace(prefix string, db int, steps []int) keyspace {
	if len(steps) == 0 {
		steps = []int{0, 3, 6, 9}
	}
	s := append([]int(nil), steps...)
	sort.Ints(s)
	// Duplicates would make a pop name a list twice.
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return keyspace{prefix: prefix, db: db, steps: out}
}

// step maps a message priority to its list's step as kombu does: clamp to
// 0..9, then the largest step <= p (bisect_right - 1; with steps that do
// not start at 0 Python's index -1 wraps to the last step, and so does
// this, so both sides pick the same list).
func (k keyspace) step(p int) int {
	p = min(max(p, 0), 9)
	i := sort.Search(len(k.steps), func(i int) bool { return k.steps[i] > p }) - 1
	if i < 0 {
		i = len(k.steps) - 1
	}
	return k.steps[i]
}

// list is the Redis list holding queue's messages of priority step s
// (kombu's _q_for_pri): the bare name for step 0, else name+sep+step.
func (k keyspace) list(queue string, s int) string {
	if s == 0 {
		return k.prefix + queue
	}
	return k.prefix + queue + sep + strconv.Itoa(s)
}

// listFor is the list a message of priority p goes to.
func (k keyspace) listFor(queue string, p int) string { return k.list(queue, k.step(p)) }

// lists returns every priority list of queue, in step order.
func (k keyspace) lists(queue string) []string {
	out := make([]string, len(k.steps))
	for i, s := range k.steps {
		out[i] = k.list(queue, s)
	}
	return out
}

// queueExpiry returns a queue's x-expires argument in ms, as kombu 5.7's
// _get_queue_expire reads it (int(value)); ok is false when there is none
// or it is not a number, which kombu ignores too.
func queueExpiry(q broker.Queue) (ms int64, ok bool) {
	switch v := q.Arguments["x-expires"].(type) {
	case int:
		return int64(v), true
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case float32:
		return int64(v), true
	case float64:
		return int64(v), true
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// kombu 5.7's lifetime of an expiring binding table: BINDING_EXPIRES_FACTOR
// times the queue's x-expires, at least MIN_BINDING_TTL (1 h, in ms).
const (
	bindingExpiresFactor = 2
	minBindingTTL        = int64(60 * 60 * 1000)
)

func (k keyspace) binding(exchange string) string { return k.prefix + bindingPrefix + exchange }

// permanent is the set kombu 5.7 keeps beside each binding table so that
// its sweep of expiring (x-expires) bindings never deletes a table that
// still routes to a queue without expiry.
func (k keyspace) permanent(exchange string) string { return k.prefix + permanentPrefix + exchange }

// bindingDeadlines is kombu 5.7's sorted set of exchanges whose binding
// tables expire (queues with x-expires), scored by deadline in ms.
func (k keyspace) bindingDeadlines() string { return k.prefix + bindingDeadlinesName }

func (k keyspace) unacked() string    { return k.prefix + unackedName }
func (k keyspace) unackedIdx() string { return k.prefix + unackedIdxName }
func (k keyspace) mutex() string      { return k.prefix + unackedMutex }

// pop is the key recording what consumer id's last pop took (see
// popRecordScript); gocelery's own, which kombu never reads.
func (k keyspace) pop(id string) string { return k.prefix + popRecordPrefix + id }

// fanout is the PUB/SUB channel of a fanout exchange (kombu's
// _get_publish_topic with fanout_prefix and fanout_patterns on, the
// defaults): "/{db}.<exchange>", plus "/<routing key>" when there is one.
func (k keyspace) fanout(exchange, routingKey string) string {
	ch := k.prefix + "/" + strconv.Itoa(k.db) + "." + exchange
	if routingKey != "" {
		ch += "/" + routingKey
	}
	return ch
}

// bindingMember is the value kombu stores in _kombu.binding.<exchange>:
// routing key, pattern and queue joined by sep.
func bindingMember(routingKey, pattern, queue string) string {
	return routingKey + sep + pattern + sep + queue
}

// binding is one parsed member of a binding set.
type binding struct {
	routingKey, pattern, queue string
}

// parseBinding splits a member as kombu's get_table does. Members that do
// not have three fields (written by something else) are skipped.
func parseBinding(member string) (binding, bool) {
	parts := strings.Split(member, sep)
	if len(parts) != 3 {
		return binding{}, false
	}
	return binding{parts[0], parts[1], parts[2]}, true
}

// topicPattern converts a topic binding key to the regular expression
// kombu 5.7 stores and matches (TopicExchange.key_to_pattern): every
// character but letters, digits, '.', '#' and '*' backslash-escaped (NUL
// as \000), words split on '.', '*' -> [^\.]+ (one word), '#' -> .*?
// (any), joined with \. and anchored.
func topicPattern(key string) string {
	var esc strings.Builder
	for _, r := range key {
		switch {
		case r == '.' || r == '#' || r == '*' || pyIsAlnum(r):
			esc.WriteRune(r)
		case r == 0:
			esc.WriteString(`\000`)
		default:
			esc.WriteByte('\\')
			esc.WriteRune(r)
		}
	}
	words := strings.Split(esc.String(), ".")
	for i, w := range words {
		switch w {
		case "*":
			words[i] = `[^\.]+`
		case "#":
			words[i] = `.*?`
		}
	}
	return "^" + strings.Join(words, `\.`) + "$"
}

// pyIsAlnum is Python's str.isalnum for one character: a letter or any
// kind of number.
func pyIsAlnum(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) }

// goRegexp translates a Python regular expression as kombu stores them to
// Go syntax with the same meaning for re.match: anchored at the start;
// Python's '$' also matches before a final newline; \Z is Go's \z; an
// escaped non-ASCII character (which Go refuses) is just that character;
// \000 is NUL.
func goRegexp(py string) string {
	var b strings.Builder
	b.WriteString(`^(?:`)
	inClass := false
	for i := 0; i < len(py); {
		r, n := utf8.DecodeRuneInString(py[i:])
		switch {
		case r == '\\' && i+n < len(py):
			next, m := utf8.DecodeRuneInString(py[i+n:])
			switch {
			case next >= utf8.RuneSelf:
				b.WriteString(regexp.QuoteMeta(string(next)))
			case next == 'Z' && !inClass:
				b.WriteString(`\z`)
			case next == '0' && strings.HasPrefix(py[i+n:], "000"):
				b.WriteString(`\x00`)
				m = 3
			default:
				b.WriteByte('\\')
				b.WriteRune(next)
			}
			i += n + m
			continue
		case r == '[' && !inClass:
			inClass = true
			b.WriteRune(r)
			// A ']' (or '^]') right after '[' is a literal in both syntaxes.
			if strings.HasPrefix(py[i+n:], "^]") {
				b.WriteString("^]")
				i += 2
			} else if strings.HasPrefix(py[i+n:], "]") {
				b.WriteString("]")
				i++
			}
		case r == ']' && inClass:
			inClass = false
			b.WriteRune(r)
		case r == '$' && !inClass:
			b.WriteString(`(?:\n?\z)`)
		default:
			b.WriteRune(r)
		}
		i += n
	}
	b.WriteString(`)`)
	return b.String()
}

// patternCache compiles stored topic patterns once. Patterns come from
// Redis, so the cache is bounded: past its size it starts over.
type patternCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp // nil value: the pattern does not compile
}

const maxCachedPatterns = 4096

// match reports whether routingKey matches the stored Python pattern as
// re.match would. A pattern Go cannot compile matches nothing.
func (c *patternCache) match(pattern, routingKey string) bool {
	c.mu.Lock()
	re, ok := c.m[pattern]
	if !ok {
		re, _ = regexp.Compile(goRegexp(pattern))
		if c.m == nil || len(c.m) >= maxCachedPatterns {
			c.m = make(map[string]*regexp.Regexp)
		}
		c.m[pattern] = re
	}
	c.mu.Unlock()
	return re != nil && re.MatchString(routingKey)
}
