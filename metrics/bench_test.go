package metrics

import (
	"fmt"
	"testing"
	"time"

	"github.com/gocelery/gocelery/consumer"
)

// BenchmarkObserveTask measures the collector's cost per event on the
// task path: a task's life is received, started, succeeded, so three
// events per task.
func BenchmarkObserveTask(b *testing.B) {
	tasks := make([]string, 20)
	for i := range tasks {
		tasks[i] = fmt.Sprintf("proj.task%d", i)
	}
	var events []*consumer.TaskEvent
	for _, n := range tasks {
		events = append(events,
			event(consumer.TaskReceived, n, 0, 0),
			event(consumer.TaskStarted, n, time.Millisecond, 0),
			event(consumer.TaskSucceeded, n, 3*time.Millisecond, 2*time.Millisecond))
	}
	benchmarks := []struct {
		name string
		opts Config
	}{
		{"registered", Config{Tasks: tasks}},
		{"capped", Config{MaxTasks: 100}},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			c := NewCollector(bm.opts)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.ObserveTask(events[i%len(events)])
				i++
			}
		})
		b.Run(bm.name+"/parallel", func(b *testing.B) {
			c := NewCollector(bm.opts)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					c.ObserveTask(events[i%len(events)])
					i++
				}
			})
		})
	}
}
