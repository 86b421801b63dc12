package consumer_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
)

// eventLog records observed events per task id.
type eventLog struct {
	mu     sync.Mutex
	byTask map[string][]*consumer.TaskEvent
}

func (l *eventLog) ObserveTask(e *consumer.TaskEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byTask[e.Message.ID] = append(l.byTask[e.Message.ID], e)
}

func (l *eventLog) types(id string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.byTask[id] {
		out = append(out, e.Type)
	}
	return out
}

func TestObserverSeesEachStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := consumer.NewMux()
		mux.HandleFunc("add", func(ctx context.Context, r *consumer.Request) (any, error) { return int64(5), nil })
		mux.HandleFunc("fail", func(ctx context.Context, r *consumer.Request) (any, error) { return nil, valueError{"bad"} })
		mux.HandleFunc("retry", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, consumer.Retry(time.Hour, valueError{"again"})
		})
		mux.HandleFunc("reject", func(ctx context.Context, r *consumer.Request) (any, error) {
			return nil, &consumer.RejectError{Reason: "no"}
		})
		log := &eventLog{byTask: map[string][]*consumer.TaskEvent{}}
		b, _, _ := consumertest.StartWorker(t, mux, consumer.Config{Observers: []consumer.Observer{log}})
		expired := msg("t-exp", "add")
		expired.Expires = time.Now().Add(-time.Minute)
		b.Send(t, "1", msg("t-ok", "add"))
		b.Send(t, "2", msg("t-fail", "fail"))
		b.Send(t, "3", msg("t-retry", "retry"))
		b.Send(t, "4", msg("t-reject", "reject"))
		b.Send(t, "5", msg("t-unknown", "nosuch"))
		b.Send(t, "6", expired)
		want := map[string][]string{
			"t-ok":      {consumer.TaskReceived, consumer.TaskStarted, consumer.TaskSucceeded},
			"t-fail":    {consumer.TaskReceived, consumer.TaskStarted, consumer.TaskFailed},
			"t-retry":   {consumer.TaskReceived, consumer.TaskStarted, consumer.TaskRetried},
			"t-reject":  {consumer.TaskReceived, consumer.TaskStarted, consumer.TaskRejected},
			"t-unknown": {consumer.TaskFailed},
			"t-exp":     {consumer.TaskReceived, consumer.TaskRevoked},
		}
		deadline := time.Now().Add(5 * time.Second)
		for id, w := range want {
			for {
				got := log.types(id)
				if equal(got, w) {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s: events %v, want %v", id, got, w)
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		log.mu.Lock()
		defer log.mu.Unlock()
		ok := log.byTask["t-ok"][2]
		if ok.Result != int64(5) || ok.Runtime < 0 || ok.Queue != "q" { // virtual time: a runtime of 0 is possible
			t.Errorf("succeeded event %+v", ok)
		}
		if f := log.byTask["t-fail"][2]; f.Exception == nil || f.Exception.Type != "ValueError" || f.Traceback == "" {
			t.Errorf("failed event %+v", f)
		}
		if u := log.byTask["t-unknown"][0]; u.Exception == nil || u.Exception.Type != "NotRegistered" {
			t.Errorf("unknown task event %+v", u)
		}
		if e := log.byTask["t-exp"][1]; !e.Expired {
			t.Errorf("expired event %+v", e)
		}
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
