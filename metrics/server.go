package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds the graceful shutdown of the HTTP server: a
// scrape takes milliseconds, so anything slower is a stuck client.
const shutdownTimeout = 5 * time.Second

// Handler returns the HTTP handler of the metrics listener:
//
//	/metrics  Prometheus exposition of the collector's registry
//	/healthz  200 "ok" when the broker is connected and the worker is
//	          consuming; 503 with the reasons otherwise
//	/livez    200 "ok" while the process serves HTTP
//
// /healthz fails during a broker outage and a warm shutdown, which suits
// readiness checks and alerts; a liveness probe should use /livez, or a
// broker outage would restart every worker at once.
func (c *Collector) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelError),
		// Bounded, so a scrape storm cannot pile up Stats calls.
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", c.serveHealth)
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Healthy reports whether the watched broker is connected and the worker
// consuming; if not, reason says why ("broker disconnected", "worker not
// consuming", joined by "; ").
func (c *Collector) Healthy() (ok bool, reason string) {
	w := c.watched.Load()
	if w == nil || w.worker == nil {
		return false, "worker not started"
	}
	var reasons []string
	if w.broker != nil && !w.broker.Connected() {
		reasons = append(reasons, "broker disconnected")
	}
	if !w.worker.Consuming() {
		reasons = append(reasons, "worker not consuming")
	}
	return len(reasons) == 0, strings.Join(reasons, "; ")
}

func (c *Collector) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, reason := c.Healthy()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, reason)
		return
	}
	fmt.Fprintln(w, "ok")
}

// Server serves a handler (usually Collector.Handler) on one address
// until its context ends.
type Server struct {
	addr    string
	handler http.Handler
	log     *slog.Logger
}

// NewServer returns a server for h on addr (host:port, ":9808"); a nil
// logger means slog.Default().
func NewServer(addr string, h http.Handler, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{addr: addr, handler: h, log: log}
}

// Run listens on the server's address and serves until ctx ends, then
// shuts down gracefully. It returns nil after a shutdown caused by ctx.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("metrics: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln, which it closes, until ctx ends. Listening first
// and serving later lets a caller fail at startup on a bad address, or
// pick a free port with "127.0.0.1:0".
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		// Idle scrapers' keep-alive connections must not hold Shutdown.
		IdleTimeout: time.Minute,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("metrics listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close() // a stuck scrape must not keep the worker from exiting
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}
