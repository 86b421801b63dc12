package interop

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/broker/amqp"
	"github.com/gocelery/gocelery/producer"
	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// nestedBackendURL is the result backend of the nested chord and chord
// fault tests (DB 13 is theirs alone).
const nestedBackendURL = "redis://127.0.0.1:6379/13"

// Go-built chords whose header holds groups, a chain inside a group and a
// chord complete on a Go worker and on a Python Celery 5.7 worker, with
// the results in the order a Python-built chord gives them: Celery's
// group._freeze_unroll flattens nested groups with deque.extendleft, which
// reverses each nested group's members. The expected lists are what the
// same canvas built in Python returns (TestNestedChordMatchesPython
// compares the published messages with Celery's).
func TestGoNestedChord(t *testing.T) {
	celery := celeryBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const url = "amqp://guest:guest@127.0.0.1:5672//"
	pyq := "gonested_py_" + uuid.NewString()[:8]
	goq := "gonested_go_" + uuid.NewString()[:8]
	startPythonWorkerOn(t, celery, url, nestedBackendURL, pyq, nil)
	b, err := amqp.Dial(ctx, url, amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() }) // after the worker stops
	backend, err := results.OpenRedis(nestedBackendURL, results.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	startGoWorker(t, ctx, b, backend, goq)

	for _, w := range []struct{ name, queue, prefix string }{
		{"go worker", goq, "interop."},
		{"python worker", pyq, "pyinterop."},
	} {
		p := producer.New(b, backend, producer.Config{DefaultQueue: w.queue})
		add := func(x ...any) protocol.Signature { return producer.Sig(w.prefix+"add", x...) }
		for _, tc := range nestedChordCases(add, producer.Sig(w.prefix+"xsum")) {
			t.Run(w.name+"/"+tc.name, func(t *testing.T) {
				r, err := p.Apply(ctx, producer.Chord(tc.header, producer.Sig(w.prefix+"echo")), nil)
				if err != nil {
					t.Fatal(err)
				}
				// A chord that never completes fails here, not at the
				// suite's deadline.
				wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
				defer wcancel()
				v, err := r.Get(wctx)
				if err != nil {
					t.Fatalf("chord body: %v", err)
				}
				got, _ := v.(map[string]any)["args"].([]any)
				if len(got) != 1 || !reflect.DeepEqual(got[0], tc.want) {
					t.Errorf("body got %v, want [%v]", v, tc.want)
				}
			})
		}
	}
}

type nestedChordCase struct {
	name   string
	header []protocol.Signature
	want   []any
}

func nestedChordCases(add func(...any) protocol.Signature, xsum protocol.Signature) []nestedChordCase {
	ints := func(n ...int64) []any {
		out := make([]any, len(n))
		for i, x := range n {
			out[i] = x
		}
		return out
	}
	return []nestedChordCase{
		{"group in header", []protocol.Signature{add(1, 1), producer.Group(add(2, 2), add(3, 3))}, ints(2, 6, 4)},
		{"groups two deep", []protocol.Signature{producer.Group(add(1, 1), producer.Group(add(2, 2), add(3, 3))), add(4, 4)}, ints(6, 4, 2, 8)},
		{"chain in nested group", []protocol.Signature{add(1, 1), producer.Group(add(2, 2), producer.Chain(add(3, 3), add(1)))}, ints(2, 7, 4)},
		{"chord in header", []protocol.Signature{add(1, 1), producer.Chord([]protocol.Signature{add(2, 2), add(3, 3)}, xsum)}, ints(2, 10)},
	}
}

// A Go-built chord with nested groups, a chain and a chord in its header
// is published as Celery 5.7 publishes the same canvas: the same chord
// size, and the same header task (by its args) at each group_index of the
// chord's group.
func TestNestedChordMatchesPython(t *testing.T) {
	out, err := exec.Command("../.venv/bin/python", "-c", `
from celery import Celery, group, chain, chord
from celery.signals import before_task_publish
app = Celery(broker="memory://", backend="`+nestedBackendURL+`")
@app.task(name="t.add")
def add(x, y):
    return x + y
@app.task(name="t.xsum")
def xsum(v):
    return sum(v)
sent = []
@before_task_publish.connect
def rec(headers=None, body=None, **kw):
    sent.append((headers.get("group"), headers.get("group_index"), list(body[0]), bool(body[2].get("chord"))))
cases = [
    [add.s(1, 1), group(add.s(2, 2), add.s(3, 3))],
    [group(add.s(1, 1), group(add.s(2, 2), add.s(3, 3))), add.s(4, 4)],
    [add.s(1, 1), group(add.s(2, 2), chain(add.s(3, 3), add.s(1)))],
    [add.s(1, 1), chord([add.s(2, 2), add.s(3, 3)], xsum.s())],
]
for header in cases:
    sent.clear()
    r = chord(header, xsum.s()).apply_async()
    gid = r.parent.id
    size = int(app.backend.client.get(app.backend.get_key_for_group(gid, ".s")))
    print("CASE", size, sorted([i, a] for g, i, a, c in sent if g == gid and c))
`).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var want []string
	for _, l := range strings.Split(string(out), "\n") {
		if s, ok := strings.CutPrefix(l, "CASE "); ok {
			want = append(want, s)
		}
	}
	var got []string
	add := func(x ...any) protocol.Signature { return producer.Sig("t.add", x...) }
	for _, tc := range nestedChordCases(add, producer.Sig("t.xsum")) {
		rec := &publishRecorder{}
		sz := &sizeRecorder{sizes: map[string]int{}}
		p := producer.New(rec, sz, producer.Config{DefaultQueue: "unused"})
		if _, err := p.Apply(context.Background(), producer.Chord(tc.header, producer.Sig("t.xsum")), nil); err != nil {
			t.Fatal(err)
		}
		var gid string
		for g := range sz.sizes {
			gid = g // the outer chord's size is set first
			break
		}
		var parts []string
		for _, m := range rec.messages(t) {
			if m.Group == gid && m.Chord != nil && m.GroupIndex != nil {
				parts = append(parts, fmt.Sprintf("[%d, %s]", *m.GroupIndex, protocol.Repr(m.Args)))
			}
		}
		sort.Strings(parts)
		got = append(got, fmt.Sprintf("%d [%s]", sz.sizes[gid], strings.Join(parts, ", ")))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Go published (size [index, args]...):\n%s\nCelery 5.7 published:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// publishRecorder is a producer.Broker that keeps what is published.
type publishRecorder struct {
	mu   sync.Mutex
	sent []broker.Publishing
}

func (r *publishRecorder) Declare(context.Context, ...broker.Queue) error { return nil }

func (r *publishRecorder) Publish(_ context.Context, p broker.Publishing) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, p)
	return nil
}

func (r *publishRecorder) messages(t *testing.T) []*protocol.Message {
	t.Helper()
	var out []*protocol.Message
	for i := range r.sent {
		m, err := protocol.Decode(&r.sent[i].Raw)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// sizeRecorder is a result backend that only records chord sizes, the
// first one set separately (the outer chord's).
type sizeRecorder struct {
	producer.Backend
	mu    sync.Mutex
	sizes map[string]int
}

func (s *sizeRecorder) SetChordSize(_ context.Context, gid string, n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sizes) == 0 {
		s.sizes[gid] = n
	}
	return nil
}

// A header member whose result is a group (Celery's "complex" header,
// which it runs with a saved GroupResult and nested results) is refused
// with a clear error instead of a chord that never completes.
func TestComplexChordHeaderRefused(t *testing.T) {
	add := func(x ...any) protocol.Signature { return producer.Sig("t.add", x...) }
	for name, member := range map[string]protocol.Signature{
		"chain ending in a group": producer.Chain(add(3, 3), producer.Group(add(1), add(2))),
		"chord with a group body": producer.Chord([]protocol.Signature{add(1, 1)}, producer.Group(add(1), add(2))),
	} {
		rec := &publishRecorder{}
		p := producer.New(rec, &sizeRecorder{sizes: map[string]int{}}, producer.Config{DefaultQueue: "unused"})
		_, err := p.Apply(context.Background(), producer.Chord([]protocol.Signature{add(1, 1), member}, producer.Sig("t.xsum")), nil)
		if !errors.Is(err, producer.ErrComplexChordHeader) || len(rec.sent) != 0 {
			t.Errorf("%s: err %v, %d published; want ErrComplexChordHeader and nothing sent", name, err, len(rec.sent))
		}
	}
}
