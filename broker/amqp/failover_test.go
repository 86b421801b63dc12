package amqp

import (
	"errors"
	"testing"
)

func TestParseURLs(t *testing.T) {
	ts, err := parseURLs("amqp://u:p@h1:5681//; amqp://h2:5682/vh ;pyamqp://h3//;")
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ url, vhost string }{{"amqp://u:p@h1:5681", "/"}, {"amqp://h2:5682", "vh"}, {"amqp://h3:5672", "/"}}
	if len(ts) != len(want) {
		t.Fatalf("got %d targets", len(ts))
	}
	for i, w := range want {
		if ts[i].dialURL != w.url || ts[i].vhost != w.vhost {
			t.Errorf("target %d: %s %s, want %s %s", i, ts[i].dialURL, ts[i].vhost, w.url, w.vhost)
		}
	}
	for _, bad := range []string{"", ";", "amqp://h1//;redis://h2"} {
		if _, err := parseURLs(bad); !errors.Is(err, ErrURL) {
			t.Errorf("%q: err = %v, want ErrURL", bad, err)
		}
	}
}

func TestFailoverOrder(t *testing.T) {
	ts, _ := parseURLs("amqp://h1//;amqp://h2//;amqp://h3//")
	f, err := newFailover(ts, RoundRobin)
	if err != nil {
		t.Fatal(err)
	}
	first := func() string { return f.order()[0].host }
	if first() != "h1" || len(f.order()) != 3 {
		t.Fatalf("first dial starts at %s", first())
	}
	f.connected(f.order()[1]) // h1 refused, h2 answered
	if first() != "h3" {
		t.Errorf("after h2 was lost the next dial starts at %s, want h3", first())
	}
	f.connected(f.order()[0])
	if first() != "h1" {
		t.Errorf("after h3 the next dial starts at %s, want h1 (round robin)", first())
	}
	s, err := newFailover(ts, Shuffle)
	if err != nil || len(s.order()) != 3 {
		t.Fatalf("shuffle: %v", err)
	}
	if _, err := newFailover(ts, "random"); !errors.Is(err, ErrURL) {
		t.Errorf("unknown strategy: %v", err)
	}
}
