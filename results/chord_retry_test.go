package results_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gocelery/gocelery/results"
)

// The completing part's call took the dispatch claim but its reply was
// lost: the retry with the same token completes the chord; another
// caller (a new token, or a Python worker) does not.
func TestChordPartRetryKeepsClaim(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	gid := "chord-retry-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := r.SetChordSize(ctx, gid, 2); err != nil {
		t.Fatal(err)
	}
	first := results.ChordPart{GroupID: gid, TaskID: "a", GroupIndex: intp(0), State: results.Success, Result: int64(1)}
	if j, err := r.ChordPartReturn(ctx, first); err != nil || j.Complete {
		t.Fatalf("first part: complete=%v err=%v", j != nil && j.Complete, err)
	}
	last := results.ChordPart{GroupID: gid, TaskID: "b", GroupIndex: intp(1), State: results.Success, Result: int64(2),
		Token: results.NewChordToken()}
	if j, err := r.ChordPartReturn(ctx, last); err != nil || !j.Complete {
		t.Fatalf("last part: complete=%v err=%v", j != nil && j.Complete, err)
	}
	// That reply is "lost": the caller does not know it holds the claim.
	other := last
	other.Token = results.NewChordToken()
	if j, err := r.ChordPartReturn(ctx, other); err != nil || j.Complete {
		t.Fatalf("a copy with another token: complete=%v err=%v, want not complete", j != nil && j.Complete, err)
	}
	j, err := r.ChordPartReturn(ctx, last)
	if err != nil || !j.Complete {
		t.Fatalf("retry with the same token: complete=%v err=%v, want complete", j != nil && j.Complete, err)
	}
	if v := j.Values(); len(v) != 2 || v[0] != int64(1) || v[1] != int64(2) {
		t.Errorf("values %v, want [1 2] (each part once)", v)
	}
	if err := r.ChordExtendClaim(ctx, j, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.ChordDone(ctx, j); err != nil {
		t.Fatal(err)
	}
}

// Network errors are ErrUnavailable; an error Redis answered with is not
// (retrying it gets the same answer).
func TestChordUnavailable(t *testing.T) {
	ctx := ctxTimeout(t, 10*time.Second)
	down := results.NewRedis(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1}), results.Config{})
	_, err := down.ChordPartReturn(ctx, results.ChordPart{GroupID: "g", TaskID: "t", State: results.Success})
	if !errors.Is(err, results.ErrUnavailable) {
		t.Errorf("connection refused: %v, want ErrUnavailable", err)
	}
	r, c := newBackend(t, results.Config{})
	gid := "chord-wrongtype-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := c.Set(ctx, r.GroupKey(gid)+".j", "not a sorted set", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = r.ChordPartReturn(ctx, results.ChordPart{GroupID: gid, TaskID: "t", State: results.Success})
	if err == nil || errors.Is(err, results.ErrUnavailable) {
		t.Errorf("WRONGTYPE: %v, want an error that is not ErrUnavailable", err)
	}
}
