package producer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/protocol"
)

// Sig returns the signature of task name with partial args, as
// name.s(*args) in Celery.
func Sig(name string, args ...any) protocol.Signature {
	return protocol.Signature{Task: name, Args: args}
}

// Si returns an immutable signature: the parent's result is not
// prepended to its args (Celery's name.si(*args)).
func Si(name string, args ...any) protocol.Signature {
	return protocol.Signature{Task: name, Args: args, Immutable: true}
}

// Chain returns celery.chain(sigs...): each step's result is the first
// argument of the next.
func Chain(sigs ...protocol.Signature) protocol.Signature {
	return composite("celery.chain", protocol.SubtaskChain, map[string]any{"tasks": sigList(sigs)})
}

// Group returns celery.group(sigs...): the tasks run in parallel.
func Group(sigs ...protocol.Signature) protocol.Signature {
	return composite("celery.group", protocol.SubtaskGroup, map[string]any{"tasks": sigList(sigs)})
}

// Chord returns celery.chord(header, body): body runs with the list of
// the header's results, in header order.
func Chord(header []protocol.Signature, body protocol.Signature) protocol.Signature {
	g := Group(header...)
	return composite("celery.chord", protocol.SubtaskChord, map[string]any{
		"header": g.Map(), "body": body.Map(), "kwargs": map[string]any{},
	})
}

func composite(task, kind string, kwargs map[string]any) protocol.Signature {
	return protocol.Signature{Task: task, SubtaskType: kind, Kwargs: kwargs, Options: map[string]any{}}
}

func sigList(sigs []protocol.Signature) []any {
	out := make([]any, len(sigs))
	for i := range sigs {
		out[i] = sigs[i].Map()
	}
	return out
}

// ErrChordNeedsBackend is returned when a chord is applied by a producer
// without a result backend that counts chord parts (Celery raises
// NotImplementedError for the disabled backend).
var ErrChordNeedsBackend = errors.New("producer: a chord needs the Redis result backend")

// chordSizer is the part of the result backend a chord needs.
type chordSizer interface {
	SetChordSize(ctx context.Context, groupID string, size int) error
}

// Apply sends sig as Signature.apply_async does: args are prepended to
// its partial args unless it is immutable, and opts override its options.
// Chains, groups and chords are applied as Celery applies them; the
// result is the last step's for a chain, the body's for a chord, and the
// group's (ID is the group id, Children the members') for a group.
func (p *Producer) Apply(ctx context.Context, sig protocol.Signature, args []any, opts ...Option) (*AsyncResult, error) {
	o, err := optionsOf(sig.Options)
	if err != nil {
		return nil, fmt.Errorf("producer: signature %s: %w", sig.Task, err)
	}
	for _, f := range opts {
		f(&o)
	}
	return p.apply(ctx, sig, args, &o)
}

func (p *Producer) apply(ctx context.Context, sig protocol.Signature, args []any, o *Options) (*AsyncResult, error) {
	if sig.Immutable {
		args = nil
	}
	switch sig.SubtaskType {
	case "":
		all := make([]any, 0, len(args)+len(sig.Args))
		all = append(append(all, args...), sig.Args...)
		return p.send(ctx, sig.Task, all, sig.Kwargs, o)
	case protocol.SubtaskChain:
		tasks, err := sig.Tasks()
		if err != nil {
			return nil, err
		}
		return p.applyChain(ctx, tasks, args, o)
	case protocol.SubtaskGroup:
		tasks, err := sig.Tasks()
		if err != nil {
			return nil, err
		}
		return p.applyGroup(ctx, tasks, args, o)
	case protocol.SubtaskChord:
		header, err := sig.Header()
		if err != nil {
			return nil, err
		}
		tasks, err := header.Tasks()
		if err != nil {
			return nil, err
		}
		body, err := sig.Body()
		if err != nil {
			return nil, err
		}
		if o.TaskID == "" {
			o.TaskID = header.ID()
		}
		return p.applyChord(ctx, tasks, body, args, o)
	}
	return nil, fmt.Errorf("producer: %q signatures are not supported", sig.SubtaskType)
}

// applyChain sends the first step with the others (reversed) in its
// "chain" field, as chain.run does after prepare_steps: nested chains are
// flattened, a group followed by a step becomes a chord with that step as
// body, and every step gets its task id now so the chain's ids are known.
func (p *Producer) applyChain(ctx context.Context, tasks []protocol.Signature, args []any, o *Options) (*AsyncResult, error) {
	steps, err := flattenChain(tasks)
	if err != nil {
		return nil, err
	}
	if len(steps) == 0 {
		return nil, errors.New("producer: empty chain")
	}
	// The chain's own options: the task id and link go to the last step
	// (the chain's result), link_error to every step; a chain inside a
	// group or chord header is a member through its last step.
	last := &steps[len(steps)-1]
	if o.TaskID != "" && last.SubtaskType == "" {
		setOpt(last, "task_id", o.TaskID)
	}
	if len(o.Link) > 0 {
		setOpt(last, "link", sigList(o.Link))
	}
	if o.GroupID != "" {
		setOpt(last, "group_id", o.GroupID)
		if o.GroupIndex != nil {
			setOpt(last, "group_index", *o.GroupIndex)
		}
	}
	if o.Chord != nil {
		setOpt(last, "chord", o.Chord.Map())
	}
	for i := range steps {
		freeze(&steps[i])
		if rt := p.replyTo(o); rt != "" && steps[i].Options["reply_to"] == nil {
			setOpt(&steps[i], "reply_to", rt) // as Celery's freeze: the rpc:// reply queue
		}
		if len(o.LinkError) > 0 {
			setOpt(&steps[i], "link_error", sigList(o.LinkError))
		}
	}
	result := p.AsyncResult(resultID(&steps[len(steps)-1]))
	rest := make([]protocol.Signature, 0, len(steps)-1)
	for i := len(steps) - 1; i >= 1; i-- {
		rest = append(rest, steps[i])
	}
	fo, err := optionsOf(steps[0].Options)
	if err != nil {
		return nil, err
	}
	fo.Chain = append(fo.Chain, rest...)
	fo.RootID, fo.ParentID = o.RootID, o.ParentID
	if o.Priority != nil {
		fo.Priority = o.Priority
	}
	if _, err := p.apply(ctx, steps[0], args, &fo); err != nil {
		return nil, err
	}
	return result, nil
}

// resultID is the id of the result a step ends with: a chord's is its
// body's.
func resultID(s *protocol.Signature) string {
	if s.SubtaskType == protocol.SubtaskChord {
		if body, err := s.Body(); err == nil {
			return body.ID()
		}
	}
	return s.ID()
}

// flattenChain inlines nested chains and upgrades a group followed by a
// step to a chord, as Celery's chain does.
func flattenChain(tasks []protocol.Signature) ([]protocol.Signature, error) {
	var flat []protocol.Signature
	for _, t := range tasks {
		if t.SubtaskType == protocol.SubtaskChain {
			inner, err := t.Tasks()
			if err != nil {
				return nil, err
			}
			sub, err := flattenChain(inner)
			if err != nil {
				return nil, err
			}
			flat = append(flat, sub...)
			continue
		}
		flat = append(flat, t)
	}
	out := make([]protocol.Signature, 0, len(flat))
	for i := 0; i < len(flat); i++ {
		t := flat[i]
		if t.SubtaskType == protocol.SubtaskGroup && i+1 < len(flat) {
			members, err := t.Tasks()
			if err != nil {
				return nil, err
			}
			c := Chord(members, flat[i+1])
			c.Options = map[string]any{"task_id": uuid.NewString()}
			out = append(out, c)
			i++
			continue
		}
		out = append(out, t)
	}
	return out, nil
}

// freeze gives a step its task id (a chord: its body's), as Celery's
// freeze does before sending.
func freeze(s *protocol.Signature) {
	switch s.SubtaskType {
	case "":
		if s.ID() == "" {
			setOpt(s, "task_id", uuid.NewString())
		}
	case protocol.SubtaskChord:
		body, err := s.Body()
		if err != nil {
			return
		}
		freeze(&body)
		s.Kwargs["body"] = body.Map()
	}
}

func setOpt(s *protocol.Signature, key string, v any) {
	opts := make(map[string]any, len(s.Options)+1)
	for k, x := range s.Options {
		opts[k] = x
	}
	opts[key] = v
	s.Options = opts
}

// applyGroup sends each member with group_id and group_index, args
// prepended to each, as group.apply_async does. Members are published
// concurrently (their confirms overlap), up to groupInFlight at a time.
func (p *Producer) applyGroup(ctx context.Context, tasks []protocol.Signature, args []any, o *Options) (*AsyncResult, error) {
	gid := o.TaskID
	if gid == "" {
		gid = uuid.NewString()
	}
	res := p.AsyncResult(gid)
	res.Children = make([]*AsyncResult, len(tasks))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, groupInFlight)
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, t := range tasks {
		to, err := optionsOf(t.Options)
		if err != nil {
			return nil, fmt.Errorf("producer: group member %d: %w", i, err)
		}
		inherit(&to, o)
		to.GroupID, to.GroupIndex = gid, &i
		if o.Chord != nil {
			to.Chord = o.Chord
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := p.apply(ctx, t, args, &to)
			if err != nil {
				errs[i] = fmt.Errorf("producer: group %s member %d: %w", gid, i, err)
				cancel()
				return
			}
			res.Children[i] = r
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return res, nil
}

// groupInFlight bounds the group members being published at once.
const groupInFlight = 64

// inherit copies the options a group or chord passes down to its members.
func inherit(dst, src *Options) {
	if src.RootID != "" {
		dst.RootID = src.RootID
	}
	if src.ParentID != "" {
		dst.ParentID = src.ParentID
	}
	if src.Priority != nil && dst.Priority == nil {
		dst.Priority = src.Priority
	}
	if src.Queue != "" && dst.Queue == "" && dst.Exchange == "" {
		dst.Queue = src.Queue
	}
	if len(src.LinkError) > 0 && len(dst.LinkError) == 0 {
		dst.LinkError = src.LinkError
	}
}

// applyChord records the chord size in the result backend, then sends
// the header tasks with the body in their "chord" field, as chord.run
// does. The body carries the chord's remaining chain, and group_id.
func (p *Producer) applyChord(ctx context.Context, header []protocol.Signature, body protocol.Signature, args []any, o *Options) (*AsyncResult, error) {
	gid := o.TaskID
	if gid == "" {
		gid = uuid.NewString()
	}
	freeze(&body)
	if len(o.Chain) > 0 {
		setOpt(&body, "chain", sigList(o.Chain))
	}
	if len(o.Link) > 0 {
		setOpt(&body, "link", sigList(o.Link))
	}
	if len(o.LinkError) > 0 {
		setOpt(&body, "link_error", sigList(o.LinkError))
	}
	if o.GroupID != "" && o.Chord != nil {
		// A chord inside another chord's header (or a group in it) is a
		// member through its body: the body reports to the outer chord,
		// as Celery's chord.freeze(group_id=..., chord=...) sets it up.
		setOpt(&body, "group_id", o.GroupID)
		if o.GroupIndex != nil {
			setOpt(&body, "group_index", *o.GroupIndex)
		}
		setOpt(&body, "chord", o.Chord.Map())
	} else {
		setOpt(&body, "group_id", gid)
	}
	bodyRes := p.AsyncResult(body.ID())
	header, err := unrollHeader(header)
	if err != nil {
		return nil, err
	}
	for i, t := range header {
		if endsInGroup(t) {
			return nil, fmt.Errorf("%w: chord header member %d (%s) ends in a group", ErrComplexChordHeader, i, t.Task)
		}
	}
	if len(header) == 0 {
		bo, err := optionsOf(body.Options)
		if err != nil {
			return nil, err
		}
		bo.RootID, bo.ParentID = o.RootID, o.ParentID
		_, err = p.apply(ctx, body, []any{[]any{}}, &bo)
		return bodyRes, err
	}
	cs, ok := p.backend.(chordSizer)
	if !ok {
		return nil, ErrChordNeedsBackend
	}
	size := 0
	for _, t := range header {
		n, err := chordCount(t)
		if err != nil {
			return nil, err
		}
		size += n
	}
	if err := cs.SetChordSize(ctx, gid, size); err != nil {
		return nil, err
	}
	ho := Options{TaskID: gid, RootID: o.RootID, ParentID: o.ParentID, Priority: o.Priority, Chord: &body}
	if _, err := p.applyGroup(ctx, header, args, &ho); err != nil {
		return nil, err
	}
	return bodyRes, nil
}

// ErrComplexChordHeader is returned for a chord whose header has a member
// whose result is a group: a chain that ends in a group, or a chord whose
// body is one. Celery 5.7 saves the header's GroupResult for such a chord
// and gives the body nested lists ([2, [7, 8]]); this producer does not
// build that yet, and refuses the chord rather than run it wrongly.
var ErrComplexChordHeader = errors.New("producer: chord header member with a group result is not supported")

// endsInGroup reports whether s's result is a group's, as Celery's
// apply_chord tells a complex header by a GroupResult among its results.
func endsInGroup(s protocol.Signature) bool {
	switch s.SubtaskType {
	case protocol.SubtaskGroup:
		return true
	case protocol.SubtaskChain:
		tasks, err := s.Tasks()
		if err != nil {
			return false
		}
		for i := len(tasks) - 1; i >= 0; i-- {
			if c, err := chordCount(tasks[i]); err == nil && c == 0 {
				continue // an empty step, skipped as in chordCount
			}
			return endsInGroup(tasks[i])
		}
	case protocol.SubtaskChord:
		if body, err := s.Body(); err == nil {
			return endsInGroup(body)
		}
	}
	return false
}

// unrollHeader flattens the groups nested in a chord header into one list
// of members, in the order Celery 5.7's group._freeze_unroll gives them
// (and so their group_index): a nested group's tasks are pushed back onto
// the front of the queue with deque.extendleft, which reverses them.
// Empty chains are dropped, as Celery drops them (issue #9772).
func unrollHeader(tasks []protocol.Signature) ([]protocol.Signature, error) {
	stack := append([]protocol.Signature(nil), tasks...)
	out := make([]protocol.Signature, 0, len(tasks))
	for len(stack) > 0 {
		t := stack[0]
		stack = stack[1:]
		switch t.SubtaskType {
		case protocol.SubtaskGroup:
			inner, err := t.Tasks()
			if err != nil {
				return nil, err
			}
			front := make([]protocol.Signature, 0, len(inner)+len(stack))
			for i := len(inner) - 1; i >= 0; i-- {
				front = append(front, inner[i])
			}
			stack = append(front, stack...)
			continue
		case protocol.SubtaskChain:
			inner, err := t.Tasks()
			if err != nil {
				return nil, err
			}
			if len(inner) == 0 {
				continue
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// chordCount is how many parts a header member reports to its chord, as
// Celery 5.7's _chord._descend counts them for the chord size: every task
// of a group, a chain's last step that counts, a chord's body, one for a
// task.
func chordCount(s protocol.Signature) (int, error) {
	switch s.SubtaskType {
	case protocol.SubtaskGroup:
		tasks, err := s.Tasks()
		if err != nil {
			return 0, err
		}
		n := 0
		for _, t := range tasks {
			c, err := chordCount(t)
			if err != nil {
				return 0, err
			}
			n += c
		}
		return n, nil
	case protocol.SubtaskChain:
		tasks, err := s.Tasks()
		if err != nil {
			return 0, err
		}
		for i := len(tasks) - 1; i >= 0; i-- {
			c, err := chordCount(tasks[i])
			if err != nil {
				return 0, err
			}
			if c > 0 {
				return c, nil
			}
		}
		return 0, nil
	case protocol.SubtaskChord:
		body, err := s.Body()
		if err != nil {
			return 0, err
		}
		return chordCount(body)
	}
	return 1, nil
}

// optionsOf reads apply_async options from a signature's options dict.
// Options with no meaning for sending (stamps, subtask_type) are ignored.
// reply_to is kept: Celery's freeze sets it to the client's oid, where an
// rpc:// client waits for the chain's last step.
func optionsOf(m map[string]any) (Options, error) {
	var o Options
	str := func(k string) string { s, _ := m[k].(string); return s }
	o.TaskID, o.ReplyTo = str("task_id"), str("reply_to")
	switch q := m["queue"].(type) {
	case string:
		o.Queue = q
	case map[string]any: // a serialized kombu Queue
		o.Queue, _ = q["name"].(string)
	}
	o.Exchange, o.RoutingKey = str("exchange"), str("routing_key")
	if o.Exchange == "" && o.RoutingKey != "" && o.Queue == "" {
		o.Queue = o.RoutingKey
	}
	if n, ok := number(m["priority"]); ok {
		pr := int(n)
		o.Priority = &pr
	}
	if n, ok := number(m["countdown"]); ok {
		o.ETA = time.Now().Add(time.Duration(n * float64(time.Second))).UTC()
	}
	if s := str("eta"); s != "" {
		t, err := protocol.ParseISO(s)
		if err != nil {
			return o, fmt.Errorf("eta: %w", err)
		}
		o.ETA = t
	}
	switch e := m["expires"].(type) {
	case string:
		t, err := protocol.ParseISO(e)
		if err != nil {
			return o, fmt.Errorf("expires: %w", err)
		}
		o.Expires = t
	default:
		if n, ok := number(e); ok {
			o.Expires = time.Now().Add(time.Duration(n * float64(time.Second))).UTC()
		}
	}
	if n, ok := number(m["time_limit"]); ok {
		o.TimeLimit.Hard = time.Duration(n * float64(time.Second))
	}
	if n, ok := number(m["soft_time_limit"]); ok {
		o.TimeLimit.Soft = time.Duration(n * float64(time.Second))
	}
	if h, ok := m["headers"].(map[string]any); ok {
		o.Headers = h
	}
	o.IgnoreResult, _ = m["ignore_result"].(bool)
	switch dm := m["delivery_mode"].(type) {
	case string:
		o.Transient = dm == "transient"
	default:
		if n, ok := number(dm); ok {
			o.Transient = n == 1
		}
	}
	o.Shadow = str("shadow")
	o.RootID, o.ParentID = str("root_id"), str("parent_id")
	o.GroupID = str("group_id")
	if n, ok := number(m["replaced_task_nesting"]); ok {
		o.ReplacedTaskNesting = int(n)
	}
	if n, ok := number(m["group_index"]); ok {
		i := int(n)
		o.GroupIndex = &i
	}
	var err error
	if o.Link, err = sigsOpt(m["link"]); err != nil {
		return o, fmt.Errorf("link: %w", err)
	}
	if o.LinkError, err = sigsOpt(m["link_error"]); err != nil {
		return o, fmt.Errorf("link_error: %w", err)
	}
	if o.Chain, err = sigsOpt(m["chain"]); err != nil {
		return o, fmt.Errorf("chain: %w", err)
	}
	if c := m["chord"]; c != nil {
		s, err := protocol.SignatureFrom(c)
		if err != nil {
			return o, fmt.Errorf("chord: %w", err)
		}
		o.Chord = &s
	}
	return o, nil
}

func sigsOpt(v any) ([]protocol.Signature, error) {
	if v == nil {
		return nil, nil
	}
	return protocol.SignaturesFrom(v)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
