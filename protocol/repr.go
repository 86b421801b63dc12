package protocol

import (
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
)

// reprMaxSize is Celery's argsrepr_maxsize/kwargsrepr_maxsize.
const reprMaxSize = 1024

// ReprArgs renders positional args as Python's repr of a tuple, as Celery
// fills the "argsrepr" header: "(2, 2)", "(1,)", "()". Long output is cut
// to 1,024 characters like Celery's saferepr.
func ReprArgs(args []any) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		writeRepr(&b, a, 0)
	}
	if len(args) == 1 {
		b.WriteByte(',')
	}
	b.WriteByte(')')
	return truncateRepr(b.String())
}

// Repr renders v as Python's repr would, for the "kwargsrepr" header and
// for logs.
func Repr(v any) string {
	var b strings.Builder
	writeRepr(&b, v, 0)
	return truncateRepr(b.String())
}

func truncateRepr(s string) string {
	if len(s) <= reprMaxSize {
		return s
	}
	cut := reprMaxSize
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

func utf8Start(c byte) bool { return c&0xC0 != 0x80 }

func writeRepr(b *strings.Builder, v any, depth int) {
	if depth > 32 || b.Len() > reprMaxSize { // repr is a hint; stop early
		b.WriteString("...")
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		writePyStr(b, x)
	case float64:
		b.Write(reprFloat(x))
	case float32:
		b.Write(reprFloat(float64(x)))
	case *big.Int:
		b.WriteString(x.String())
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeRepr(b, e, depth+1)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			writePyStr(b, k)
			b.WriteString(": ")
			writeRepr(b, x[k], depth+1)
		}
		b.WriteByte('}')
	case time.Time:
		fmt.Fprintf(b, "datetime.datetime(%d, %d, %d, %d, %d", x.Year(), x.Month(), x.Day(), x.Hour(), x.Minute())
		if x.Second() != 0 || x.Nanosecond() != 0 {
			fmt.Fprintf(b, ", %d", x.Second())
		}
		if us := x.Nanosecond() / 1000; us != 0 {
			fmt.Fprintf(b, ", %d", us)
		}
		if _, off := x.Zone(); off == 0 {
			b.WriteString(", tzinfo=datetime.timezone.utc)")
		} else {
			fmt.Fprintf(b, ", tzinfo=datetime.timezone(datetime.timedelta(seconds=%d)))", off)
		}
	case Date:
		fmt.Fprintf(b, "datetime.date(%d, %d, %d)", x.Year, x.Month, x.Day)
	case TimeOfDay:
		fmt.Fprintf(b, "datetime.time(%d, %d", x.Hour, x.Minute)
		if x.Second != 0 || x.Microsecond != 0 {
			fmt.Fprintf(b, ", %d", x.Second)
		}
		if x.Microsecond != 0 {
			fmt.Fprintf(b, ", %d", x.Microsecond)
		}
		b.WriteByte(')')
	case Decimal:
		fmt.Fprintf(b, "Decimal('%s')", string(x))
	case uuid.UUID:
		fmt.Fprintf(b, "UUID('%s')", x)
	case []byte:
		writePyBytes(b, x)
	case Signature:
		writeRepr(b, x.Map(), depth)
	case *Signature:
		writeRepr(b, x.Map(), depth)
	default:
		if n, ok := asInt64(v); ok {
			b.WriteString(strconv.FormatInt(n, 10))
			return
		}
		fmt.Fprintf(b, "%v", v)
	}
}

func reprFloat(f float64) []byte {
	s := appendPyFloat(nil, f)
	switch string(s) { // Python's repr differs from json here
	case "NaN":
		return []byte("nan")
	case "Infinity":
		return []byte("inf")
	case "-Infinity":
		return []byte("-inf")
	}
	return s
}

// writePyStr quotes like Python's str.__repr__: single quotes unless the
// text has one and no double quote; printable non-ASCII left as is.
func writePyStr(b *strings.Builder, s string) {
	q := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		q = '"'
	}
	b.WriteByte(q)
	for _, r := range s {
		switch {
		case r == rune(q) || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(b, `\x%02x`, r)
		case r > 0x7f && !unicode.IsPrint(r):
			switch {
			case r <= 0xff:
				fmt.Fprintf(b, `\x%02x`, r)
			case r <= 0xffff:
				fmt.Fprintf(b, `\u%04x`, r)
			default:
				fmt.Fprintf(b, `\U%08x`, r)
			}
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(q)
}

func writePyBytes(b *strings.Builder, p []byte) {
	q := byte('\'')
	if strings.IndexByte(string(p), '\'') >= 0 && strings.IndexByte(string(p), '"') < 0 {
		q = '"'
	}
	b.WriteString("b")
	b.WriteByte(q)
	for _, c := range p {
		switch {
		case c == q || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c >= 0x7f:
			fmt.Fprintf(b, `\x%02x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte(q)
}
