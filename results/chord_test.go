package results_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocelery/gocelery/results"
)

func intp(i int) *int { return &i }

// Parts returned concurrently and in any order: exactly one caller
// completes the chord, with the results in group index order, and late
// duplicates after the cleanup are no-ops.
func TestChordPartReturn(t *testing.T) {
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 20*time.Second)
	const n = 50
	gid := "chord-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := r.SetChordSize(ctx, gid, n); err != nil {
		t.Fatal(err)
	}
	var completed atomic.Int32
	var join *results.ChordJoin
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := n - 1; i >= 0; i-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			part := results.ChordPart{GroupID: gid, TaskID: "t" + strconv.Itoa(i), GroupIndex: intp(i), State: results.Success, Result: int64(i * i)}
			// A redelivered copy returns its part twice: counted once.
			for range 2 {
				j, err := r.ChordPartReturn(ctx, part)
				if err != nil {
					t.Error(err)
					return
				}
				if j.Complete {
					completed.Add(1)
					mu.Lock()
					join = j
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if completed.Load() != 1 {
		t.Fatalf("%d callers completed the chord, want exactly 1", completed.Load())
	}
	vals := join.Values()
	if len(vals) != n {
		t.Fatalf("%d results, want %d", len(vals), n)
	}
	for i, v := range vals {
		if v != int64(i*i) {
			t.Fatalf("result %d = %v, want %d (header order)", i, v, i*i)
		}
	}
	if join.Err() != nil {
		t.Errorf("Err = %v for a chord without failures", join.Err())
	}
	if err := r.ChordExtendClaim(ctx, join, 10); err != nil {
		t.Fatal(err)
	}
	if err := r.ChordDone(ctx, join); err != nil {
		t.Fatal(err)
	}
	key := r.GroupKey(gid)
	if n := c.Exists(ctx, key+".j", key+".s", key+".d").Val(); n != 0 {
		t.Errorf("%d chord keys left after cleanup", n)
	}
	if v := c.Get(ctx, key+".c").Val(); v != "done" {
		t.Errorf("%s.c = %q, want the done marker", key, v)
	}
	j, err := r.ChordPartReturn(ctx, results.ChordPart{GroupID: gid, TaskID: "t0", GroupIndex: intp(0), State: results.Success, Result: 0})
	if err != nil || j.Complete {
		t.Errorf("late duplicate: complete=%v err=%v", j != nil && j.Complete, err)
	}
	if n := c.Exists(ctx, key+".j").Val(); n != 0 {
		t.Error("a late duplicate recreated the chord's results")
	}
}

// A failed header task makes the join's Err Celery's ChordError.
func TestChordPartReturnFailure(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	gid := "chordfail-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := r.SetChordSize(ctx, gid, 2); err != nil {
		t.Fatal(err)
	}
	exc := &results.Exception{Type: "ValueError", Module: "builtins", Message: []any{"bad"}}
	if _, err := r.ChordPartReturn(ctx, results.ChordPart{GroupID: gid, TaskID: "bad-1", GroupIndex: intp(1), State: results.Failure, Result: exc}); err != nil {
		t.Fatal(err)
	}
	j, err := r.ChordPartReturn(ctx, results.ChordPart{GroupID: gid, TaskID: "ok-0", GroupIndex: intp(0), State: results.Success, Result: "fine"})
	if err != nil || !j.Complete {
		t.Fatalf("complete=%v err=%v", j != nil && j.Complete, err)
	}
	got := j.Err()
	want := `celery.exceptions.ChordError: Dependency bad-1 raised ValueError('bad')`
	if got == nil || got.Error() != want {
		t.Errorf("Err = %v, want %s", got, want)
	}
	if err := r.ChordFailed(ctx, gid); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkChordPartReturn is the join's cost per header task: one Lua
// call (the last part also reads the results back).
func BenchmarkChordPartReturn(b *testing.B) {
	r, _ := newBackend(b, results.Config{})
	ctx := context.Background()
	const size = 1000
	var gid string
	for i := 0; b.Loop(); i++ {
		if i%size == 0 {
			gid = "chordbench-" + strconv.Itoa(i)
			if err := r.SetChordSize(ctx, gid, size); err != nil {
				b.Fatal(err)
			}
		}
		j, err := r.ChordPartReturn(ctx, results.ChordPart{GroupID: gid, TaskID: "t" + strconv.Itoa(i), GroupIndex: intp(i % size), State: results.Success, Result: int64(i)})
		if err != nil {
			b.Fatal(err)
		}
		if j.Complete {
			_ = r.ChordDone(ctx, j)
		}
	}
}
