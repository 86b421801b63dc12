package metrics_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/metrics"
	"github.com/gocelery/gocelery/protocol"
)

// A Collector is a consumer.Observer: put it in consumer.Config.Observers
// and it counts every task event by task name. Names that are not
// registered are counted under task="other", so a stray producer cannot
// grow the number of series.
func ExampleCollector() {
	c := metrics.NewCollector(metrics.Config{Tasks: []string{"proj.add"}}) // in a worker: mux.Names()
	// In a worker: consumer.New(b, backend, mux, consumer.Config{Observers: []consumer.Observer{c}}),
	// then c.Watch(w, b) and metrics.NewServer(addr, c.Handler(), log).Run(ctx).

	now := time.Now()
	for _, e := range []consumer.TaskEvent{
		{Type: consumer.TaskReceived, Message: &protocol.Message{Task: "proj.add"}},
		{Type: consumer.TaskStarted, Message: &protocol.Message{Task: "proj.add"}, Time: now, Received: now.Add(-time.Millisecond)},
		{Type: consumer.TaskSucceeded, Message: &protocol.Message{Task: "proj.add"}, Runtime: 400 * time.Microsecond},
		{Type: consumer.TaskFailed, Message: &protocol.Message{Task: "someone.elses.task"}},
	} {
		c.ObserveTask(&e)
	}

	text, _ := testutil.GatherAndFormat(c.Registry(), expfmt.TypeTextPlain,
		"gocelery_tasks_succeeded_total", "gocelery_tasks_failed_total", "gocelery_task_runtime_seconds")
	for _, line := range strings.Split(string(text), "\n") {
		if strings.HasPrefix(line, "gocelery_") && !strings.Contains(line, "_bucket") {
			fmt.Println(line)
		}
	}
	// Output:
	// gocelery_task_runtime_seconds_sum{task="other"} 0
	// gocelery_task_runtime_seconds_count{task="other"} 0
	// gocelery_task_runtime_seconds_sum{task="proj.add"} 0.0004
	// gocelery_task_runtime_seconds_count{task="proj.add"} 1
	// gocelery_tasks_failed_total{task="other"} 1
	// gocelery_tasks_failed_total{task="proj.add"} 0
	// gocelery_tasks_succeeded_total{task="other"} 0
	// gocelery_tasks_succeeded_total{task="proj.add"} 1
}
