// Package tasks registers the interop task contract: the Go tasks that the
// Python test suite, the benchmarks and the demo send. Their names and
// behaviour are stable; Python's mirror, pyinterop.*, lives in
// interop/python.
package tasks

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// ValueError is a failure Python re-raises as ValueError.
type ValueError struct{ Msg string }

func (e *ValueError) Error() string { return e.Msg }

// PythonException maps the error to Python's builtins.ValueError.
func (e *ValueError) PythonException() (module, typ string) { return "builtins", "ValueError" }

// Register adds the interop.* tasks to mux. rdb backs interop.counter; it
// may be nil when that task is not needed.
func Register(mux *consumer.Mux, rdb redis.UniversalClient) {
	mux.HandleFunc("interop.add", add)
	mux.HandleFunc("interop.xsum", xsum)
	mux.HandleFunc("interop.echo", func(ctx context.Context, r *consumer.Request) (any, error) {
		args, kwargs := r.Args, r.Kwargs
		if args == nil {
			args = []any{}
		}
		if kwargs == nil {
			kwargs = map[string]any{}
		}
		return map[string]any{"args": args, "kwargs": kwargs}, nil
	})
	mux.HandleFunc("interop.fail", func(ctx context.Context, r *consumer.Request) (any, error) {
		msg := "interop.fail"
		if len(r.Args) > 0 {
			msg = fmt.Sprint(r.Args[0])
		} else if m, ok := r.Kwargs["message"]; ok {
			msg = fmt.Sprint(m)
		}
		return nil, &ValueError{msg}
	})
	mux.HandleFunc("interop.sleep", func(ctx context.Context, r *consumer.Request) (any, error) {
		var a struct {
			Seconds float64 `json:"seconds"`
		}
		if err := consumer.Bind(r, &a); err != nil {
			return nil, err
		}
		t := time.NewTimer(time.Duration(a.Seconds * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// Return the argument as sent: an int stays an int, as in Python.
		if len(r.Args) > 0 {
			return r.Args[0], nil
		}
		return r.Kwargs["seconds"], nil
	})
	mux.HandleFunc("interop.progress", func(ctx context.Context, r *consumer.Request) (any, error) {
		var a struct {
			Steps int     `json:"steps"`
			Delay float64 `json:"delay"`
		}
		if err := consumer.Bind(r, &a); err != nil {
			return nil, err
		}
		for i := 1; i <= a.Steps; i++ {
			if err := r.UpdateState(ctx, "PROGRESS", map[string]any{"current": i, "total": a.Steps}); err != nil {
				return nil, err
			}
			if a.Delay > 0 {
				time.Sleep(time.Duration(a.Delay * float64(time.Second)))
			}
		}
		return a.Steps, nil
	})
	mux.HandleFunc("interop.retry", func(ctx context.Context, r *consumer.Request) (any, error) {
		var a struct {
			Times     int     `json:"times"`
			Countdown float64 `json:"countdown"` // seconds; 0.1 when unset
		}
		if err := consumer.Bind(r, &a); err != nil {
			return nil, err
		}
		if r.Retries < a.Times {
			countdown := 100 * time.Millisecond
			if a.Countdown > 0 {
				countdown = time.Duration(a.Countdown * float64(time.Second))
			}
			re := consumer.Retry(countdown, &ValueError{fmt.Sprintf("retry %d of %d", r.Retries+1, a.Times)})
			re.MaxRetries = consumer.Int(a.Times)
			return nil, re
		}
		return r.Retries, nil
	})
	mux.HandleFunc("interop.counter", func(ctx context.Context, r *consumer.Request) (any, error) {
		var a struct {
			Key   string  `json:"key"`
			Sleep float64 `json:"sleep"` // optional: keeps tasks in flight for reliability tests
		}
		if err := consumer.Bind(r, &a); err != nil {
			return nil, err
		}
		if rdb == nil {
			return nil, errors.New("interop.counter: worker has no Redis")
		}
		if a.Sleep > 0 {
			time.Sleep(time.Duration(a.Sleep * float64(time.Second)))
		}
		return rdb.Incr(ctx, a.Key).Result()
	})
	mux.HandleFunc("interop.request", func(ctx context.Context, r *consumer.Request) (any, error) {
		opt := func(t time.Time) any {
			if t.IsZero() {
				return nil
			}
			return t
		}
		str := func(s string) any {
			if s == "" {
				return nil
			}
			return s
		}
		headers := map[string]any{}
		for k, v := range r.Headers {
			headers[k] = v
		}
		secs := func(d time.Duration) any {
			if d == 0 {
				return nil
			}
			return d.Seconds()
		}
		return map[string]any{
			"id": r.ID, "task": r.Task, "retries": r.Retries,
			"root_id": str(r.RootID), "parent_id": str(r.ParentID), "group": str(r.Group),
			"eta": opt(r.ETA), "expires": opt(r.Expires),
			"delivery_info": r.DeliveryInfo(), "headers": headers,
			"hostname": r.Hostname, "args": r.Args, "kwargs": r.Kwargs,
			"timelimit": []any{secs(r.TimeLimit.Hard), secs(r.TimeLimit.Soft)},
		}, nil
	})
}

// add returns x + y: ints stay ints (big ones too), anything else is a float.
func add(ctx context.Context, r *consumer.Request) (any, error) {
	var x, y any
	switch {
	case len(r.Args) == 2:
		x, y = r.Args[0], r.Args[1]
	default:
		var ok1, ok2 bool
		x, ok1 = r.Kwargs["x"]
		y, ok2 = r.Kwargs["y"]
		if len(r.Args) == 1 {
			x, ok1 = r.Args[0], true
		}
		if !ok1 || !ok2 {
			return nil, &consumer.ArgumentError{Msg: "add() missing required arguments: 'x' and 'y'"}
		}
	}
	xi, xok := x.(int64)
	yi, yok := y.(int64)
	if xok && yok {
		s := xi + yi
		if (s > xi) == (yi > 0) { // no overflow
			return s, nil
		}
	}
	if xb, ok := toBig(x); ok {
		if yb, ok := toBig(y); ok {
			return new(big.Int).Add(xb, yb), nil
		}
	}
	xf, ok1 := protocol.AsFloat64(x)
	yf, ok2 := protocol.AsFloat64(y)
	if !ok1 || !ok2 {
		return nil, &consumer.ArgumentError{Msg: fmt.Sprintf("unsupported operand type(s) for +: %s and %s", protocol.Repr(x), protocol.Repr(y))}
	}
	return xf + yf, nil
}

// xsum is sum(values): the chord body of the contract. It takes the list
// of header results as its only argument, as Celery passes them.
func xsum(ctx context.Context, r *consumer.Request) (any, error) {
	var values []any
	switch {
	case len(r.Args) == 1:
		values, _ = r.Args[0].([]any)
		if values == nil && r.Args[0] != nil {
			return nil, &consumer.ArgumentError{Msg: "xsum() takes a list, got " + protocol.Repr(r.Args[0])}
		}
	case len(r.Args) == 0 && r.Kwargs["values"] != nil:
		values, _ = r.Kwargs["values"].([]any)
	default:
		return nil, &consumer.ArgumentError{Msg: fmt.Sprintf("xsum() takes 1 positional argument but %d were given", len(r.Args))}
	}
	var sum any = int64(0)
	for _, v := range values {
		s, err := add(ctx, &consumer.Request{Message: &protocol.Message{Args: []any{sum, v}}})
		if err != nil {
			return nil, err
		}
		sum = s
	}
	return sum, nil
}

func toBig(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case *big.Int:
		return x, true
	}
	return nil, false
}

// Setup registers the contract on a worker whose result backend is open:
// interop.counter uses the backend's Redis. It fits worker.Run's setup.
func Setup(mux *consumer.Mux, backend *results.Redis) {
	// Failover tests count on a Redis that is not the one they kill.
	if u := os.Getenv("INTEROP_COUNTER_REDIS"); u != "" {
		opts, err := redis.ParseURL(u)
		if err != nil {
			panic("INTEROP_COUNTER_REDIS: " + err.Error())
		}
		Register(mux, redis.NewClient(opts))
		return
	}
	if backend != nil {
		Register(mux, backend.Client())
		return
	}
	Register(mux, nil)
}
