package results_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// capturedAt builds a date_done from the fixture's 2026-11-26 capture.
func capturedAt(h, m, s, us int) time.Time {
	return time.Date(2026, 11, 26, h, m, s, us*1000, time.UTC)
}

// fixtureTraceback returns the traceback string a fixture holds, so the
// table below does not repeat kilobytes of Python stack.
func fixtureTraceback(t testing.TB, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Decoded struct {
			Traceback string `json:"traceback"`
		} `json:"decoded"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	return f.Decoded.Traceback
}

// worker fills the result_extended fields the capture worker wrote.
func worker(m results.Meta, name string, args []any, retries int) *results.Meta {
	m.Extended = true
	m.Name, m.Args, m.Kwargs = name, args, map[string]any{}
	m.Worker, m.Retries, m.Queue = "w1@testhost", retries, "celery"
	return &m
}

// goldenCases are the captured Celery task states (testdata/result-*.json)
// and the Meta a Go worker builds for the same situation.
func goldenCases(t testing.TB) []struct {
	file string
	meta *results.Meta
} {
	keyErr := &results.Exception{Type: "KeyError", Message: []any{"boom"}, Module: "builtins"}
	return []struct {
		file string
		meta *results.Meta
	}{
		{"result-t-add-STARTED.json", worker(results.Meta{TaskID: "t-add", Status: results.Started,
			Result: results.StartedResult(7698, "w1@testhost")}, "tasks.add", []any{2, 3}, 0)},
		{"result-t-add-SUCCESS.json", worker(results.Meta{TaskID: "t-add", Status: results.Success,
			Result: 5, DateDone: capturedAt(8, 29, 53, 833912)}, "tasks.add", []any{2, 3}, 0)},
		{"result-t-fail-FAILURE.json", worker(results.Meta{TaskID: "t-fail", Status: results.Failure,
			Result:    &results.Exception{Type: "ValueError", Message: []any{"bad", 42}, Module: "builtins"},
			Traceback: fixtureTraceback(t, "result-t-fail-FAILURE.json"),
			DateDone:  capturedAt(8, 29, 53, 857943)}, "tasks.fail", []any{"bad"}, 0)},
		{"result-t-flaky-RETRY.json", worker(results.Meta{TaskID: "t-flaky", Status: results.Retry,
			Result: keyErr, Traceback: fixtureTraceback(t, "result-t-flaky-RETRY.json"),
			Children: []any{results.ResultTuple("t-flaky")}}, "tasks.flaky", []any{}, 0)},
		{"result-t-flaky-FAILURE.json", worker(results.Meta{TaskID: "t-flaky", Status: results.Failure,
			Result: keyErr, Traceback: fixtureTraceback(t, "result-t-flaky-FAILURE.json"),
			DateDone: capturedAt(8, 29, 54, 893594), ParentID: "t-flaky"}, "tasks.flaky", nil, 1)},
		{"result-t-progress-PROGRESS.json", worker(results.Meta{TaskID: "t-progress", Status: "PROGRESS",
			Result: map[string]any{"current": 1, "total": 2}}, "tasks.progress", nil, 0)},
		{"result-t-progress-SUCCESS.json", worker(results.Meta{TaskID: "t-progress", Status: results.Success,
			Result: "done", DateDone: capturedAt(8, 29, 56, 404479)}, "tasks.progress", nil, 0)},
		{"result-t-eta-REVOKED.json", &results.Meta{TaskID: "t-eta", Status: results.Revoked,
			Result: results.TaskRevokedError("revoked"), NullChildren: true, DateDone: capturedAt(8, 30, 8, 36264)}},
		{"result-t-unreg-FAILURE.json", &results.Meta{TaskID: "t-unreg", Status: results.Failure,
			Result: results.NotRegistered("tasks.nonexistent"), DateDone: capturedAt(8, 29, 58, 428439), Extended: true}},
		{"result-t-ignore-STARTED.json", worker(results.Meta{TaskID: "t-ignore", Status: results.Started,
			Result: results.StartedResult(7698, "w1@testhost")}, "tasks.ignorer", nil, 0)},
		{"result-t-reject-FAILURE.json", worker(results.Meta{TaskID: "t-reject", Status: results.Failure,
			Result: results.Reject("nope", false), DateDone: capturedAt(8, 29, 56, 420827)}, "tasks.rejecter", nil, 0)},
		{"result-ch-body-SUCCESS.json", worker(results.Meta{TaskID: "ch-body", Status: results.Success, Result: 6,
			DateDone: capturedAt(8, 29, 59, 465895), GroupID: "5a728f84-f81c-4c08-9df4-3b19dfc4596b", ParentID: "ch-h2"},
			"tasks.tsum", []any{[]any{2, 4}}, 0)},
	}
}

// TestGoldenEncode checks Meta.Encode against the captured bytes, without
// Redis, so an encoding regression shows up even where Redis is absent.
func TestGoldenEncode(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.file, func(t *testing.T) {
			want := loadFixture(t, tc.file).Raw
			got, err := tc.meta.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("Encode\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

// TestGoldenStore stores each case in Redis and reads the key back: the
// value must equal what Celery's worker stored, byte for byte, with the
// same TTL.
func TestGoldenStore(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.file, func(t *testing.T) {
			f := loadFixture(t, tc.file)
			r, c := newBackend(t, results.Config{})
			ctx := ctxTimeout(t, 10*time.Second)
			m := *tc.meta
			if err := r.Store(ctx, &m); err != nil {
				t.Fatal(err)
			}
			key := r.TaskKey(m.TaskID)
			if want := f.Key; key[len(key)-len(want):] != want {
				t.Errorf("key %q does not end in the captured key %q", key, want)
			}
			raw, err := c.Get(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			if raw != f.Raw {
				t.Errorf("stored\n got: %s\nwant: %s", raw, f.Raw)
			}
			checkTTL(t, c, key, f.TTLSeconds)
		})
	}
}

// TestGoldenDecode reads each captured value and checks the Meta encodes
// back to the same JSON document (key order aside for objects a Go map
// holds) and matches the Go-built Meta on the fields callers use.
func TestGoldenDecode(t *testing.T) {
	for _, tc := range goldenCases(t) {
		t.Run(tc.file, func(t *testing.T) {
			raw := loadFixture(t, tc.file).Raw
			m, err := results.DecodeMeta([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			again, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, again, []byte(raw)) {
				t.Errorf("decode+encode changed the document\n got: %s\nwant: %s", again, raw)
			}
			want := tc.meta
			if m.TaskID != want.TaskID || m.Status != want.Status || m.Traceback != want.Traceback ||
				!m.DateDone.Equal(want.DateDone) || m.GroupID != want.GroupID || m.ParentID != want.ParentID ||
				m.Extended != want.Extended || m.Name != want.Name || m.Worker != want.Worker ||
				m.Retries != want.Retries || m.Queue != want.Queue || m.NullChildren != want.NullChildren {
				t.Errorf("decoded %+v\nwant %+v", m, want)
			}
			if exc, ok := want.Result.(*results.Exception); ok && !reflect.DeepEqual(m.Result, normalize(t, exc)) {
				t.Errorf("exception = %#v, want %#v", m.Result, exc)
			}
		})
	}
}

// TestGoldenSaveGroup checks GroupResult.save()'s captured value.
func TestGoldenSaveGroup(t *testing.T) {
	f := loadFixture(t, "result-grp-x-group.json")
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	ids := []string{"be794b0a-e473-46c8-9ad9-89476ec64a43", "6764eb1e-bed2-49fe-9ef1-d073fc4e6f4c"}
	if err := r.SaveGroup(ctx, "grp-x", ids); err != nil {
		t.Fatal(err)
	}
	key := r.GroupKey("grp-x")
	raw, err := c.Get(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if raw != f.Raw {
		t.Errorf("stored\n got: %s\nwant: %s", raw, f.Raw)
	}
	checkTTL(t, c, key, f.TTLSeconds)
}

func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	va, err := protocol.UnmarshalJSON(a, 0)
	if err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	vb, err := protocol.UnmarshalJSON(b, 0)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// normalize returns exc as DecodeMeta gives it back: numbers as int64.
func normalize(t testing.TB, exc *results.Exception) *results.Exception {
	t.Helper()
	data, err := results.MarshalValue(exc.Message)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := protocol.UnmarshalJSON(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := *exc
	out.Message = msg.([]any)
	return &out
}

// TestEncodeValues covers encoder rules the captures do not reach.
func TestEncodeValues(t *testing.T) {
	when := time.Date(2030, 1, 2, 3, 4, 5, 678000000, time.UTC)
	tests := []struct {
		name string
		meta results.Meta
		want string
	}{
		{"minimal", results.Meta{TaskID: "x", Status: results.Success, Result: nil},
			`{"status": "SUCCESS", "result": null, "traceback": null, "children": [], "date_done": null, "task_id": "x"}`},
		{"error converted in exception state", results.Meta{TaskID: "x", Status: results.Retry, Result: errString("db down")},
			`{"status": "RETRY", "result": {"exc_type": "RuntimeError", "exc_message": ["db down"], "exc_module": "builtins"}, "traceback": null, "children": [], "date_done": null, "task_id": "x"}`},
		{"exception dict reordered", results.Meta{TaskID: "x", Status: results.Failure,
			Result: map[string]any{"exc_module": "builtins", "exc_message": []any{"m"}, "exc_type": "OSError"}, DateDone: when},
			`{"status": "FAILURE", "result": {"exc_type": "OSError", "exc_message": ["m"], "exc_module": "builtins"}, "traceback": null, "children": [], "date_done": "2030-01-02T03:04:05.678000+00:00", "task_id": "x"}`},
		{"kombu types and nested Dict", results.Meta{TaskID: "x", Status: results.Success,
			Result: map[string]any{"b": []any{results.Dict{{"z", 1}, {"a", protocol.Decimal("1.10")}}}, "a": when}},
			`{"status": "SUCCESS", "result": {"a": {"__type__": "datetime", "__value__": "2030-01-02T03:04:05.678000+00:00"}, "b": [{"z": 1, "a": {"__type__": "decimal", "__value__": "1.10"}}]}, "traceback": null, "children": [], "date_done": null, "task_id": "x"}`},
		{"non-ascii", results.Meta{TaskID: "é", Status: results.Success, Result: "日本"},
			`{"status": "SUCCESS", "result": "\u65e5\u672c", "traceback": null, "children": [], "date_done": null, "task_id": "\u00e9"}`},
		{"extended with stamps", results.Meta{TaskID: "x", Status: "PROGRESS", Extended: true, Name: "t", Args: []any{1.5},
			Retries: 2, StampedHeaders: []string{"s2", "s1", "status"}, Stamps: map[string]any{"s1": "v1", "s2": []any{"v2"}, "status": "nope"}},
			`{"status": "PROGRESS", "result": null, "traceback": null, "children": [], "date_done": null, "name": "t", "args": [1.5], "kwargs": {}, "worker": null, "retries": 2, "queue": null, "stamped_headers": ["s2", "s1", "status"], "s2": ["v2"], "s1": "v1", "task_id": "x"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.meta.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("\n got: %s\nwant: %s", got, tc.want)
			}
			back, err := results.DecodeMeta(got)
			if err != nil {
				t.Fatal(err)
			}
			again, err := back.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, got) && !sameJSON(t, again, got) {
				t.Errorf("round trip changed the document\n got: %s\nwant: %s", again, got)
			}
		})
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestEncodeCycle checks a self-referencing value fails instead of
// recursing forever.
func TestEncodeCycle(t *testing.T) {
	loop := []any{nil}
	loop[0] = loop
	m := results.Meta{TaskID: "x", Status: results.Success, Result: loop}
	if _, err := m.Encode(); err == nil {
		t.Fatal("Encode of a cyclic value succeeded")
	}
	r, _ := newBackend(t, results.Config{})
	if err := r.Store(context.Background(), &m); err == nil {
		t.Fatal("Store of a cyclic value succeeded")
	}
}
