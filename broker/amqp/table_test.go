package amqp

import (
	"errors"
	"math"
	"math/big"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gocelery/gocelery/broker"
	"github.com/gocelery/gocelery/protocol"
)

func TestToField(t *testing.T) {
	when := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	id := uuid.MustParse("12345678-1234-5678-1234-567812345678")
	type named string
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"bool", true, true},
		{"string", "s", "s"},
		{"bytes", []byte{0, 0xff}, []byte{0, 0xff}},
		{"int small", 42, int32(42)},
		{"int negative", -5, int32(-5)},
		{"int beyond 32 bits", 1 << 40, int64(1 << 40)},
		{"int64 keeps width", int64(7), int64(7)},
		{"int32", int32(7), int32(7)},
		{"int16", int16(7), int16(7)},
		{"int8", int8(-7), int8(-7)},
		{"uint8", uint8(7), uint8(7)},
		{"uint16", uint16(7), uint16(7)},
		{"uint32", uint32(7), uint32(7)},
		{"uint", uint(7), int32(7)},
		{"uint64", uint64(1 << 40), int64(1 << 40)},
		{"float64", 1.5, 1.5},
		{"float32", float32(1.5), float32(1.5)},
		{"big.Int in int64", big.NewInt(1 << 50), int64(1 << 50)},
		{"nil big.Int", (*big.Int)(nil), nil},
		{"decimal", protocol.Decimal("1.10"), amqp.Decimal{Scale: 2, Value: 110}},
		{"decimal negative", protocol.Decimal("-0.005"), amqp.Decimal{Scale: 3, Value: -5}},
		{"decimal integer", protocol.Decimal("5"), amqp.Decimal{Scale: 0, Value: 5}},
		{"decimal exponent", protocol.Decimal("1E+3"), amqp.Decimal{Scale: 0, Value: 1000}},
		{"decimal small exponent", protocol.Decimal("1.5E-3"), amqp.Decimal{Scale: 4, Value: 15}},
		{"amqp decimal", amqp.Decimal{Scale: 1, Value: 5}, amqp.Decimal{Scale: 1, Value: 5}},
		{"time", when, when},
		{"timelimit", []any{30, 20}, []any{int32(30), int32(20)}},
		{"timelimit nulls", []any{nil, nil}, []any{nil, nil}},
		{"strings", []string{"a", "b"}, []any{"a", "b"}},
		{"ints", []int{1, 2}, []any{int32(1), int32(2)}},
		{"nested map", map[string]any{"a": map[string]any{"b": 1}}, amqp.Table{"a": amqp.Table{"b": int32(1)}}},
		{"string map", map[string]string{"k": "v"}, amqp.Table{"k": "v"}},
		{"table", amqp.Table{"k": 1}, amqp.Table{"k": int32(1)}},
		{"uuid", id, id.String()},
		{"named string", named("x"), "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := toField(tt.in, "h", 0)
			if err != nil {
				t.Fatalf("toField(%#v): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("toField(%#v) = %#v (%T), want %#v (%T)", tt.in, got, got, tt.want, tt.want)
			}
			if err := (amqp.Table{"h": got}).Validate(); err != nil {
				t.Errorf("amqp091 refuses the result: %v", err)
			}
		})
	}
}

func TestToFieldErrors(t *testing.T) {
	loop := map[string]any{}
	loop["self"] = loop
	tests := []struct {
		name string
		in   any
	}{
		{"big.Int beyond int64", new(big.Int).Lsh(big.NewInt(1), 70)},
		{"uint64 beyond int64", uint64(math.MaxUint64)},
		{"decimal beyond 32 bits", protocol.Decimal("12345678901.5")},
		{"decimal garbage", protocol.Decimal("abc")},
		{"channel", make(chan int)},
		{"func", func() {}},
		{"int keyed map", map[int]string{1: "a"}},
		{"cycle", loop},
		{"bad element", []any{1, struct{}{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := toTable(map[string]any{"h": tt.in})
			if !errors.Is(err, ErrHeaderValue) {
				t.Errorf("toTable(%#v) error = %v, want ErrHeaderValue", tt.in, err)
			}
		})
	}
}

func TestToTableDoesNotModifyInput(t *testing.T) {
	in := map[string]any{"tl": []any{1, 2}, "m": map[string]any{"a": 1}}
	if _, err := toTable(in); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"tl": []any{1, 2}, "m": map[string]any{"a": 1}}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("input changed: %#v", in)
	}
}

func TestFromTable(t *testing.T) {
	local := time.Unix(1893553445, 0) // as amqp091 reads 'T': local zone
	tests := []struct {
		name string
		in   any
		want any
	}{
		{"nil", nil, nil},
		{"int32 kept", int32(3), int32(3)},
		{"int64 kept", int64(1 << 40), int64(1 << 40)},
		{"int16 kept", int16(3), int16(3)},
		{"uint8 kept", uint8(3), uint8(3)},
		{"float kept", 1.5, 1.5},
		{"bytes kept", []byte("x"), []byte("x")},
		{"time in UTC", local, local.UTC()},
		{"decimal", amqp.Decimal{Scale: 2, Value: 110}, protocol.Decimal("1.10")},
		{"decimal negative fraction", amqp.Decimal{Scale: 3, Value: -5}, protocol.Decimal("-0.005")},
		{"decimal integer", amqp.Decimal{Scale: 0, Value: -12}, protocol.Decimal("-12")},
		{"decimal all fraction", amqp.Decimal{Scale: 2, Value: 12}, protocol.Decimal("0.12")},
		{"array", []any{int32(30), nil}, []any{int32(30), nil}},
		{"nested table", amqp.Table{"a": amqp.Table{"b": amqp.Decimal{Scale: 1, Value: 5}}},
			map[string]any{"a": map[string]any{"b": protocol.Decimal("0.5")}}},
		{"tables in array", []any{amqp.Table{"count": int64(1)}}, []any{map[string]any{"count": int64(1)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fromTable(amqp.Table{"h": tt.in})["h"]
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("fromTable(%#v) = %#v (%T), want %#v (%T)", tt.in, got, got, tt.want, tt.want)
			}
		})
	}
}

func TestDecimalRoundTrip(t *testing.T) {
	for _, s := range []string{"0", "1.10", "-0.005", "2147483647", "-2147483648", "0.000", "3.14159"} {
		d, err := decimalField(protocol.Decimal(s))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got := decimalString(d); string(got) != s {
			t.Errorf("%s -> %+v -> %s", s, d, got)
		}
	}
}

func TestRawOf(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	d := &amqp.Delivery{
		ContentType: "application/json", ContentEncoding: "utf-8",
		Headers:       amqp.Table{"task": "t", "timelimit": []any{int32(30), int32(20)}},
		DeliveryMode:  2,
		Priority:      5,
		CorrelationId: "id",
		ReplyTo:       "r",
		Expiration:    "60000",
		MessageId:     "m",
		Timestamp:     ts,
		AppId:         "a",
		Body:          []byte("[]"),
	}
	got := rawOf(d)
	want := protocol.Raw{
		ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: map[string]any{"task": "t", "timelimit": []any{int32(30), int32(20)}},
		Properties: protocol.Properties{
			CorrelationID: "id", ReplyTo: "r", DeliveryMode: 2, Priority: 5, Expiration: "60000",
			Extra: map[string]any{"message_id": "m", "timestamp": ts.UTC(), "app_id": "a"},
		},
		Body: []byte("[]"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rawOf =\n%#v\nwant\n%#v", got, want)
	}
	if got := rawOf(&amqp.Delivery{}); got.Properties.Extra != nil || got.Headers != nil {
		t.Errorf("empty delivery: Extra %v, Headers %v; want nil", got.Properties.Extra, got.Headers)
	}
}

func TestPublishingOf(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	p := broker.Publishing{Raw: protocol.Raw{
		ContentType: "application/json", ContentEncoding: "utf-8",
		Headers: map[string]any{"retries": 0},
		Properties: protocol.Properties{
			CorrelationID: "id", ReplyTo: "r", DeliveryMode: 2, Priority: 9, Expiration: "1000",
			Extra: map[string]any{"origin": "gen1@host", "message_id": "m", "timestamp": ts, "type": "x", "user_id": "guest", "app_id": "a"},
		},
		Body: []byte("[]"),
	}}
	got, err := publishingOf(&p)
	if err != nil {
		t.Fatal(err)
	}
	want := amqp.Publishing{
		Headers:     amqp.Table{"retries": int32(0)},
		ContentType: "application/json", ContentEncoding: "utf-8",
		DeliveryMode: 2, Priority: 9, CorrelationId: "id", ReplyTo: "r", Expiration: "1000",
		MessageId: "m", Timestamp: ts, Type: "x", UserId: "guest", AppId: "a",
		Body: []byte("[]"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("publishingOf =\n%#v\nwant\n%#v", got, want)
	}
	for _, bad := range []protocol.Properties{{Priority: 256}, {Priority: -1}, {DeliveryMode: 300}} {
		if _, err := publishingOf(&broker.Publishing{Raw: protocol.Raw{Properties: bad}}); err == nil {
			t.Errorf("publishingOf(%+v): no error", bad)
		}
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		url, dial, vhost string
		tls              bool
	}{
		{"amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672", "/", false},
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:guest@127.0.0.1:5672", "/", false},
		{"amqp://guest:guest@127.0.0.1:5672", "amqp://guest:guest@127.0.0.1:5672", "/", false},
		{"amqp://h/%2F", "amqp://h:5672", "/", false},
		{"amqp://h/prod", "amqp://h:5672", "prod", false},
		{"amqp://h/%2Fprod", "amqp://h:5672", "/prod", false},
		{"pyamqp://u:p@h//", "amqp://u:p@h:5672", "/", false},
		{"amqps://u:p@h//", "amqp://u:p@h:5671", "/", true},
		{"amqp://u:p%40ss@h:1234/v?heartbeat=30", "amqp://u:p%40ss@h:1234?heartbeat=30", "v", false},
		{"amqp://", "amqp://localhost:5672", "/", false},
		{"amqp://[::1]:5673//", "amqp://[::1]:5673", "/", false},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			got, err := parseURL(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if got.dialURL != tt.dial || got.vhost != tt.vhost || got.tls != tt.tls {
				t.Errorf("parseURL = dial %q vhost %q tls %v; want %q %q %v", got.dialURL, got.vhost, got.tls, tt.dial, tt.vhost, tt.tls)
			}
			if _, err := amqp.ParseURI(got.dialURL); err != nil {
				t.Errorf("amqp091 refuses %q: %v", got.dialURL, err)
			}
		})
	}
	for _, bad := range []string{"redis://h/0", "http://h", "amqp:h", "amqp://h:port"} {
		if _, err := parseURL(bad); !errors.Is(err, ErrURL) {
			t.Errorf("parseURL(%q) error = %v, want ErrURL", bad, err)
		}
	}
}
