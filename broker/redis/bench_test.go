package redis

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

// benchMessage is a typical Celery task message: the full v2 header set.
func benchMessage(tb testing.TB, queue string) broker.Publishing {
	tb.Helper()
	raw, err := protocol.Encode(&protocol.Message{
		ID: "bench", Task: "proj.tasks.add", Args: []any{2, 2},
		TimeLimit: protocol.TimeLimit{Hard: 30 * time.Second},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return broker.Publishing{Raw: *raw, RoutingKey: queue}
}

func benchBroker(b *testing.B) *Broker {
	pfx := unique("bench") + ":"
	newAdmin(b, testDB).cleanupPrefix(pfx)
	return dial(b, testDB, Config{KeyPrefix: pfx})
}

// BenchmarkPublish publishes one message at a time: the latency a
// producer sees per send_task (one LPUSH).
func BenchmarkPublish(b *testing.B) {
	br := benchBroker(b)
	p := benchMessage(b, "q")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := br.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublishParallel publishes from many goroutines sharing the
// client's connection pool.
func BenchmarkPublishParallel(b *testing.B) {
	br := benchBroker(b)
	p := benchMessage(b, "q")
	ctx := context.Background()
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Publish(ctx, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// prepublish fills the queue with n messages, 64 in flight at a time.
func prepublish(b *testing.B, br *Broker, n int) {
	p := benchMessage(b, "q")
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for range n {
		sem <- struct{}{}
		go func() {
			errs <- br.Publish(context.Background(), p)
			<-sem
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsumeAck drains b.N pre-published messages with prefetch 64,
// acking each in the receiving goroutine: BRPOP, the unacked bookkeeping
// and the ack are three round trips per message.
func BenchmarkConsumeAck(b *testing.B) {
	br := benchBroker(b)
	prepublish(b, br, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	ds := consume(b, br, 64, broker.Queue{Name: "q"})
	for range b.N {
		d := <-ds
		if err := d.Ack(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkConsumeAckParallel is BenchmarkConsumeAck with eight goroutines
// acking, as a worker's pool does.
func BenchmarkConsumeAckParallel(b *testing.B) {
	br := benchBroker(b)
	prepublish(b, br, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	ds := consume(b, br, 64, broker.Queue{Name: "q"})
	work := make(chan *broker.Delivery)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for d := range work {
				if err := d.Ack(); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for range b.N {
		work <- <-ds
	}
	close(work)
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
