package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"time"
)

// Header and body values arrive as JSON types (Redis) or AMQP table types;
// these helpers accept both and say which field was wrong.

func fieldErr(field string, v any, want string) error {
	return fmt.Errorf("%w: %s must be %s, got %T", ErrMalformed, field, want, v)
}

func asString(field string, v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	}
	return "", fieldErr(field, v, "a string")
}

// AsInt64 returns the integer a decoded value holds, whichever Go type the
// decoder gave it (JSON gives int64, or float64 for 1.0; msgpack any int
// or uint width; big ints *big.Int), and false when it holds none or one
// out of int64's range. It is the one numeric coercion for values read
// from messages, results and remote-control arguments.
func AsInt64(v any) (int64, bool) { return asInt64(v) }

// AsFloat64 returns the number a decoded value holds as a float64 (ints of
// any width, float32/64, *big.Int, json.Number), and false for non-numbers.
func AsFloat64(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case *big.Int:
		f, _ := new(big.Float).SetInt(x).Float64()
		return f, true
	}
	if n, ok := asInt64(v); ok {
		return float64(n), true
	}
	return 0, false
}

func asInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case int32:
		return int64(x), true
	case int16:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), true
		}
	}
	return 0, false
}

func asInt(field string, v any) (int, error) {
	if v == nil {
		return 0, nil
	}
	n, ok := asInt64(v)
	if !ok || n < math.MinInt32 || n > math.MaxInt32 {
		return 0, fieldErr(field, v, "an integer")
	}
	return int(n), nil
}

func asOptInt(field string, v any) (*int, error) {
	if v == nil {
		return nil, nil
	}
	n, err := asInt(field, v)
	if err != nil {
		return nil, err
	}
	return &n, nil
}

func asBool(field string, v any) (bool, error) {
	switch x := v.(type) {
	case nil:
		return false, nil
	case bool:
		return x, nil
	}
	if n, ok := asInt64(v); ok { // Python truthiness of 0/1
		return n != 0, nil
	}
	return false, fieldErr(field, v, "a bool")
}

func asTime(field string, v any) (time.Time, error) {
	switch x := v.(type) {
	case nil:
		return time.Time{}, nil
	case time.Time:
		return x, nil
	case string:
		if x == "" {
			return time.Time{}, nil
		}
		t, err := ParseISO(x)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s: %w", field, err)
		}
		return t, nil
	}
	return time.Time{}, fieldErr(field, v, "an ISO-8601 string")
}

func asSeconds(field string, v any) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	if n, ok := asInt64(v); ok {
		return time.Duration(n) * time.Second, nil
	}
	switch x := v.(type) {
	case float64:
		return time.Duration(x * float64(time.Second)), nil
	case float32:
		return time.Duration(float64(x) * float64(time.Second)), nil
	}
	return 0, fieldErr(field, v, "a number of seconds")
}

func asTimeLimit(v any) (TimeLimit, error) {
	var tl TimeLimit
	if v == nil {
		return tl, nil
	}
	pair, ok := v.([]any)
	if !ok || len(pair) != 2 {
		return tl, fieldErr("timelimit", v, "[hard, soft]")
	}
	var err error
	if tl.Hard, err = asSeconds("timelimit[0] (hard)", pair[0]); err != nil {
		return tl, err
	}
	tl.Soft, err = asSeconds("timelimit[1] (soft)", pair[1])
	return tl, err
}

func asStrings(field string, v any) ([]string, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []string:
		return x, nil
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fieldErr(field, v, "a list of strings")
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, fieldErr(field, v, "a list of strings")
}

func asMap(field string, v any) (map[string]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return x, nil
	}
	return nil, fieldErr(field, v, "an object")
}

func asList(field string, v any) ([]any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return x, nil
	}
	return nil, fieldErr(field, v, "an array")
}

// seconds renders a duration as Celery sends a limit: an int when whole.
func seconds(d time.Duration) any {
	if d == 0 {
		return nil
	}
	if d%time.Second == 0 {
		return int64(d / time.Second)
	}
	return d.Seconds()
}
