package pgbeat

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/producer"
)

// testURL is the test PostgreSQL (scripts/services.sh starts it; override
// with PGBEAT_TEST_URL). Each test gets a database of its own.
func testURL() string {
	if u := os.Getenv("PGBEAT_TEST_URL"); u != "" {
		return u
	}
	return "postgres://gocelery:gocelery@127.0.0.1:5432/gocelery_test"
}

// testDB creates a fresh database and returns a pool on it; the database
// is dropped at the end of the test. Without PostgreSQL the test is
// skipped, unless CI is set: there a missing PostgreSQL fails.
func testDB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, testURL())
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("PostgreSQL not reachable at %s (run scripts/services.sh): %v", testURL(), err)
		}
		t.Fatalf("PostgreSQL at %s (CI is set: scripts/services.sh must start it): %v", testURL(), err)
	}
	defer admin.Close(context.Background())
	name := "pgbeat_" + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(testURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, testURL())
		if err != nil {
			t.Errorf("dropping %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping %s: %v", name, err)
		}
	})
	return pool
}

// testStore is a migrated store of schema in a fresh database; for django,
// the tables are django-celery-beat 2.9.0's, as its migrations make them
// (testdata).
func testStore(t testing.TB, schema Schema) *Store {
	t.Helper()
	pool := testDB(t)
	ctx := context.Background()
	if schema == SchemaDjango {
		ddl, err := os.ReadFile("testdata/django_celery_beat_2.9.0.sql")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, string(ddl)); err != nil {
			t.Fatalf("django tables: %v", err)
		}
	}
	if err := Migrate(ctx, pool, schema); err != nil {
		t.Fatal(err)
	}
	st, err := NewStore(pool, schema)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type sent struct {
	Task   string
	Args   []any
	Kwargs map[string]any
	Opts   producer.Options
	At     time.Time
}

// recordingSender is a Sender that records instead of publishing.
type recordingSender struct {
	mu    sync.Mutex
	calls []sent
}

func (r *recordingSender) SendTask(ctx context.Context, name string, args []any, kwargs map[string]any, opts ...producer.Option) (*producer.AsyncResult, error) {
	var o producer.Options
	for _, f := range opts {
		f(&o)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, sent{Task: name, Args: args, Kwargs: kwargs, Opts: o, At: time.Now()})
	return producer.NewAsyncResult(o.TaskID, nil), nil
}

func (r *recordingSender) all() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]sent(nil), r.calls...)
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runScheduler runs s until the test ends.
func runScheduler(t *testing.T, s *Scheduler) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return cancel
}

func mustEntry(t testing.TB, name, trigger string) *beat.Entry {
	t.Helper()
	sc, err := beat.ParseTrigger(trigger, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return &beat.Entry{Name: name, Task: "t." + name, Schedule: sc, Enabled: true}
}

func exec(t testing.TB, st *Store, q string, args ...any) {
	t.Helper()
	if _, err := st.pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

var _ = fmt.Sprint
