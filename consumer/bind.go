package consumer

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/gocelery/gocelery/protocol"
)

// Func adapts a typed function to Handler. The task's positional args fill
// the fields of A in declaration order, and its kwargs fill fields by name
// (the json tag, else the lower-cased field name), as Python binds a call
// to a signature. Values convert with encoding/json rules, so a JSON
// number fills an int field, an ISO string a time.Time, a list a slice.
//
//	type AddArgs struct{ X, Y int }
//	mux.Handle("proj.add", consumer.Func(func(ctx context.Context, a AddArgs) (int, error) {
//		return a.X + a.Y, nil
//	}))
func Func[A, R any](f func(ctx context.Context, args A) (R, error)) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
		var a A
		if err := Bind(r, &a); err != nil {
			return nil, err
		}
		return f(ctx, a)
	})
}

// ArgumentError reports args that do not fit the handler's parameters; it
// is stored as Python's TypeError, which Celery raises for the same case.
type ArgumentError struct{ Msg string }

func (e *ArgumentError) Error() string { return e.Msg }

// PythonException maps the error to Python's TypeError.
func (e *ArgumentError) PythonException() (module, typ string) { return "builtins", "TypeError" }

// Bind fills the struct pointed to by dst from r's args and kwargs (see Func).
func Bind(r *Request, dst any) error {
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("consumer: Bind needs a pointer to a struct, got %T", dst)
	}
	t := rv.Elem().Type()
	fields := map[string]any{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := strings.ToLower(f.Name)
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == "-" {
			continue
		} else if tag != "" {
			name = tag
		}
		names = append(names, name)
	}
	if len(r.Args) > len(names) {
		return &ArgumentError{fmt.Sprintf("%s() takes %d positional arguments but %d were given", r.Task, len(names), len(r.Args))}
	}
	for i, v := range r.Args {
		fields[names[i]] = plain(v)
	}
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	for k, v := range r.Kwargs {
		if !known[k] {
			return &ArgumentError{fmt.Sprintf("%s() got an unexpected keyword argument '%s'", r.Task, k)}
		}
		if _, dup := fields[k]; dup {
			return &ArgumentError{fmt.Sprintf("%s() got multiple values for argument '%s'", r.Task, k)}
		}
		fields[k] = plain(v)
	}
	data, err := json.Marshal(fields)
	if err != nil {
		return &ArgumentError{fmt.Sprintf("%s(): %v", r.Task, err)}
	}
	// Match by exact name: encoding/json's case-insensitive matching
	// would otherwise also accept near-miss keys.
	if err := json.Unmarshal(data, dst); err != nil {
		return &ArgumentError{fmt.Sprintf("%s(): %v", r.Task, err)}
	}
	return nil
}

// plain turns kombu types into what encoding/json expects for Go fields.
func plain(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case protocol.Decimal:
		return json.Number(x)
	case protocol.Date:
		return x.String()
	case protocol.TimeOfDay:
		return x.String()
	}
	return v
}
