package amqp

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
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

func benchQueue(b *testing.B, br *Broker) broker.Queue {
	q := broker.Queue{Name: unique("bench"), Transient: true}
	newAdmin(b).cleanup([]string{q.Name}, []string{q.Name})
	if err := br.Declare(context.Background(), q); err != nil {
		b.Fatal(err)
	}
	return q
}

// BenchmarkPublishConfirm publishes one message at a time, each waiting
// for its confirm: the latency a producer sees per send_task.
func BenchmarkPublishConfirm(b *testing.B) {
	br := dial(b, Config{})
	q := benchQueue(b, br)
	p := benchMessage(b, q.Name)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := br.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublishConfirmParallel publishes from many goroutines on the
// one confirm channel: confirms of concurrent publishes overlap.
func BenchmarkPublishConfirmParallel(b *testing.B) {
	br := dial(b, Config{})
	q := benchQueue(b, br)
	p := benchMessage(b, q.Name)
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

// BenchmarkConsumeAck drains b.N pre-published messages with manual acks
// and prefetch 64, converting each delivery as a worker receives it.
func BenchmarkConsumeAck(b *testing.B) {
	drainBench(b, 1, (*broker.Delivery).Ack)
}

// BenchmarkConsumeAckParallel drains b.N messages with eight goroutines
// acking, as the worker's slots do: acks arrive a few tags out of order.
// Ack sends those above the frontier one frame each; AckDeferred lets a
// multiple ack cover them.
func BenchmarkConsumeAckParallel(b *testing.B) {
	b.Run("Ack", func(b *testing.B) { drainBench(b, 8, (*broker.Delivery).Ack) })
	b.Run("AckDeferred", func(b *testing.B) { drainBench(b, 8, (*broker.Delivery).AckDeferred) })
}

// drainBench publishes b.N messages, then times workers goroutines
// receiving and settling them with ack, and reports messages/s and the
// client's CPU per message.
func drainBench(b *testing.B, workers int, ack func(*broker.Delivery) error) {
	br := dial(b, Config{GlobalQoS: true})
	q := benchQueue(b, br)
	prefill(b, br, benchMessage(b, q.Name))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	ds := consume(b, br, 64, q)
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := ack(<-ds); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/1000/float64(b.N), "cpu-µs/msg")
}

// cpuTime is this process's CPU time (user and system): the client's
// cost, without RabbitMQ's.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// prefill publishes b.N copies of p, 64 in flight at a time.
func prefill(b *testing.B, br *Broker, p broker.Publishing) {
	b.Helper()
	ctx := context.Background()
	sem := make(chan struct{}, 64)
	errs := make(chan error, b.N)
	for range b.N {
		sem <- struct{}{}
		go func() {
			errs <- br.Publish(ctx, p)
			<-sem
		}()
	}
	for range b.N {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
}
