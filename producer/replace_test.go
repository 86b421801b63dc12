package producer

import (
	"context"
	"errors"
	"testing"

	"github.com/gocelery/gocelery/protocol"
)

// replaced is the task being replaced: a chord member with a callback, an
// errback, a root and the rest of a chain.
func replaced() *protocol.Message {
	gi := 2
	body := Sig("proj.tsum")
	body.Options = map[string]any{"task_id": "body-id"}
	next := Sig("proj.mul", 3)
	next.Options = map[string]any{"task_id": "next-id"}
	return &protocol.Message{
		ID: "self", Task: "proj.replace_me", RootID: "root",
		Group: "gid", GroupIndex: &gi, Chord: &body, ReplacedTaskNesting: 1,
		Callbacks: []protocol.Signature{Sig("proj.cb")}, Errbacks: []protocol.Signature{Sig("proj.eb")},
		Chain: []protocol.Signature{next},
	}
}

// linked gives a chain a callback and an errback of its own.
func linked(c protocol.Signature) protocol.Signature {
	c.Options["link"] = []any{Sig("proj.own_cb").Map()}
	c.Options["link_error"] = []any{Sig("proj.own_eb").Map()}
	return c
}

func TestReplace(t *testing.T) {
	noChain := func() *protocol.Message { m := replaced(); m.Chain = nil; return m }
	tests := []struct {
		name  string
		m     *protocol.Message
		sig   protocol.Signature
		check func(t *testing.T, sent []*protocol.Message)
	}{
		{"task inherits id, chord membership, links, nesting", noChain(), Sig("proj.add", 1, 2), func(t *testing.T, sent []*protocol.Message) {
			if len(sent) != 1 {
				t.Fatalf("%d messages", len(sent))
			}
			m := sent[0]
			if m.ID != "self" || m.RootID != "root" || m.ParentID != "self" {
				t.Errorf("id %q root %q parent %q: the replacement takes the task's id, its root, and the task as parent", m.ID, m.RootID, m.ParentID)
			}
			if m.Group != "gid" || index(m) != 2 || m.Chord == nil || m.Chord.ID() != "body-id" {
				t.Errorf("group %q index %v chord %v: chord membership lost", m.Group, m.GroupIndex, m.Chord)
			}
			if len(m.Callbacks) != 1 || m.Callbacks[0].Task != "proj.cb" || len(m.Errbacks) != 1 || m.Errbacks[0].Task != "proj.eb" {
				t.Errorf("callbacks %v errbacks %v", m.Callbacks, m.Errbacks)
			}
			if m.ReplacedTaskNesting != 2 {
				t.Errorf("replaced_task_nesting %d, want 2", m.ReplacedTaskNesting)
			}
		}},
		{"chain: last step takes the id and callbacks, the task's chain follows", replaced(), linked(Chain(Sig("proj.add", 1, 2), Sig("proj.identity"))), func(t *testing.T, sent []*protocol.Message) {
			m := sent[0]
			if m.Task != "proj.add" || m.ReplacedTaskNesting != 2 || len(m.Errbacks) != 2 {
				t.Fatalf("first step %s nesting %d errbacks %v", m.Task, m.ReplacedTaskNesting, m.Errbacks)
			}
			// m.Chain is reversed: [next, identity].
			if len(m.Chain) != 2 || m.Chain[1].Task != "proj.identity" || m.Chain[1].ID() != "self" || m.Chain[0].ID() != "next-id" {
				t.Fatalf("chain %+v", m.Chain)
			}
			links, _ := sigsOpt(m.Chain[1].Options["link"])
			if len(links) != 2 || links[0].Task != "proj.own_cb" || links[1].Task != "proj.cb" {
				t.Errorf("callbacks go to the replacement's last task, got %v", m.Chain[1].Options["link"])
			}
			if n, _ := number(m.Chain[0].Options["replaced_task_nesting"]); n != 2 {
				t.Errorf("the task's own chain step has nesting %v", m.Chain[0].Options["replaced_task_nesting"])
			}
		}},
		{"group becomes a chord with celery.accumulate as body", noChain(), Group(Sig("proj.add", 1, 1), Sig("proj.add", 2, 2)), func(t *testing.T, sent []*protocol.Message) {
			if len(sent) != 2 {
				t.Fatalf("%d messages, want the 2 header tasks", len(sent))
			}
			for _, h := range sent {
				if h.Chord == nil || h.Chord.Task != "celery.accumulate" || h.Chord.ID() != "self" || h.Chord.Kwargs["index"] != int64(0) {
					t.Fatalf("header task's chord body %+v", h.Chord)
				}
				if h.Chord.Options["group_id"] != "gid" || h.Chord.Options["chord"] == nil {
					t.Errorf("body options %v: the body reports to the task's chord", h.Chord.Options)
				}
				if h.Group == "gid" {
					t.Errorf("header tasks need a group of their own")
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			w := NewWorkflow(New(rec, &sizes{got: map[string]int{}}, Config{}), nil, nil)
			if err := w.Replace(context.Background(), tt.m, tt.sig); err != nil {
				t.Fatal(err)
			}
			tt.check(t, decodeAll(t, rec))
		})
	}
}

func TestReplaceRefused(t *testing.T) {
	inChord := Sig("proj.add")
	inChord.Options = map[string]any{"chord": Sig("proj.tsum").Map()}
	for _, tt := range []struct {
		sig  protocol.Signature
		want error
	}{
		{Chain(), ErrReplaceEmptyChain},
		{inChord, ErrReplaceChordMember},
	} {
		rec := &recorder{}
		w := NewWorkflow(New(rec, nil, Config{}), nil, nil)
		err := w.Replace(context.Background(), replaced(), tt.sig)
		if !errors.Is(err, tt.want) || len(rec.sent) != 0 {
			t.Errorf("Replace(%v) = %v with %d sent, want %v and nothing sent", tt.sig.Task, err, len(rec.sent), tt.want)
		}
		var ic *ImproperlyConfigured
		if !errors.As(err, &ic) {
			t.Errorf("%v is not stored as ImproperlyConfigured", err)
		}
	}
}
