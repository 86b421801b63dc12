package pgbeat_test

import (
	"context"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gocelery/gocelery/beat"
	"github.com/gocelery/gocelery/beat/pgbeat"
	"github.com/gocelery/gocelery/producer"
)

// A beat on the team's periodic_task table: migrate once, add an entry,
// and run the scheduler in every replica (one leads).
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app:secret@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	if err := pgbeat.Migrate(ctx, pool, pgbeat.SchemaPeriodicTask); err != nil {
		log.Fatal(err)
	}
	store, err := pgbeat.NewStore(pool, pgbeat.SchemaPeriodicTask)
	if err != nil {
		log.Fatal(err)
	}
	nightly, err := beat.ParseTrigger("30 2 * * mon-fri", time.UTC)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Put(ctx, &beat.Entry{Name: "nightly", Task: "reports.nightly", Schedule: nightly, Enabled: true,
		Options: map[string]any{"queue": "reports"}}); err != nil {
		log.Fatal(err)
	}
	var p *producer.Producer // producer.New(broker, backend, producer.Config{})
	s := pgbeat.New(store, p, pgbeat.Config{Config: beat.Config{LockTTL: 5 * time.Second}})
	if err := s.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// The django schema: django-celery-beat's tables, made by Django's
// migrations, edited in Django's admin.
func ExampleNewStore_django() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app:secret@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgbeat.NewStore(pool, pgbeat.SchemaDjango)
	if err != nil {
		log.Fatal(err)
	}
	entries, err := store.List(ctx) // a solar task is left out, with an error naming it
	if err != nil {
		log.Print(err)
	}
	for _, e := range entries {
		log.Printf("%s: %s, next %s, %d runs", e.Name, e.Schedule, e.NextRun(e.LastRunAt), e.TotalRunCount)
	}
}
