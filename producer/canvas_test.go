package producer

import (
	"context"
	"sort"
	"testing"

	"github.com/gocelery/gocelery/protocol"
)

// sizes records SetChordSize; Get/Wait/Forget are unused here.
type sizes struct {
	Backend
	got map[string]int
}

func (s *sizes) SetChordSize(_ context.Context, gid string, n int) error {
	s.got[gid] = n
	return nil
}

func decodeAll(t *testing.T, rec *recorder) []*protocol.Message {
	t.Helper()
	var out []*protocol.Message
	for i := range rec.sent {
		m, err := protocol.Decode(&rec.sent[i].Raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return index(out[i]) < index(out[j]) })
	return out
}

func index(m *protocol.Message) int {
	if m.GroupIndex == nil {
		return -1
	}
	return *m.GroupIndex
}

func TestParentFromContext(t *testing.T) {
	rec := &recorder{}
	p := New(rec, nil, Config{})
	ctx := protocol.WithMessage(context.Background(), &protocol.Message{ID: "running", RootID: "root"})
	if _, err := p.SendTask(ctx, "proj.add", nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.SendTask(ctx, "proj.add", nil, nil, Parent("r2", "p2")); err != nil {
		t.Fatal(err)
	}
	m := decodeAll(t, rec)
	if m[0].ParentID != "running" || m[0].RootID != "root" {
		t.Errorf("sent inside a task: parent %q root %q", m[0].ParentID, m[0].RootID)
	}
	if m[1].ParentID != "p2" || m[1].RootID != "r2" {
		t.Errorf("explicit Parent lost: parent %q root %q", m[1].ParentID, m[1].RootID)
	}
}

// The first step carries the rest reversed, each with its task id, as
// Celery's chain vector shows.
func TestApplyChain(t *testing.T) {
	rec := &recorder{}
	p := New(rec, nil, Config{})
	c := Chain(Sig("proj.add", 2, 2), Sig("proj.add", 4), Si("proj.add", 8, 8))
	r, err := p.Apply(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := decodeAll(t, rec)
	if len(m) != 1 {
		t.Fatalf("%d messages, want the first step only", len(m))
	}
	first := m[0]
	if len(first.Chain) != 2 || first.Chain[0].Immutable != true || first.Chain[1].Args[0] != int64(4) {
		t.Fatalf("chain field = %+v", first.Chain)
	}
	if r.ID == "" || r.ID != first.Chain[0].ID() || first.Chain[1].ID() == "" {
		t.Errorf("result %q, step ids %q %q: the chain's result is its last step's", r.ID, first.Chain[0].ID(), first.Chain[1].ID())
	}
	if first.RootID != first.ID {
		t.Errorf("root %q of the first step", first.RootID)
	}
}

func TestApplyChord(t *testing.T) {
	rec := &recorder{}
	be := &sizes{got: map[string]int{}}
	p := New(rec, be, Config{})
	body := Sig("proj.tsum")
	body.Options = map[string]any{"task_id": "body-id"}
	c := Chord([]protocol.Signature{Sig("proj.add", 1), Sig("proj.add", 2)}, body)
	c.Options["task_id"] = "gid"
	r, err := p.Apply(context.Background(), c, []any{10})
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "body-id" || be.got["gid"] != 2 {
		t.Errorf("result %q, sizes %v", r.ID, be.got)
	}
	m := decodeAll(t, rec)
	if len(m) != 2 {
		t.Fatalf("%d messages, want the 2 header tasks", len(m))
	}
	for i, h := range m {
		if h.Group != "gid" || index(h) != i || h.Chord == nil || h.Chord.ID() != "body-id" {
			t.Errorf("header %d: group %q index %v chord %+v", i, h.Group, h.GroupIndex, h.Chord)
		}
		if h.Chord.Options["group_id"] != "gid" {
			t.Errorf("body options %v: Celery sets group_id", h.Chord.Options)
		}
		if len(h.Args) != 2 || h.Args[0] != int64(10) {
			t.Errorf("header %d args %v: partial args come first", i, h.Args)
		}
	}
	// Without a backend that counts parts, a chord is refused, not lost.
	if _, err := New(rec, nil, Config{}).Apply(context.Background(), c, nil); err != ErrChordNeedsBackend {
		t.Errorf("chord without backend: %v", err)
	}
}

func TestOptionsOf(t *testing.T) {
	o, err := optionsOf(map[string]any{
		"task_id": "x", "queue": map[string]any{"name": "q1"}, "priority": int64(3), "countdown": 2.5,
		"soft_time_limit": int64(4), "link": []any{Sig("a").Map()}, "group_index": int64(1), "group_id": "g",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.TaskID != "x" || o.Queue != "q1" || *o.Priority != 3 || o.ETA.IsZero() || o.TimeLimit.Soft == 0 ||
		len(o.Link) != 1 || *o.GroupIndex != 1 || o.GroupID != "g" {
		t.Errorf("options = %+v", o)
	}
	if o, _ := optionsOf(map[string]any{"delivery_mode": "transient"}); !o.Transient {
		t.Error("delivery_mode transient not read")
	}
	rec := &recorder{}
	if _, err := New(rec, nil, Config{}).SendTask(context.Background(), "t", nil, nil, Transient()); err != nil {
		t.Fatal(err)
	}
	if m := decodeAll(t, rec)[0]; m.Properties.DeliveryMode != 1 {
		t.Errorf("Transient sent delivery_mode %d", m.Properties.DeliveryMode)
	}
	if _, err := optionsOf(map[string]any{"eta": "not a date"}); err == nil {
		t.Error("a bad eta was accepted")
	}
}
