package broker

import (
	"errors"
	"testing"
	"time"
)

// TestDelayedRoutingKey checks the encoding against kombu 5.7's
// calculate_routing_key (the wants are its output).
func TestDelayedRoutingKey(t *testing.T) {
	for _, tt := range []struct {
		secs     int64
		key, out string
	}{
		{1, "celery", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.celery"},
		{2, "orders.#", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.orders.#"},
		{3, "a.b", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.1.a.b"},
		{86400, "x", "0.0.0.0.0.0.0.0.0.0.0.1.0.1.0.1.0.0.0.1.1.0.0.0.0.0.0.0.x"},
		{268435455, "k", "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.k"},
		// A retried task's key keeps only the new prefix.
		{5, "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.1.orders.eu", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.1.orders.eu"},
	} {
		got, err := DelayedRoutingKey(time.Duration(tt.secs)*time.Second+300*time.Millisecond, tt.key)
		if err != nil || got != tt.out {
			t.Errorf("DelayedRoutingKey(%d s, %q) = %q, %v; kombu gives %q", tt.secs, tt.key, got, err, tt.out)
		}
	}
	for _, d := range []time.Duration{0, 999 * time.Millisecond, -time.Second, (1 << 28) * time.Second} {
		if _, err := DelayedRoutingKey(d, "k"); !errors.Is(err, ErrDelayOutOfRange) {
			t.Errorf("DelayedRoutingKey(%s) = %v, want ErrDelayOutOfRange", d, err)
		}
	}
	if _, err := DelayedRoutingKey(time.Second, ""); err == nil {
		t.Error("empty routing key accepted")
	}
}

func TestStripDelayAndNames(t *testing.T) {
	for in, want := range map[string]string{
		"orders.eu": "orders.eu",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.orders.eu": "orders.eu",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.2.orders":    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.2.orders",
		"1.0.1": "1.0.1",
	} {
		if got := StripDelay(in); got != want {
			t.Errorf("StripDelay(%q) = %q, want %q", in, got, want)
		}
	}
	if DelayBindingKey("orders.#") != "#.orders.#" || DelayBindingKey("#") != "#" || DelayBindingKey("") != "#." {
		t.Error("DelayBindingKey differs from kombu's")
	}
	if DelayLevelName(27, "") != "celery_delayed_27" || DelayLevelName(0, "app") != "app_celery_delayed_0" ||
		DelayDeliveryExchangeName("app") != "app_celery_delayed_delivery" {
		t.Error("level names differ from kombu's")
	}
	if RoundDelay(1999*time.Millisecond) != 2*time.Second {
		t.Error("RoundDelay")
	}
}
