package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/consumertest"
)

// A worker embedded in an HTTP service: both run until the service is
// told to stop, then both shut down within one deadline, the worker as
// http.Server does (warm until the deadline, then cold). Here the broker
// is the in-memory one of consumertest; a service dials a real one with
// worker.DialBroker (or broker/amqp, broker/redis).
func ExampleWorker_Shutdown() {
	mux := consumer.NewMux()
	mux.HandleFunc("proj.ping", func(ctx context.Context, r *consumer.Request) (any, error) { return "pong", nil })
	b := consumertest.NewBroker()
	w, err := consumer.New(b, nil, mux, consumer.Config{Queues: []broker.Queue{{Name: "proj"}}, Logger: quietLogger()})
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}

	stop := make(chan struct{}) // a signal handler would close it
	errs := make(chan error, 2)
	go func() { errs <- w.Run(context.Background()) }()
	go func() { errs <- srv.Serve(ln) }()

	for !w.Consuming() { // in a service the stop comes much later
		time.Sleep(time.Millisecond)
	}
	close(stop)
	<-stop
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = errors.Join(srv.Shutdown(ctx), w.Shutdown(ctx))
	for range 2 {
		if e := <-errs; !errors.Is(e, http.ErrServerClosed) {
			err = errors.Join(err, e)
		}
	}
	fmt.Println(err)
	fmt.Println(w.Run(context.Background())) // a Worker runs once
	// Output:
	// <nil>
	// consumer: worker already ran or was shut down
}
