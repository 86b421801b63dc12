package results_test

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
)

// exportCases are the states interop/python/test_results_backend.py reads
// with Celery's AsyncResult. The ids and values are fixed on both sides;
// change them together.
func exportCases() []struct {
	compressed bool
	meta       *results.Meta
} {
	when := time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC)
	type c = struct {
		compressed bool
		meta       *results.Meta
	}
	return []c{
		{false, &results.Meta{TaskID: "gocelery-int", Status: results.Success, Result: int64(42),
			Children: []any{results.ResultTuple("gocelery-child")}, DateDone: when,
			Extended: true, Name: "proj.add", Args: []any{int64(20), int64(22)}, Kwargs: map[string]any{"debug": false},
			Worker: "gocelery@test", Retries: 1, Queue: "celery"}},
		{false, &results.Meta{TaskID: "gocelery-nested", Status: results.Success, Result: map[string]any{
			"items":  []any{int64(1), 2.5, "three", nil, true},
			"when":   when,
			"price":  protocol.Decimal("12.50"),
			"nested": map[string]any{"a": []any{map[string]any{"b": "c"}}},
		}}},
		{false, &results.Meta{TaskID: "gocelery-failure", Status: results.Failure,
			Result:    &results.Exception{Type: "ValueError", Message: []any{"bad input", int64(42)}, Module: "builtins"},
			Traceback: "Traceback (most recent call last):\n  File \"main.go\", line 1, in task\nValueError: ('bad input', 42)\n"}},
		{false, &results.Meta{TaskID: "gocelery-go-error", Status: results.Failure, Result: errors.New("disk full")}},
		{false, &results.Meta{TaskID: "gocelery-custom-exc", Status: results.Failure,
			Result: &results.Exception{Type: "QuotaExceeded", Message: []any{"over quota"}, Module: "go"}}},
		{false, &results.Meta{TaskID: "gocelery-revoked", Status: results.Revoked,
			Result: results.TaskRevokedError("revoked"), NullChildren: true}},
		{false, &results.Meta{TaskID: "gocelery-progress", Status: "PROGRESS",
			Result: results.Dict{{"current", 1}, {"total", 2}}}},
		{false, &results.Meta{TaskID: "gocelery-started", Status: results.Started,
			Result: results.StartedResult(4242, "gocelery@test")}},
		{true, &results.Meta{TaskID: "gocelery-compressed", Status: results.Success, Result: "squeezed"}},
	}
}

// exportGroupID is saved with SaveGroup, holding the first two cases, for
// GroupResult.restore.
const exportGroupID = "gocelery-group"

// TestExportResults stores exportCases for the Python check. With
// GOCELERY_RESULTS_PREFIX and GOCELERY_REDIS_DB set it writes them under
// that prefix in that DB and leaves them for Python to read (and delete);
// without them it stores under a random prefix in the test DB and checks
// every state reads back as stored.
func TestExportResults(t *testing.T) {
	prefix, dbEnv := os.Getenv("GOCELERY_RESULTS_PREFIX"), os.Getenv("GOCELERY_REDIS_DB")
	export := prefix != "" || dbEnv != ""
	db := testDB
	if export {
		n, err := strconv.Atoi(dbEnv)
		if prefix == "" || err != nil || n < 9 || n > 15 {
			t.Fatalf("need GOCELERY_RESULTS_PREFIX and GOCELERY_REDIS_DB (9-15) together, got %q and %q", prefix, dbEnv)
		}
		db = n
	}
	c := newClient(t, db)
	if !export {
		prefix = "gocelery-test-" + randomHex(t) + ":"
		t.Cleanup(func() { deleteMatching(t, c, prefix+"*") })
	}
	plain := results.NewRedis(c, results.Config{KeyPrefix: prefix})
	gzip := results.NewRedis(c, results.Config{KeyPrefix: prefix, Compression: "gzip"})
	ctx := ctxTimeout(t, 20*time.Second)

	for _, tc := range exportCases() {
		r := plain
		if tc.compressed {
			r = gzip
		}
		if err := r.Store(ctx, tc.meta); err != nil {
			t.Fatalf("%s: %v", tc.meta.TaskID, err)
		}
		got, err := plain.Get(ctx, tc.meta.TaskID)
		if err != nil {
			t.Fatalf("%s: %v", tc.meta.TaskID, err)
		}
		checkSameState(t, got, tc.meta)
	}
	if err := plain.SaveGroup(ctx, exportGroupID, []string{"gocelery-int", "gocelery-nested"}); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(context.Background(), plain.GroupKey(exportGroupID)).Val(); n != 1 {
		t.Errorf("group %s not stored", plain.GroupKey(exportGroupID))
	}
	if export {
		t.Logf("stored %d states under %q in DB %d", len(exportCases()), prefix, db)
	}
}

// checkSameState compares two states as JSON documents (a Go map and a
// Dict may order keys differently).
func checkSameState(t *testing.T, got, want *results.Meta) {
	t.Helper()
	a, err := got.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := want.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, a, b) {
		t.Errorf("%s read back as\n%s\nstored\n%s", want.TaskID, a, b)
	}
}
