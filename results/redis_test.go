package results_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gocelery/gocelery/protocol"
	"github.com/gocelery/gocelery/results"
	"github.com/redis/go-redis/v9"
)

func TestStoreNeverOverwritesSuccess(t *testing.T) {
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	if err := r.Store(ctx, &results.Meta{TaskID: "dup", Status: results.Success, Result: "first"}); err != nil {
		t.Fatal(err)
	}
	before, err := c.Get(ctx, r.TaskKey("dup")).Result()
	if err != nil {
		t.Fatal(err)
	}
	// A duplicate delivery of the task fails, retries, starts, succeeds again.
	for _, m := range []*results.Meta{
		{TaskID: "dup", Status: results.Failure, Result: errors.New("late")},
		{TaskID: "dup", Status: results.Retry, Result: errors.New("late")},
		{TaskID: "dup", Status: results.Started},
		{TaskID: "dup", Status: results.Success, Result: "second"},
	} {
		if err := r.Store(ctx, m); err != nil {
			t.Fatalf("Store(%s) = %v, want nil (a silent no-op)", m.Status, err)
		}
	}
	after, err := c.Get(ctx, r.TaskKey("dup")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("SUCCESS was overwritten:\nbefore %s\n after %s", before, after)
	}
}

func TestStoreOverwritesUnreadyStates(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, status := range []string{results.Started, "PROGRESS", results.Retry, results.Failure, results.Success} {
		if err := r.Store(ctx, &results.Meta{TaskID: "seq", Status: status, Result: errors.New("x")}); err != nil {
			t.Fatal(err)
		}
		m, err := r.Get(ctx, "seq")
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != status {
			t.Fatalf("after storing %s, Get says %s", status, m.Status)
		}
	}
}

// TestStorePublishes checks the PUBLISH on the key's channel carries the
// stored bytes, which is what Celery's result consumer listens for.
func TestStorePublishes(t *testing.T) {
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	key := r.TaskKey("pub")
	sub := c.Subscribe(ctx, key)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{results.Started, results.Success} {
		if err := r.Store(ctx, &results.Meta{TaskID: "pub", Status: status, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stored, err := c.Get(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if msg.Channel != key || msg.Payload != stored {
			t.Errorf("published %q on %q, stored %q under %q", msg.Payload, msg.Channel, stored, key)
		}
		if !strings.Contains(msg.Payload, `"status": "`+status+`"`) {
			t.Errorf("published %s for %s", msg.Payload, status)
		}
	}
}

func TestGetMissingIsPending(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	m, err := r.Get(ctxTimeout(t, 10*time.Second), "never-sent")
	if err != nil {
		t.Fatal(err)
	}
	want := &results.Meta{TaskID: "never-sent", Status: results.Pending}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Get = %+v, want %+v", m, want)
	}
}

func TestExceptionRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		status string
		result any
		want   *results.Exception
	}{
		{"failure", results.Failure,
			&results.Exception{Type: "ValueError", Message: []any{"bad", int64(42)}, Module: "builtins"},
			&results.Exception{Type: "ValueError", Message: []any{"bad", int64(42)}, Module: "builtins"}},
		{"go error", results.Failure, errors.New("boom"),
			&results.Exception{Type: "RuntimeError", Message: []any{"boom"}, Module: "builtins"}},
		{"revoked", results.Revoked, results.TaskRevokedError("terminated"), results.TaskRevokedError("terminated")},
		{"retry", results.Retry, pyErr{"builtins", "KeyError", "k"},
			&results.Exception{Type: "KeyError", Message: []any{"k"}, Module: "builtins"}},
		{"time limit", results.Failure, results.TimeLimitExceeded(2.5), results.TimeLimitExceeded(2.5)},
		{"no message", results.Failure, &results.Exception{Type: "Timeout", Module: "go"},
			&results.Exception{Type: "Timeout", Message: []any{}, Module: "go"}},
	}
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.Store(ctx, &results.Meta{TaskID: tc.name, Status: tc.status, Result: tc.result, Traceback: "tb"}); err != nil {
				t.Fatal(err)
			}
			m, err := r.Get(ctx, tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Result, tc.want) {
				t.Errorf("Result = %#v, want %#v", m.Result, tc.want)
			}
			if m.Traceback != "tb" || m.Status != tc.status {
				t.Errorf("got %s traceback %q", m.Status, m.Traceback)
			}
			if (m.Err() != nil) != (tc.status != results.Retry) {
				t.Errorf("Err() = %v for %s", m.Err(), tc.status)
			}
		})
	}
	// Outside the exception states an exc_type dict is just a value.
	if err := r.Store(ctx, &results.Meta{TaskID: "dict", Status: results.Success,
		Result: map[string]any{"exc_type": "X", "exc_message": []any{}, "exc_module": "m"}}); err != nil {
		t.Fatal(err)
	}
	if m, err := r.Get(ctx, "dict"); err != nil {
		t.Fatal(err)
	} else if _, ok := m.Result.(map[string]any); !ok {
		t.Errorf("SUCCESS result decoded as %T", m.Result)
	}
}

func TestRoundTripFields(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	done := time.Date(2030, 5, 6, 7, 8, 9, 123456000, time.UTC)
	in := &results.Meta{TaskID: "full", Status: results.Success,
		Result:   map[string]any{"when": done, "price": protocol.Decimal("9.99"), "list": []any{int64(1), "a", nil}},
		Children: []any{results.ResultTuple("c1"), results.GroupTuple("g1", []string{"c2"})},
		DateDone: done, GroupID: "g0", ParentID: "p0",
		Extended: true, Name: "proj.t", Args: []any{int64(1)}, Kwargs: map[string]any{"k": "v"},
		Worker: "w@h", Retries: 3, Queue: "q",
		StampedHeaders: []string{"mystamp"}, Stamps: map[string]any{"mystamp": "v"},
	}
	if err := r.Store(ctx, in); err != nil {
		t.Fatal(err)
	}
	out, err := r.Get(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	want := *in
	want.Children = []any{
		[]any{[]any{"c1", nil}, nil},
		[]any{[]any{"g1", nil}, []any{[]any{[]any{"c2", nil}, nil}}},
	}
	// Values inside the result are compared as JSON: the kombu decoder
	// may give a UTC datetime another *time.Location.
	gotResult, _ := results.MarshalValue(out.Result)
	wantResult, _ := results.MarshalValue(want.Result)
	if string(gotResult) != string(wantResult) {
		t.Errorf("result %s, want %s", gotResult, wantResult)
	}
	out.Result, want.Result = nil, nil
	if !reflect.DeepEqual(out, &want) {
		t.Errorf("round trip\n got %#v\nwant %#v", out, &want)
	}
}

func TestKeyPrefix(t *testing.T) {
	tests := []struct {
		prefix, wantTask, wantGroup string
	}{
		{"", "celery-task-meta-ID", "celery-taskset-meta-ID"},
		{"pfx", "pfx_celery-task-meta-ID", "pfx_celery-taskset-meta-ID"},
		{"pfx_", "pfx_celery-task-meta-ID", "pfx_celery-taskset-meta-ID"},
		{"pfx:", "pfx:celery-task-meta-ID", "pfx:celery-taskset-meta-ID"},
		{"pfx-", "pfx-celery-task-meta-ID", "pfx-celery-taskset-meta-ID"},
		{"pfx.", "pfx.celery-task-meta-ID", "pfx.celery-taskset-meta-ID"},
		{"pfx/", "pfx/_celery-task-meta-ID", "pfx/_celery-taskset-meta-ID"},
	}
	c := newClient(t, testDB)
	ctx := ctxTimeout(t, 10*time.Second)
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			r := results.NewRedis(c, results.Config{KeyPrefix: tc.prefix})
			if got := r.TaskKey("ID"); got != tc.wantTask {
				t.Errorf("TaskKey = %q, want %q", got, tc.wantTask)
			}
			if got := r.GroupKey("ID"); got != tc.wantGroup {
				t.Errorf("GroupKey = %q, want %q", got, tc.wantGroup)
			}
			// And the key really written is that one.
			id := "prefix-test-" + randomHex(t)
			key := strings.TrimSuffix(tc.wantTask, "ID") + id
			t.Cleanup(func() { c.Del(context.Background(), key) })
			if err := r.Store(ctx, &results.Meta{TaskID: id, Status: results.Success}); err != nil {
				t.Fatal(err)
			}
			if n, err := c.Exists(ctx, key).Result(); err != nil || n != 1 {
				t.Errorf("EXISTS %s = %d, %v", key, n, err)
			}
		})
	}
}

func TestExpires(t *testing.T) {
	tests := []struct {
		name    string
		opts    results.Config
		status  string
		wantTTL int // seconds; -1 means no expiry
	}{
		{"default", results.Config{}, results.Success, 86400},
		{"custom", results.Config{Expires: 90 * time.Second}, results.Success, 90},
		{"truncated to seconds", results.Config{Expires: 90*time.Second + 900*time.Millisecond}, results.Started, 90},
		{"sub-second", results.Config{Expires: time.Millisecond}, results.Success, 1},
		{"never", results.Config{Expires: -1}, results.Success, -1},
		{"failure follows expires", results.Config{Expires: 60 * time.Second}, results.Failure, 60},
		{"failure expires", results.Config{Expires: 60 * time.Second, FailureExpires: 600 * time.Second}, results.Failure, 600},
		{"failure expires only failures", results.Config{Expires: 60 * time.Second, FailureExpires: 600 * time.Second}, results.Revoked, 60},
		{"failure never", results.Config{FailureExpires: -1}, results.Failure, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, c := newBackend(t, tc.opts)
			ctx := ctxTimeout(t, 10*time.Second)
			if err := r.Store(ctx, &results.Meta{TaskID: "ttl", Status: tc.status}); err != nil {
				t.Fatal(err)
			}
			key := r.TaskKey("ttl")
			if tc.wantTTL < 0 {
				if ttl, err := c.TTL(ctx, key).Result(); err != nil || ttl != -1 {
					t.Errorf("TTL = %v, %v; want -1 (no expiry)", ttl, err)
				}
				return
			}
			checkTTL(t, c, key, tc.wantTTL)
		})
	}
}

func TestStoreSetsDateDone(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	before := time.Now()
	m := &results.Meta{TaskID: "d", Status: results.Success}
	if err := r.Store(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m.DateDone.Before(before.Add(-time.Second)) || m.DateDone.Location() != time.UTC {
		t.Errorf("DateDone = %v", m.DateDone)
	}
	got, err := r.Get(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if !got.DateDone.Equal(m.DateDone.Truncate(time.Microsecond)) {
		t.Errorf("stored date_done %v, want %v", got.DateDone, m.DateDone)
	}
	started := &results.Meta{TaskID: "s", Status: results.Started}
	if err := r.Store(ctx, started); err != nil {
		t.Fatal(err)
	}
	if !started.DateDone.IsZero() {
		t.Errorf("STARTED got a date_done: %v", started.DateDone)
	}
}

func TestStoreErrors(t *testing.T) {
	r, _ := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"nil meta", func() error { return r.Store(ctx, nil) }, results.ErrInvalidMeta},
		{"no id", func() error { return r.Store(ctx, &results.Meta{Status: results.Success}) }, results.ErrInvalidMeta},
		{"no status", func() error { return r.Store(ctx, &results.Meta{TaskID: "x"}) }, results.ErrInvalidMeta},
		{"get empty", func() error { _, err := r.Get(ctx, ""); return err }, results.ErrEmptyID},
		{"wait empty", func() error { _, err := r.Wait(ctx, ""); return err }, results.ErrEmptyID},
		{"forget empty", func() error { return r.Forget(ctx, "") }, results.ErrEmptyID},
		{"group empty", func() error { return r.SaveGroup(ctx, "", nil) }, results.ErrEmptyID},
		{"chord empty", func() error { return r.SetChordSize(ctx, "", 1) }, results.ErrEmptyID},
	}
	for _, tc := range tests {
		if err := tc.call(); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestGetMalformed(t *testing.T) {
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, raw := range []string{"not json", `["a list"]`, `{"result": 1}`, `{"status": "SUCCESS", "date_done": "yesterday"}`} {
		if err := c.Set(ctx, r.TaskKey("bad"), raw, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, "bad"); !errors.Is(err, results.ErrMalformed) {
			t.Errorf("Get of %q: err = %v, want ErrMalformed", raw, err)
		}
		// Celery would fail the same way rather than overwrite blindly;
		// a value whose status reads SUCCESS is simply never overwritten.
		err := r.Store(ctx, &results.Meta{TaskID: "bad", Status: results.Success})
		if strings.HasPrefix(raw, `{"status": "SUCCESS"`) {
			if got, _ := c.Get(ctx, r.TaskKey("bad")).Result(); err != nil || got != raw {
				t.Errorf("Store over %q: err = %v, value now %q", raw, err, got)
			}
		} else if !errors.Is(err, results.ErrMalformed) {
			t.Errorf("Store over %q: err = %v, want ErrMalformed", raw, err)
		}
	}
}

func TestForget(t *testing.T) {
	r, c := newBackend(t, results.Config{})
	ctx := ctxTimeout(t, 10*time.Second)
	if err := r.Store(ctx, &results.Meta{TaskID: "f", Status: results.Success}); err != nil {
		t.Fatal(err)
	}
	if err := r.Forget(ctx, "f"); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, r.TaskKey("f")).Val(); n != 0 {
		t.Errorf("key still exists after Forget")
	}
	if m, err := r.Get(ctx, "f"); err != nil || m.Status != results.Pending {
		t.Errorf("after Forget: %+v, %v", m, err)
	}
}

func TestCompression(t *testing.T) {
	for _, name := range []string{"gzip", "bzip2", "lzma", "brotli", "zstd"} {
		t.Run(name, func(t *testing.T) {
			r, c := newBackend(t, results.Config{Compression: name})
			ctx := ctxTimeout(t, 10*time.Second)
			in := &results.Meta{TaskID: "z", Status: results.Success, Result: strings.Repeat("x", 1000)}
			if err := r.Store(ctx, in); err != nil {
				t.Fatal(err)
			}
			raw, err := c.Get(ctx, r.TaskKey("z")).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			mime, _ := protocol.CompressionType(name)
			if prefix := "\x00celery-compressed\x00" + mime + "\x00"; !strings.HasPrefix(string(raw), prefix) {
				t.Errorf("stored %q..., want prefix %q", raw[:min(len(raw), 40)], prefix)
			}
			out, err := r.Get(ctx, "z")
			if err != nil {
				t.Fatal(err)
			}
			if out.Result != in.Result {
				t.Errorf("Result = %v", out.Result)
			}
		})
	}
}

// TestDecodeMsgpack reads a state written with result_serializer='msgpack'.
func TestDecodeMsgpack(t *testing.T) {
	data, err := protocol.MarshalMsgpack(map[string]any{
		"status": "FAILURE", "result": map[string]any{"exc_type": "ValueError", "exc_message": []any{"m"}, "exc_module": "builtins"},
		"traceback": nil, "children": []any{}, "date_done": "2026-11-26T08:29:53.833912+00:00", "task_id": "mp",
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := results.DecodeMeta(data)
	if err != nil {
		t.Fatal(err)
	}
	want := &results.Exception{Type: "ValueError", Message: []any{"m"}, Module: "builtins"}
	if m.TaskID != "mp" || m.Status != results.Failure || !reflect.DeepEqual(m.Result, want) || m.DateDone.IsZero() {
		t.Errorf("decoded %+v", m)
	}
}

func TestSetChordSize(t *testing.T) {
	tests := []struct {
		name    string
		opts    results.Config
		wantTTL int
	}{
		{"default expiry", results.Config{}, 86400},
		{"no expiry", results.Config{Expires: -1}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, c := newBackend(t, tc.opts)
			ctx := ctxTimeout(t, 10*time.Second)
			key := r.GroupKey("chord-g")
			// A claim left by a previous run of the same frozen chord.
			if err := c.Set(ctx, key+".c", "done", time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if err := r.SetChordSize(ctx, "chord-g", 3); err != nil {
				t.Fatal(err)
			}
			if v, err := c.Get(ctx, key+".s").Result(); err != nil || v != "3" {
				t.Errorf("%s.s = %q, %v; want \"3\"", key, v, err)
			}
			if n := c.Exists(ctx, key+".c").Val(); n != 0 {
				t.Errorf("%s.c survived SetChordSize", key)
			}
			if tc.wantTTL < 0 {
				if ttl := c.TTL(ctx, key+".s").Val(); ttl != -1 {
					t.Errorf("TTL = %v, want none", ttl)
				}
				return
			}
			checkTTL(t, c, key+".s", tc.wantTTL)
		})
	}
}

func TestOpenRedis(t *testing.T) {
	tests := []struct {
		url      string
		wantDB   int
		wantTLS  bool
		insecure bool
		wantErr  bool
	}{
		{url: "redis://127.0.0.1:6379/12", wantDB: 12},
		{url: "redis://:secret@127.0.0.1:6379/3", wantDB: 3},
		{url: "redis://127.0.0.1", wantDB: 0},
		{url: "rediss://127.0.0.1:6380/1?ssl_cert_reqs=required", wantDB: 1, wantTLS: true},
		{url: "rediss://127.0.0.1:6380/1?ssl_cert_reqs=CERT_NONE", wantDB: 1, wantTLS: true, insecure: true},
		{url: "rediss://127.0.0.1:6380/1?ssl_cert_reqs=sometimes", wantErr: true},
		{url: "redis://127.0.0.1:6379/0?ssl_cert_reqs=none", wantErr: true},
		{url: "rediss://127.0.0.1:6380/0?ssl_ca_certs=/nonexistent.pem", wantErr: true},
		{url: "amqp://127.0.0.1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			r, err := results.OpenRedis(tc.url, results.Config{})
			if tc.wantErr {
				if err == nil {
					r.Close()
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			o := r.Client().(*redis.Client).Options()
			if o.DB != tc.wantDB || (o.TLSConfig != nil) != tc.wantTLS ||
				(tc.wantTLS && o.TLSConfig.InsecureSkipVerify != tc.insecure) {
				t.Errorf("options: db %d, tls %+v", o.DB, o.TLSConfig)
			}
		})
	}
	if _, err := results.OpenRedis("redis://127.0.0.1", results.Config{Compression: "rar"}); !errors.Is(err, protocol.ErrUnsupportedCompression) {
		t.Errorf("unknown compression: err = %v", err)
	}
}

// TestOpenRedisOwnsClient checks Close closes a client OpenRedis made and
// leaves a caller's client alone.
func TestOpenRedisOwnsClient(t *testing.T) {
	r, err := results.OpenRedis("redis://"+redisAddr()+"/"+itoa(testDB), results.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := r.Get(ctx, "open-"+randomHex(t)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Client().Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Errorf("after Close, Ping = %v, want redis.ErrClosed", err)
	}
	shared := newClient(t, testDB)
	if err := results.NewRedis(shared, results.Config{}).Close(); err != nil {
		t.Fatal(err)
	}
	if err := shared.Ping(ctx).Err(); err != nil {
		t.Errorf("Close closed the caller's client: %v", err)
	}
}
