// Package tasks is Celery's t/integration/tasks.py in Go: the tasks that
// Celery's own integration suite (test_canvas.py, test_tasks.py) sends,
// under the same names ("t.integration.tasks.add", ...) and with each
// task's semantics as Celery's source defines it: binding, defaults,
// ignore_result, default_retry_delay, max_retries, the Redis helpers, and
// building, sending, returning and replacing with signatures.
package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// Prefix is the module of the suite's tasks.
const Prefix = "t.integration.tasks."

// ExpectedException is t.integration.tasks.ExpectedException, which the
// suite's client re-raises by module and name and compares by args.
func ExpectedException(args ...any) error {
	return &results.Exception{Module: "t.integration.tasks", Type: "ExpectedException", Message: args}
}

func valueError(msg string) error {
	return &results.Exception{Module: "builtins", Type: "ValueError", Message: []any{msg}}
}

// Deps are what some tasks need: the Redis of the suite's helpers (the
// result backend's database) and a producer for the tasks that send
// canvases themselves.
type Deps struct {
	Redis    redis.UniversalClient
	Producer *producer.Producer
	Logger   *slog.Logger
}

// suite holds the state Celery keeps on task objects (retry's attempt).
type suite struct {
	Deps
	mu      sync.Mutex
	attempt int
}

// Register adds the suite's tasks, celery.ping and celery.accumulate to mux.
func Register(mux *consumer.Mux, d Deps) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	s := &suite{Deps: d}
	h := func(name string, f consumer.HandlerFunc, opts ...consumer.TaskOptions) {
		mux.Handle(Prefix+name, f, opts...)
	}
	mux.HandleFunc("celery.ping", func(context.Context, *consumer.Request) (any, error) { return "pong", nil })
	mux.HandleFunc(consumer.AccumulateTask, consumer.Accumulate)
	// celery.map and celery.starmap (xmap, xstarmap) call the task in the
	// worker's own process for each item, as Celery's built-ins do.
	mux.HandleFunc("celery.map", func(ctx context.Context, r *consumer.Request) (any, error) {
		return mapTask(ctx, mux, r, false)
	})
	mux.HandleFunc("celery.starmap", func(ctx context.Context, r *consumer.Request) (any, error) {
		return mapTask(ctx, mux, r, true)
	})

	h("identity", fn("identity", params{names: []string{"x"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return b.get("x"), nil
	}))
	addP := params{names: []string{"x", "y", "z"}, defaults: map[string]any{"z": nil}}
	h("add", fn("add", addP, add3))
	twoP := params{names: []string{"x", "y"}}
	add2 := func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return pyAdd(b.get("x"), b.get("y"))
	}
	h("add_not_typed", fn("add_not_typed", twoP, add2))
	h("add_ignore_result", fn("add_ignore_result", twoP, add2), consumer.TaskOptions{IgnoreResult: true})
	h("add_with_result", fn("add_with_result", twoP, add2))
	h("mul", fn("mul", twoP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return pyMul(b.get("x"), b.get("y"))
	}))
	h("write_to_file_and_return_int", fn("write_to_file_and_return_int", params{names: []string{"file_name", "i"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		f, err := os.OpenFile(str(b.get("file_name")), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if _, err := fmt.Fprintf(f, "%s\n", str(b.get("i"))); err != nil {
			return nil, err
		}
		return b.get("i"), nil
	}))
	h("raise_error", fn("raise_error", params{varargs: true}, func(context.Context, *consumer.Request, bound) (any, error) {
		return nil, valueError("deliberate error")
	}))
	h("chain_add", fn("chain_add", twoP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		x, y := b.get("x"), b.get("y")
		_, err := s.Producer.Apply(ctx, producer.Chain(sig("add", x, x), sig("add", y)), nil)
		return nil, err
	}))
	h("chord_add", fn("chord_add", twoP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		x, y := b.get("x"), b.get("y")
		_, err := s.Producer.Apply(ctx, producer.Chord([]protocol.Signature{sig("add", x, x)}, sig("add", y)), nil)
		return nil, err
	}))
	sumP := params{names: []string{"numbers", "pause_time"}, defaults: map[string]any{"pause_time": int64(1)}}
	h("delayed_sum", fn("delayed_sum", sumP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if err := sleep(ctx, b.get("pause_time")); err != nil {
			return nil, err
		}
		return pySum(b.get("numbers"))
	}))
	h("delayed_sum_with_soft_guard", fn("delayed_sum_with_soft_guard", sumP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if err := sleep(ctx, b.get("pause_time")); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return int64(0), nil // except SoftTimeLimitExceeded: return 0
			}
			return nil, err
		}
		return pySum(b.get("numbers"))
	}))
	h("tsum", fn("tsum", params{names: []string{"nums"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return pySum(b.get("nums"))
	}))
	h("xsum", fn("xsum", params{names: []string{"nums"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		nums, err := iterable(b.get("nums"))
		if err != nil {
			return nil, err
		}
		var total any = int64(0)
		for _, n := range nums {
			if l, ok := n.([]any); ok {
				if n, err = pySum(l); err != nil {
					return nil, err
				}
			}
			if total, err = pyAdd(total, n); err != nil {
				return nil, err
			}
		}
		return total, nil
	}))
	h("sum_and_record", fn("sum_and_record", params{names: []string{"values", "redis_key"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		total, err := pySum(b.get("values"))
		if err != nil {
			return nil, err
		}
		return total, s.Redis.RPush(ctx, str(b.get("redis_key")), r.ID).Err()
	}))
	h("print_unicode", fn("print_unicode", params{names: []string{"log_message", "print_message"},
		defaults: map[string]any{"log_message": "håå®ƒ valmuefrø", "print_message": "hiöäüß"}},
		func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
			s.Logger.Warn(str(b.get("log_message")))
			fmt.Println(str(b.get("print_message")))
			return nil, nil
		}))
	h("return_exception", fn("return_exception", params{names: []string{"e"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return []any{b.get("e"), true}, nil
	}))
	h("sleeping", fn("sleeping", params{names: []string{"i"}, varkw: true}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, sleep(ctx, b.get("i"))
	}))
	h("ids", fn("ids", params{names: []string{"i"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return []any{none(r.RootID), none(r.ParentID), b.get("i")}, nil
	}))
	h("collect_ids", fn("collect_ids", params{names: []string{"res", "i"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return []any{b.get("res"), []any{none(r.RootID), none(r.ParentID), b.get("i")}}, nil
	}))
	h("redis_echo", fn("redis_echo", params{names: []string{"message", "redis_key"}, defaults: map[string]any{"redis_key": "redis-echo"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, s.Redis.RPush(ctx, str(b.get("redis_key")), redisValue(b.get("message"))).Err()
	}))
	h("redis_echo_group_id", fn("redis_echo_group_id", params{names: []string{"_", "redis_key"}, defaults: map[string]any{"redis_key": "redis-group-ids"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, s.Redis.RPush(ctx, str(b.get("redis_key")), redisValue(none(r.Group))).Err()
	}))
	h("redis_count", fn("redis_count", params{names: []string{"redis_key"}, defaults: map[string]any{"redis_key": "redis-count"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, s.Redis.Incr(ctx, str(b.get("redis_key"))).Err()
	}))
	h("fail", fn("fail", params{varargs: true}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, ExpectedException(append([]any{"Task expected to fail"}, b.extra...)...)
	}))
	h("fail_unpickleable", fn("fail_unpickleable", params{names: []string{"foo", "bar"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		// UnpickleableException(foo, bar): its args are (foo,).
		return nil, &results.Exception{Module: "t.integration.tasks", Type: "UnpickleableException", Message: []any{b.get("foo")}}
	}))
	h("return_priority", fn("return_priority", params{varargs: true}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return "Priority: " + str(r.DeliveryInfo()["priority"]), nil
	}))
	h("return_request_eta", fn("return_request_eta", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.ETA.IsZero() {
			return nil, nil
		}
		return r.ETA.Format("2006-01-02T15:04:05.999999-07:00"), nil
	}))
	h("return_properties", fn("return_properties", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return properties(r), nil
	}))
	h("replaced_with_me", fn("replaced_with_me", params{}, func(context.Context, *consumer.Request, bound) (any, error) { return true, nil }))
	pyd := func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		data, ok := b.get("data").(map[string]any)
		if !ok {
			return nil, valueError("1 validation error for AddParameterModel")
		}
		sum, err := pyAdd(data["x"], data["y"])
		if err != nil {
			return nil, err
		}
		return map[string]any{"result": sum}, nil
	}
	h("add_pydantic", fn("add_pydantic", params{names: []string{"data"}}, pyd))
	h("add_pydantic_string_annotations", fn("add_pydantic_string_annotations", params{names: []string{"data"}}, pyd))
	h("rebuild_signature", fn("rebuild_signature", params{names: []string{"sig_dict"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, rebuild(b.get("sig_dict"))
	}))
	// ClassBasedAutoRetryTask: autoretry_for=(ValueError,),
	// retry_kwargs={'max_retries': 1}, retry_backoff=True.
	mux.HandleFunc("auto_retry_class_task", func(ctx context.Context, r *consumer.Request) (any, error) {
		if r.Retries > 0 {
			return int64(r.Retries), nil
		}
		return nil, valueError("")
	}, consumer.TaskOptions{MaxRetries: consumer.Int(1), RetryBackoff: time.Second, RetryJitter: true,
		AutoRetryFor: func(err error) bool {
			var exc *results.Exception
			return errors.As(err, &exc) && exc.Type == "ValueError"
		}})
	s.registerErrbacks(h)
	s.registerRetries(h)
	s.registerReplacements(h)
	s.registerNested(h)
	s.registerRejects(h)
}

// mapTask is xmap(task, it) or, with star, xstarmap(task, it).
func mapTask(ctx context.Context, mux *consumer.Mux, r *consumer.Request, star bool) (any, error) {
	b, err := bind(r, "xmap", params{names: []string{"task", "it"}})
	if err != nil {
		return nil, err
	}
	ts, err := protocol.SignatureFrom(b.get("task"))
	if err != nil {
		return nil, &consumer.ArgumentError{Msg: err.Error()}
	}
	h, _, ok := mux.Lookup(ts.Task)
	if !ok {
		return nil, &results.Exception{Module: "celery.exceptions", Type: "NotRegistered", Message: []any{ts.Task}}
	}
	items, err := iterable(b.get("it"))
	if err != nil {
		return nil, err
	}
	out := make([]any, 0, len(items))
	for _, it := range items {
		args := []any{it}
		if star {
			if args, err = iterable(it); err != nil {
				return nil, err
			}
		}
		m := *r.Message
		m.Task, m.Args, m.Kwargs = ts.Task, args, map[string]any{}
		v, err := h.ServeTask(ctx, &consumer.Request{Message: &m})
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// fn adapts a task body to a handler that binds its parameters first.
func fn(name string, p params, f func(ctx context.Context, r *consumer.Request, b bound) (any, error)) consumer.HandlerFunc {
	return func(ctx context.Context, r *consumer.Request) (any, error) {
		b, err := bind(r, name, p)
		if err != nil {
			return nil, err
		}
		return f(ctx, r, b)
	}
}

func add3(ctx context.Context, r *consumer.Request, b bound) (any, error) {
	sum, err := pyAdd(b.get("x"), b.get("y"))
	if err != nil || !truthy(b.get("z")) {
		return sum, err
	}
	return pyAdd(sum, b.get("z"))
}

// sig is name.s(*args) for a suite task.
func sig(name string, args ...any) protocol.Signature {
	return protocol.Signature{Task: Prefix + name, Args: args, Kwargs: map[string]any{}, Options: map[string]any{}}
}

// si is name.si(*args).
func si(name string, args ...any) protocol.Signature {
	s := sig(name, args...)
	s.Immutable = true
	return s
}

func none(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// redisValue is what redis-py writes for a value: str() of it.
func redisValue(v any) any {
	switch x := v.(type) {
	case string, int64, float64, []byte:
		return x
	}
	return str(v)
}

func sleep(ctx context.Context, secs any) error {
	f, ok := toFloat(secs)
	if !ok {
		return &consumer.ArgumentError{Msg: fmt.Sprintf("'%s' object cannot be interpreted as a number", typeName(secs))}
	}
	t := time.NewTimer(time.Duration(f * float64(time.Second)))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// properties is Celery's request.properties: the message properties as
// kombu decodes them.
func properties(r *consumer.Request) map[string]any {
	p := map[string]any{}
	for k, v := range r.Properties.Extra {
		p[k] = v
	}
	p["correlation_id"] = r.Properties.CorrelationID
	p["reply_to"] = none(r.Properties.ReplyTo)
	p["delivery_mode"] = int64(r.Properties.DeliveryMode)
	p["priority"] = int64(r.Properties.Priority)
	return p
}

// rebuild checks that v is a signature tree, as the rebuild_signature task
// does with Signature.from_dict.
func rebuild(v any) error {
	s, err := protocol.SignatureFrom(v)
	if err != nil {
		return &consumer.ArgumentError{Msg: fmt.Sprintf("%s is not a signature object", protocol.Repr(v))}
	}
	switch s.SubtaskType {
	case protocol.SubtaskChain, protocol.SubtaskGroup:
		tasks, err := s.Tasks()
		if err != nil {
			return &consumer.ArgumentError{Msg: err.Error()}
		}
		for _, t := range tasks {
			if err := rebuild(t.Map()); err != nil {
				return err
			}
		}
	case protocol.SubtaskChord:
		h, err := s.Header()
		if err != nil {
			return &consumer.ArgumentError{Msg: err.Error()}
		}
		body, err := s.Body()
		if err != nil {
			return &consumer.ArgumentError{Msg: err.Error()}
		}
		if err := rebuild(h.Map()); err != nil {
			return err
		}
		return rebuild(body.Map())
	}
	return nil
}
