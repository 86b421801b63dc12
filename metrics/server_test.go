package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gocelery/gocelery/consumer"
)

func TestHealthz(t *testing.T) {
	tests := []struct {
		name      string
		watch     bool
		worker    *fakeWorker
		broker    *fakeBroker // nil: not checked
		wantCode  int
		wantBody  string
		wantReady bool
	}{
		{name: "not watched", wantCode: 503, wantBody: "worker not started\n"},
		{name: "healthy", watch: true, worker: &fakeWorker{consuming: true}, broker: &fakeBroker{connected: true},
			wantCode: 200, wantBody: "ok\n", wantReady: true},
		{name: "broker down", watch: true, worker: &fakeWorker{consuming: true}, broker: &fakeBroker{},
			wantCode: 503, wantBody: "broker disconnected\n"},
		{name: "not consuming", watch: true, worker: &fakeWorker{}, broker: &fakeBroker{connected: true},
			wantCode: 503, wantBody: "worker not consuming\n"},
		{name: "both", watch: true, worker: &fakeWorker{}, broker: &fakeBroker{},
			wantCode: 503, wantBody: "broker disconnected; worker not consuming\n"},
		{name: "no broker to check", watch: true, worker: &fakeWorker{consuming: true},
			wantCode: 200, wantBody: "ok\n", wantReady: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCollector(Config{})
			if tt.watch {
				var b BrokerHealth
				if tt.broker != nil {
					b = tt.broker // a nil *fakeBroker must stay a nil interface
				}
				c.Watch(tt.worker, b)
			}
			rec := httptest.NewRecorder()
			c.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
			if rec.Code != tt.wantCode || rec.Body.String() != tt.wantBody {
				t.Errorf("GET /healthz = %d %q, want %d %q", rec.Code, rec.Body.String(), tt.wantCode, tt.wantBody)
			}
			if ok, _ := c.Healthy(); ok != tt.wantReady {
				t.Errorf("Healthy() = %v, want %v", ok, tt.wantReady)
			}
			// /livez says only that the process serves.
			rec = httptest.NewRecorder()
			c.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/livez", nil))
			if rec.Code != 200 {
				t.Errorf("GET /livez = %d", rec.Code)
			}
		})
	}
}

// TestHealthzFollowsState flips the broker and the worker under one
// watch: /healthz reads them on every request.
func TestHealthzFollowsState(t *testing.T) {
	c := NewCollector(Config{})
	w, b := &fakeWorker{consuming: true}, &fakeBroker{connected: true}
	c.Watch(w, b)
	h := c.Handler()
	code := func() int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code
	}
	steps := []struct {
		connected, consuming bool
		want                 int
	}{
		{true, true, 200}, {false, true, 503}, {true, true, 200}, {true, false, 503},
	}
	for i, s := range steps {
		b.set(s.connected)
		w.set(s.consuming)
		if got := code(); got != s.want {
			t.Errorf("step %d (connected=%v consuming=%v): %d, want %d", i, s.connected, s.consuming, got, s.want)
		}
	}
}

func TestServerServesAndShutsDown(t *testing.T) {
	c := NewCollector(Config{Tasks: []string{"proj.add"}})
	c.Watch(&fakeWorker{consuming: true}, &fakeBroker{connected: true})
	c.ObserveTask(event(consumer.TaskSucceeded, "proj.add", 0, time.Millisecond))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer("", c.Handler(), discard()).Serve(ctx, ln) }()

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + ln.Addr().String()
	tests := []struct {
		path     string
		wantCode int
		contains string
	}{
		{"/metrics", 200, `gocelery_tasks_succeeded_total{task="proj.add"} 1`},
		{"/metrics", 200, `gocelery_task_runtime_seconds_bucket{task="proj.add",le="0.001"} 1`},
		{"/metrics", 200, "go_goroutines "},
		{"/healthz", 200, "ok"},
		{"/livez", 200, "ok"},
		{"/nope", 404, ""},
	}
	for _, tt := range tests {
		resp, err := client.Get(base + tt.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tt.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.contains) {
			t.Errorf("GET %s = %d, want %d with %q in:\n%s", tt.path, resp.StatusCode, tt.wantCode, tt.contains, body)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := client.Get(base + "/livez"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestServerRunBadAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tests := []string{ln.Addr().String() /* in use */, "127.0.0.1:notaport"}
	for _, addr := range tests {
		err := NewServer(addr, http.NotFoundHandler(), discard()).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "metrics: listen") {
			t.Errorf("Run(%q) = %v, want a listen error", addr, err)
		}
	}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
