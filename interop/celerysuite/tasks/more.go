package tasks

import (
	"context"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

type registrar func(name string, f consumer.HandlerFunc, opts ...consumer.TaskOptions)

func secs(v any) time.Duration {
	f, _ := toFloat(v)
	return time.Duration(f * float64(time.Second))
}

func (s *suite) registerRetries(h registrar) {
	// retry: default_retry_delay=1; the attempt counter lives on the task
	// object in Celery, so it is per worker process here too.
	h("retry", fn("retry", params{names: []string{"return_value"}, defaults: map[string]any{"return_value": nil}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if rv := b.get("return_value"); truthy(rv) {
			s.mu.Lock()
			attempt := s.attempt
			if attempt >= 3 {
				s.attempt = 0
				s.mu.Unlock()
				return rv, nil
			}
			s.attempt = attempt + 1
			s.mu.Unlock()
		}
		return nil, consumer.Retry(5*time.Second, ExpectedException())
	}), consumer.TaskOptions{DefaultRetryDelay: time.Second})
	h("retry_unpickleable", fn("retry_unpickleable", params{names: []string{"foo", "bar"}, kwonly: []string{"retry_kwargs"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		re := consumer.Retry(0, &results.Exception{Module: "t.integration.tasks", Type: "UnpickleableException", Message: []any{b.get("foo")}})
		if kw, ok := b.get("retry_kwargs").(map[string]any); ok {
			if c, ok := kw["countdown"]; ok {
				re.Countdown = secs(c)
			}
			if m, ok := kw["max_retries"].(int64); ok {
				re.MaxRetries = consumer.Int(int(m))
			}
		}
		return nil, re
	}), consumer.TaskOptions{DefaultRetryDelay: time.Second})
	one := consumer.TaskOptions{MaxRetries: consumer.Int(1)}
	h("retry_with_args_after_kwargs", fn("retry_with_args_after_kwargs", params{names: []string{"foo", "bar", "label"}, defaults: map[string]any{"label": nil}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries == 0 {
			foo, err := pyAdd(b.get("foo"), int64(1))
			if err != nil {
				return nil, err
			}
			bar, err := pyAdd(b.get("bar"), int64(1))
			if err != nil {
				return nil, err
			}
			// Celery 5.7's retry(args=...) keeps the inherited kwargs that
			// the new positionals do not cover (#6494).
			re := consumer.Retry(time.Nanosecond, nil)
			re.Args = []any{foo, bar}
			re.Kwargs = dropKeys(r.Kwargs, "foo", "bar")
			return nil, re
		}
		return map[string]any{"foo": b.get("foo"), "bar": b.get("bar"), "label": b.get("label"), "retries": int64(r.Retries), "is_eager": false}, nil
	}), one)
	h("retry_with_kwargs_after_args", fn("retry_with_kwargs_after_args", params{names: []string{"foo", "bar"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries == 0 {
			foo, err := pyAdd(b.get("foo"), int64(1))
			if err != nil {
				return nil, err
			}
			// Celery 5.7's retry(kwargs=...) puts an explicit keyword in
			// the place of the inherited positional it names (#6494).
			re := consumer.Retry(time.Nanosecond, nil)
			re.Args = append([]any{}, r.Args...)
			re.Kwargs = map[string]any{}
			if len(re.Args) > 0 {
				re.Args[0] = foo
			} else {
				re.Kwargs["foo"] = foo
			}
			return nil, re
		}
		return map[string]any{"foo": b.get("foo"), "bar": b.get("bar"), "retries": int64(r.Retries), "is_eager": false}, nil
	}), one)
	onceP := params{varargs: true, kwonly: []string{"expires", "max_retries", "countdown"},
		defaults: map[string]any{"expires": nil, "max_retries": int64(1), "countdown": 0.1}}
	retryOnce := func(b bound) error {
		re := consumer.Retry(max(secs(b.get("countdown")), time.Nanosecond), nil)
		if m, ok := b.get("max_retries").(int64); ok {
			re.MaxRetries = consumer.Int(int(m))
		}
		return re
	}
	h("retry_once", fn("retry_once", onceP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries > 0 {
			return int64(r.Retries), nil
		}
		return nil, retryOnce(b)
	}), one)
	h("retry_once_priority", fn("retry_once_priority", params{varargs: true, kwonly: onceP.kwonly, defaults: map[string]any{"expires": 60.0, "max_retries": int64(1), "countdown": 0.1}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries > 0 {
			return r.DeliveryInfo()["priority"], nil
		}
		return nil, retryOnce(b)
	}), one)
	h("retry_once_headers", fn("retry_once_headers", params{varargs: true, kwonly: []string{"max_retries", "countdown"}, defaults: map[string]any{"max_retries": int64(1), "countdown": 0.1}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries > 0 {
			headers := map[string]any{}
			for k, v := range r.Headers {
				headers[k] = v
			}
			return headers, nil
		}
		return nil, retryOnce(b)
	}), one)
	h("retry_once_ignore_result", fn("retry_once_ignore_result", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries == 0 {
			return nil, consumer.Retry(time.Nanosecond, nil)
		}
		return int64(r.Retries), nil
	}), consumer.TaskOptions{IgnoreResult: true})
	h("retry_once_with_result", fn("retry_once_with_result", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if r.Retries == 0 {
			return nil, consumer.Retry(time.Nanosecond, nil)
		}
		return int64(r.Retries), nil
	}))
}

// dropKeys returns kw without the named keys (never nil).
func dropKeys(kw map[string]any, names ...string) map[string]any {
	out := map[string]any{}
	for k, v := range kw {
		out[k] = v
	}
	for _, n := range names {
		delete(out, n)
	}
	return out
}

func (s *suite) registerReplacements(h registrar) {
	h("add_replaced", fn("add_replaced", params{names: []string{"x", "y"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, consumer.Replace(sig("add", b.get("x"), b.get("y")))
	}))
	h("record_replaced_task_nesting", fn("record_replaced_task_nesting", params{names: []string{"replacements", "nesting"}, defaults: map[string]any{"nesting": nil}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		nesting, _ := b.get("nesting").([]any)
		nesting = append(append([]any{}, nesting...), int64(r.ReplacedTaskNesting))
		if n, _ := b.get("replacements").(int64); n > 0 {
			next := sig("record_replaced_task_nesting", n-1, nesting)
			if r.Properties.ReplyTo != "" {
				next.Options["reply_to"] = r.Properties.ReplyTo
			}
			return nil, consumer.Replace(next)
		}
		return nesting, nil
	}))
	h("add_replaced_with_chain", fn("add_replaced_with_chain", params{names: []string{"x", "y"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, consumer.Replace(producer.Chain(sig("add", b.get("x"), b.get("y")), sig("identity")))
	}))
	linkSig := func(b bound) protocol.Signature {
		l := sig("redis_echo")
		if msg := b.get("link_msg"); msg != nil {
			l.Args = []any{msg}
			l.Immutable = true
		}
		return l
	}
	chainP := params{varargs: true, kwonly: []string{"link_msg"}, defaults: map[string]any{"link_msg": nil}}
	h("replace_with_chain", fn("replace_with_chain", chainP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		c := producer.Chain(sig("identity", b.extra...), sig("identity"))
		c.Options["link"] = []any{linkSig(b).Map()}
		return nil, consumer.Replace(c)
	}))
	h("replace_with_chain_which_raises", fn("replace_with_chain_which_raises", chainP, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		c := producer.Chain(sig("identity", b.extra...), sig("raise_error"))
		c.Options["link_error"] = []any{linkSig(b).Map()}
		return nil, consumer.Replace(c)
	}))
	h("replace_with_empty_chain", fn("replace_with_empty_chain", params{varargs: true}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, consumer.Replace(producer.Chain())
	}))
	h("replace_with_chain_which_contains_a_group", fn("replace_with_chain_which_contains_a_group", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, consumer.Replace(producer.Chain(sig("add", int64(1), int64(2)), producer.Group(sig("add", int64(1)), sig("add", int64(1)))))
	}))
	h("add_to_all", fn("add_to_all", params{names: []string{"nums", "val"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		nums, err := iterable(b.get("nums"))
		if err != nil {
			return nil, err
		}
		var subtasks []protocol.Signature
		for _, n := range nums {
			subtasks = append(subtasks, sig("add", n, b.get("val")))
		}
		return nil, consumer.Replace(producer.Group(subtasks...))
	}))
	h("add_to_all_to_chord", fn("add_to_all_to_chord", params{names: []string{"nums", "val"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		nums, err := iterable(b.get("nums"))
		if err != nil {
			return nil, err
		}
		for _, n := range nums {
			if err := s.addToChord(ctx, r, sig("add", n, b.get("val"))); err != nil {
				return nil, err
			}
		}
		return int64(0), nil
	}))
	h("add_chord_to_chord", fn("add_chord_to_chord", params{names: []string{"nums", "val"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		nums, err := iterable(b.get("nums"))
		if err != nil {
			return nil, err
		}
		var subtasks []protocol.Signature
		for _, n := range nums {
			subtasks = append(subtasks, sig("add", n, b.get("val")))
		}
		return int64(0), s.addToChord(ctx, r, producer.Chord(subtasks, sig("tsum")))
	}))
	h("second_order_replace1", fn("second_order_replace1", params{names: []string{"state"}, defaults: map[string]any{"state": false}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if !truthy(b.get("state")) {
			if err := s.Redis.RPush(ctx, "redis-echo", "In A").Err(); err != nil {
				return nil, err
			}
			next := si("second_order_replace1")
			next.Kwargs = map[string]any{"state": true}
			return nil, consumer.Replace(producer.Chain(sig("second_order_replace2"), next))
		}
		return nil, s.Redis.RPush(ctx, "redis-echo", "Out A").Err()
	}))
	h("second_order_replace2", fn("second_order_replace2", params{names: []string{"state"}, defaults: map[string]any{"state": false}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if !truthy(b.get("state")) {
			if err := s.Redis.RPush(ctx, "redis-echo", "In B").Err(); err != nil {
				return nil, err
			}
			next := si("second_order_replace2")
			next.Kwargs = map[string]any{"state": true}
			return nil, consumer.Replace(producer.Chain(sig("redis_echo", "In/Out C"), next))
		}
		return nil, s.Redis.RPush(ctx, "redis-echo", "Out B").Err()
	}))
	h("fail_replaced", fn("fail_replaced", params{varargs: true}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, consumer.Replace(si("fail", b.extra...))
	}))
	h("replace_with_stamped_task", fn("replace_with_stamped_task", params{names: []string{"replace_with"}, defaults: map[string]any{"replace_with": nil}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		with := sig("replaced_with_me")
		if rw := b.get("replace_with"); rw != nil {
			var err error
			if with, err = protocol.SignatureFrom(rw); err != nil {
				return nil, &consumer.ArgumentError{Msg: err.Error()}
			}
		}
		// StampedTaskOnReplace.on_replace stamps the replacement with
		// StampOnReplace before it is sent.
		return nil, consumer.Replace(stamp(with, map[string]any{"StampOnReplace": "This is the replaced task"}))
	}))
	h("build_chain_inside_task", fn("build_chain_inside_task", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		// The ids are fixed before sending so that the returned result can
		// carry its parents, as Celery's chain result does.
		id := func(s protocol.Signature) (protocol.Signature, string) {
			v := uuid.NewString()
			s.Options["task_id"] = v
			return s, v
		}
		s1, id1 := id(sig("add", int64(1), int64(1)))
		s2, id2 := id(sig("add", int64(2)))
		m1, mid1 := id(sig("add", int64(3)))
		m2, mid2 := id(sig("add", int64(4)))
		g, gid := id(producer.Group(m1, m2))
		s5, id5 := id(sig("add", int64(5)))
		if _, err := s.Producer.Apply(ctx, producer.Chain(s1, s2, g, s5), nil); err != nil {
			return nil, err
		}
		// A returned AsyncResult is stored as its as_tuple(): ((id,
		// parent), children).
		leaf := func(id string, parent any) any { return []any{[]any{id, parent}, nil} }
		group := []any{[]any{gid, leaf(id2, leaf(id1, nil))}, []any{leaf(mid1, nil), leaf(mid2, nil)}}
		return leaf(id5, group), nil
	}))
}

// stamp applies a stamping visitor's stamp to sig and, for canvases, to
// every signature in it, as Signature.stamp does.
func stamp(s protocol.Signature, stamps map[string]any) protocol.Signature {
	opts := map[string]any{}
	for k, v := range s.Options {
		opts[k] = v
	}
	headers, _ := opts["stamped_headers"].([]any)
	for k, v := range stamps {
		opts[k] = v
		found := false
		for _, h := range headers {
			if h == k {
				found = true
			}
		}
		if !found {
			headers = append(headers, k)
		}
	}
	opts["stamped_headers"] = headers
	s.Options = opts
	return s
}

// addToChord is Task.add_to_chord: sig joins the chord the task is in (its
// group, chord body and root), the chord's expected size grows by one, and
// sig is sent.
func (s *suite) addToChord(ctx context.Context, r *consumer.Request, sg protocol.Signature) error {
	if r.Chord == nil || r.Group == "" {
		return valueError("Current task is not member of any chord") // Celery raises ValueError
	}
	gid := r.Group
	if err := s.Redis.IncrBy(ctx, "celery-taskset-meta-"+gid+".t", 1).Err(); err != nil {
		return err
	}
	body := *r.Chord
	_, err := s.Producer.Apply(ctx, sg, nil, func(o *producer.Options) {
		o.GroupID = gid
		o.Chord = &body
		o.RootID = r.RootID
		o.ParentID = r.ID
	})
	return err
}

func (s *suite) registerErrbacks(h registrar) {
	count := func(ctx context.Context, key any) error { return s.Redis.Incr(ctx, str(key)).Err() }
	echo := func(ctx context.Context, key, msg any) error {
		return s.Redis.RPush(ctx, str(key), redisValue(msg)).Err()
	}
	h("errback_old_style", fn("errback_old_style", params{names: []string{"request_id"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return b.get("request_id"), count(ctx, b.get("request_id"))
	}))
	// The new-style errbacks take (request, exc, traceback) when the
	// Python worker calls them in its own process; a Go worker sends
	// every errback as a task with the failed task's id, so they take
	// that id where Python passes the request.
	h("errback_new_style", fn("errback_new_style", params{names: []string{"request", "exc", "tb"}, defaults: map[string]any{"exc": nil, "tb": nil}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		id := requestID(b.get("request"))
		return id, count(ctx, id)
	}))
	h("errback_old_style_with_args", fn("errback_old_style_with_args", params{names: []string{"request_id", "label"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, echo(ctx, b.get("request_id"), b.get("label"))
	}))
	newWithArgs := fn("errback_new_style_with_args", params{names: []string{"request", "exc", "tb", "label"}}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, echo(ctx, requestID(b.get("request")), b.get("label"))
	})
	h("errback_new_style_with_args", func(ctx context.Context, r *consumer.Request) (any, error) {
		if len(r.Args) == 2 && len(r.Kwargs) == 0 { // sent by a Go worker: (task id, label)
			return nil, echo(ctx, r.Args[0], r.Args[1])
		}
		return newWithArgs(ctx, r)
	})
}

func requestID(v any) any {
	if m, ok := v.(map[string]any); ok {
		return m["id"]
	}
	return v
}

func (s *suite) registerNested(h registrar) {
	add := func() protocol.Signature { return sig("add") }
	nested := map[string]func() protocol.Signature{
		"chain_chain": func() protocol.Signature { return producer.Chain(producer.Chain(add())) },
		"chain_group": func() protocol.Signature { return producer.Chain(producer.Group(add())) },
		"chain_chord": func() protocol.Signature { return producer.Chain(producer.Chord([]protocol.Signature{add()}, add())) },
		"group_chain": func() protocol.Signature { return producer.Group(producer.Chain(add())) },
		"group_group": func() protocol.Signature { return producer.Group(producer.Group(add())) },
		"group_chord": func() protocol.Signature { return producer.Group(producer.Chord([]protocol.Signature{add()}, add())) },
		"chord_chain": func() protocol.Signature { return producer.Chord([]protocol.Signature{producer.Chain(add())}, add()) },
		"chord_group": func() protocol.Signature { return producer.Chord([]protocol.Signature{producer.Group(add())}, add()) },
		"chord_chord": func() protocol.Signature {
			return producer.Chord([]protocol.Signature{producer.Chord([]protocol.Signature{add()}, add())}, add())
		},
	}
	for k, f := range nested {
		name := "return_nested_signature_" + k
		h(name, fn(name, params{}, func(context.Context, *consumer.Request, bound) (any, error) { return f().Map(), nil }))
	}
}

func (s *suite) registerRejects(h registrar) {
	late := consumer.TaskOptions{AcksLate: consumer.Bool(true)}
	h("store_success_then_reject", fn("store_success_then_reject", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if !r.Redelivered {
			if err := r.UpdateState(ctx, results.Success, "first-pass"); err != nil {
				return nil, err
			}
			return nil, &consumer.RejectError{Requeue: true}
		}
		return "dedup-pass", nil
	}), late)
	h("reject_then_succeed", fn("reject_then_succeed", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		if !r.Redelivered {
			return nil, &consumer.RejectError{Requeue: true}
		}
		return "second-pass", nil
	}), late)
	h("reject_without_requeue", fn("reject_without_requeue", params{}, func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		return nil, &consumer.RejectError{Reason: "rejected", Requeue: false}
	}))
	h("soft_time_limit_must_exceed_time_limit", fn("soft_time_limit_must_exceed_time_limit", params{}, func(context.Context, *consumer.Request, bound) (any, error) {
		return nil, nil
	}), consumer.TaskOptions{SoftTimeLimit: 2 * time.Second, TimeLimit: time.Second})
	limits := func(ctx context.Context, r *consumer.Request, b bound) (any, error) {
		lim := func(d time.Duration) any {
			if d == 0 {
				return nil
			}
			if d%time.Second == 0 {
				return int64(d / time.Second)
			}
			return d.Seconds()
		}
		return map[string]any{"time_limit": lim(r.TimeLimit.Hard), "soft_time_limit": lim(r.TimeLimit.Soft)}, nil
	}
	h("return_request_time_limits", fn("return_request_time_limits", params{}, limits))
	h("task_with_declared_time_limits", fn("task_with_declared_time_limits", params{}, limits),
		consumer.TaskOptions{TimeLimit: 60 * time.Second, SoftTimeLimit: 45 * time.Second})
}
