package producer

import (
	"context"
	"fmt"

	"github.com/gocelery/gocelery/protocol"
)

// ImproperlyConfigured is Celery's celery.exceptions.ImproperlyConfigured,
// which Task.replace raises for a replacement it refuses.
type ImproperlyConfigured struct{ Msg string }

func (e *ImproperlyConfigured) Error() string { return e.Msg }

// PythonException names the Python class Celery clients re-raise.
func (e *ImproperlyConfigured) PythonException() (module, typ string) {
	return "celery.exceptions", "ImproperlyConfigured"
}

// The replacements Task.replace refuses, with Celery's messages.
var (
	ErrReplaceChordMember = &ImproperlyConfigured{"A signature replacing a task must not be part of a chord"}
	ErrReplaceEmptyChain  = &ImproperlyConfigured{"Cannot replace with an empty chain"}
)

// accumulate is celery.accumulate.s(index=0), the body Celery gives a group
// so that something can be linked after it.
func accumulate() protocol.Signature {
	return protocol.Signature{Task: "celery.accumulate", Kwargs: map[string]any{"index": int64(0)}, Options: map[string]any{}}
}

// Replace sends sig in place of the task of m, as Celery 5.7's
// Task.replace followed by on_replace's sig.delay(): a group becomes a
// chord with celery.accumulate as body (and so does a chain's final
// group); m's callbacks and errbacks are linked to sig; sig is frozen with
// m's id (a chain's last task, a chord's body takes it); m's chord, group,
// group index and root id carry over, with replaced_task_nesting + 1; and
// the rest of m's chain follows sig, keeping its task ids.
func (w *Workflow) Replace(ctx context.Context, m *protocol.Message, sig protocol.Signature) error {
	if _, ok := sig.Options["chord"]; ok {
		return ErrReplaceChordMember
	}
	sig = cloneSig(sig)
	nesting := m.ReplacedTaskNesting + 1
	switch sig.SubtaskType {
	case protocol.SubtaskGroup:
		tasks, err := sig.Tasks()
		if err != nil {
			return err
		}
		sig = Chord(tasks, accumulate())
	case protocol.SubtaskChain:
		tasks, err := sig.Tasks()
		if err != nil {
			return err
		}
		if len(tasks) == 0 {
			return ErrReplaceEmptyChain
		}
		if last := tasks[len(tasks)-1]; last.SubtaskType == protocol.SubtaskGroup {
			members, err := last.Tasks()
			if err != nil {
				return err
			}
			tasks[len(tasks)-1] = Chord(members, accumulate())
		}
		// The chain's own callbacks move to its last task and its errbacks
		// to every task, as Celery does before linking anything after it.
		cbs, err := sigsOpt(sig.Options["link"])
		if err != nil {
			return fmt.Errorf("link: %w", err)
		}
		ebs, err := sigsOpt(sig.Options["link_error"])
		if err != nil {
			return fmt.Errorf("link_error: %w", err)
		}
		delete(sig.Options, "link")
		delete(sig.Options, "link_error")
		for i := range tasks {
			var c []protocol.Signature
			if i == len(tasks)-1 {
				c = cbs
			}
			if err := link(&tasks[i], c, ebs); err != nil {
				return err
			}
			setOpt(&tasks[i], "replaced_task_nesting", int64(nesting))
		}
		sig.Kwargs = map[string]any{"tasks": sigList(tasks)}
	}
	if err := link(&sig, m.Callbacks, m.Errbacks); err != nil {
		return err
	}
	if err := setResultID(&sig, m.ID); err != nil {
		return err
	}
	setOpt(&sig, "replaced_task_nesting", int64(nesting))

	o := []Option{Parent(rootOf(m), m.ID), func(o *Options) {
		o.ReplacedTaskNesting = nesting
		if m.Chord != nil {
			body := *m.Chord
			o.Chord = &body
		}
		if m.Group != "" {
			o.GroupID = m.Group
		}
		if m.GroupIndex != nil {
			i := *m.GroupIndex
			o.GroupIndex = &i
		}
	}}
	if len(m.Chain) > 0 {
		// sig | each remaining step of m's chain (m.Chain is reversed).
		steps := []protocol.Signature{sig}
		for i := len(m.Chain) - 1; i >= 0; i-- {
			s := cloneSig(m.Chain[i])
			setOpt(&s, "replaced_task_nesting", int64(nesting))
			steps = append(steps, s)
		}
		// The chord membership goes to the chain's end, where applyChain
		// puts it; the callbacks stay with sig, and the steps keep ids.
		sig = Chain(steps...)
	}
	if _, err := w.p.Apply(ctx, sig, nil, o...); err != nil {
		return fmt.Errorf("replace %s[%s]: %w", m.Task, m.ID, err)
	}
	return nil
}

// sentBy is what app.send_task fills in for a task sent while m runs: m as
// the parent and m's root as the root, unless the signature names its own.
func sentBy(m *protocol.Message) Option {
	return func(o *Options) {
		if o.RootID == "" {
			o.RootID = rootOf(m)
		}
		if o.ParentID == "" {
			o.ParentID = m.ID
		}
	}
}

// link adds callbacks and errbacks to sig as Celery's sig.link and
// sig.link_error do before a replacement is sent: a chain's callbacks go to
// its last task and its errbacks to every task.
func link(sig *protocol.Signature, cbs, ebs []protocol.Signature) error {
	if len(cbs) == 0 && len(ebs) == 0 {
		return nil
	}
	if sig.SubtaskType == protocol.SubtaskChain {
		tasks, err := sig.Tasks()
		if err != nil {
			return err
		}
		for i := range tasks {
			var c []protocol.Signature
			if i == len(tasks)-1 {
				c = cbs
			}
			if err := link(&tasks[i], c, ebs); err != nil {
				return err
			}
		}
		sig.Kwargs = map[string]any{"tasks": sigList(tasks)}
		return nil
	}
	for key, add := range map[string][]protocol.Signature{"link": cbs, "link_error": ebs} {
		if len(add) == 0 {
			continue
		}
		have, err := sigsOpt(sig.Options[key])
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		setOpt(sig, key, sigList(append(have, add...)))
	}
	return nil
}

// setResultID freezes sig with id as Celery's sig.freeze(id) does: the
// task id of a task, of a chain's last task, of a chord's body.
func setResultID(sig *protocol.Signature, id string) error {
	switch sig.SubtaskType {
	case "":
		setOpt(sig, "task_id", id)
	case protocol.SubtaskChain:
		tasks, err := sig.Tasks()
		if err != nil {
			return err
		}
		if err := setResultID(&tasks[len(tasks)-1], id); err != nil {
			return err
		}
		sig.Kwargs = map[string]any{"tasks": sigList(tasks)}
	case protocol.SubtaskChord:
		body, err := sig.Body()
		if err != nil {
			return err
		}
		if err := setResultID(&body, id); err != nil {
			return err
		}
		kw := make(map[string]any, len(sig.Kwargs))
		for k, v := range sig.Kwargs {
			kw[k] = v
		}
		kw["body"] = body.Map()
		sig.Kwargs = kw
	case protocol.SubtaskGroup:
		setOpt(sig, "task_id", id)
	default:
		return fmt.Errorf("producer: cannot replace a task with a %q signature", sig.SubtaskType)
	}
	return nil
}

func cloneSig(s protocol.Signature) protocol.Signature {
	opts := make(map[string]any, len(s.Options))
	for k, v := range s.Options {
		opts[k] = v
	}
	s.Options = opts
	if s.Kwargs != nil {
		kw := make(map[string]any, len(s.Kwargs))
		for k, v := range s.Kwargs {
			kw[k] = v
		}
		s.Kwargs = kw
	}
	return s
}
