package protocol

import (
	"errors"
	"math"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Expected strings below were printed by CPython 3.11's json.dumps / repr.
func TestMarshalJSONMatchesPython(t *testing.T) {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
	tests := []struct {
		in   any
		want string
	}{
		{0.1, "0.1"},
		{1e16, "1e+16"},
		{1e15, "1000000000000000.0"},
		{1.5e-7, "1.5e-07"},
		{0.0001, "0.0001"},
		{0.00001, "1e-05"},
		{1234567.0, "1234567.0"},
		{math.Copysign(0, -1), "-0.0"},
		{123456789012345680.0, "1.2345678901234568e+17"},
		{1e22, "1e+22"},
		{5e-324, "5e-324"},
		{1.7976931348623157e308, "1.7976931348623157e+308"},
		{100.0, "100.0"},
		{math.NaN(), "NaN"},
		{math.Inf(-1), "-Infinity"},
		{int64(math.MaxInt64), "9223372036854775807"},
		{big70, "1180591620717411303424"},
		{"é€😀\n\t\"\\\x00\x1f/</\x7f", `"\u00e9\u20ac\ud83d\ude00\n\t\"\\\u0000\u001f/</\u007f"`},
		{map[string]any{"c": true, "a": []any{int64(1), 2, map[string]any{"b": nil}}}, `{"a": [1, 2, {"b": null}], "c": true}`},
		{time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC), `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05.678901+00:00"}`},
		{time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", -5*3600-30*60)), `{"__type__": "datetime", "__value__": "2030-01-02T03:04:05-05:30"}`},
		{Date{2030, 1, 2}, `{"__type__": "date", "__value__": "2030-01-02"}`},
		{TimeOfDay{3, 4, 5, 678901, ""}, `{"__type__": "time", "__value__": "03:04:05.678901"}`},
		{Decimal("1.10"), `{"__type__": "decimal", "__value__": "1.10"}`},
		{uuid.MustParse("12345678-1234-5678-1234-567812345678"), `{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`},
		{[]byte("abc"), `{"__type__": "bytes", "__value__": "abc"}`},
		{[]byte{0xff, 0}, `{"__type__": "base64", "__value__": "/wA="}`},
		{struct {
			A int    `json:"a"`
			B string `json:"b,omitempty"`
		}{A: 1}, `{"a": 1}`},
		{Signature{Task: "t", Args: []any{int64(1)}, Immutable: true}, `{"task": "t", "args": [1], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": true}`},
	}
	for _, tt := range tests {
		got, err := MarshalJSON(tt.in)
		if err != nil {
			t.Errorf("MarshalJSON(%#v): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("MarshalJSON(%#v)\n got  %s\n want %s", tt.in, got, tt.want)
		}
	}
}

func TestUnmarshalJSONValues(t *testing.T) {
	big70, _ := new(big.Int).SetString("1180591620717411303424", 10)
	tests := []struct {
		in   string
		want any
	}{
		{`9007199254740993`, int64(9007199254740993)}, // 2^53+1 stays exact
		{`-9223372036854775808`, int64(math.MinInt64)},
		{`1180591620717411303424`, big70},
		{`1.5`, 1.5},
		{`1e400`, math.Inf(1)},
		{`"\u00e9\ud83d\ude00"`, "é😀"},
		{`"\ud800x"`, "\uFFFDx"}, // lone surrogate: Python keeps it, Go cannot
		{`{"__type__": "datetime", "__value__": "2030-01-02T03:04:05.678901+00:00"}`, time.Date(2030, 1, 2, 3, 4, 5, 678901000, time.UTC)},
		{`{"__type__": "datetime", "__value__": "2030-01-02T03:04:05"}`, time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		{`{"__type__": "date", "__value__": "2030-01-02"}`, Date{2030, 1, 2}},
		{`{"__type__": "time", "__value__": "03:04:05.678901"}`, TimeOfDay{3, 4, 5, 678901, ""}},
		{`{"__type__": "decimal", "__value__": "1.10"}`, Decimal("1.10")},
		{`{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}`, uuid.MustParse("12345678-1234-5678-1234-567812345678")},
		{`{"__type__": "bytes", "__value__": "abc"}`, []byte("abc")},
		{`{"__type__": "base64", "__value__": "/wA="}`, []byte{0xff, 0}},
		{`{"__type__": "x", "__value__": 1, "extra": 2}`, map[string]any{"__type__": "x", "__value__": int64(1), "extra": int64(2)}},
	}
	for _, tt := range tests {
		got, err := UnmarshalJSON([]byte(tt.in), 0)
		if err != nil {
			t.Errorf("UnmarshalJSON(%s): %v", tt.in, err)
			continue
		}
		gj, _ := MarshalJSON(got)
		wj, _ := MarshalJSON(tt.want)
		if string(gj) != string(wj) {
			t.Errorf("UnmarshalJSON(%s) = %s (%T), want %s (%T)", tt.in, gj, got, wj, tt.want)
		}
		if tm, ok := tt.want.(time.Time); ok && !got.(time.Time).Equal(tm) {
			t.Errorf("UnmarshalJSON(%s) = %v, want %v", tt.in, got, tm)
		}
	}
	if v, _ := UnmarshalJSON([]byte("NaN"), 0); !math.IsNaN(v.(float64)) {
		t.Errorf("NaN decoded as %v", v)
	}
}

func TestUnmarshalJSONErrors(t *testing.T) {
	deep := strings.Repeat("[", DefaultMaxDepth+1) + strings.Repeat("]", DefaultMaxDepth+1)
	tests := []struct {
		in   string
		want error
	}{
		{``, ErrMalformed},
		{`[1, 2`, ErrMalformed},
		{`[1,]`, ErrMalformed},
		{`{"a" 1}`, ErrMalformed},
		{`01`, ErrMalformed},
		{`"a` + "\x01" + `"`, ErrMalformed},
		{`"\x"`, ErrMalformed},
		{`[] []`, ErrMalformed},
		{"\"\xff\"", ErrMalformed},
		{`{"__type__": "pickle", "__value__": "x"}`, ErrMalformed}, // kombu fails unknown markers too
		{`{"__type__": "datetime", "__value__": "yesterday"}`, ErrMalformed},
		{deep, ErrTooDeep},
		{"1" + strings.Repeat("0", 5000), ErrMalformed},
	}
	for _, tt := range tests {
		_, err := UnmarshalJSON([]byte(tt.in), 0)
		if !errors.Is(err, tt.want) {
			t.Errorf("UnmarshalJSON(%.40q) error = %v, want %v", tt.in, err, tt.want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	in := `[[1, 2.5, "x", null, true, {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}], {"nested": {"deep": [[[{"k": -1e-07}]]]}}, 1180591620717411303424]`
	v, err := UnmarshalJSON([]byte(in), 0)
	if err != nil {
		t.Fatal(err)
	}
	out, err := MarshalJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("round trip\n got  %s\n want %s", out, in)
	}
}

func TestRepr(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{map[string]any{"k": "it's"}, `{'k': "it's"}`},
		{"a\"b'", `'a"b\''`},
		{"é\u200b", `'é\u200b'`},
		{[]byte("\x00ab'"), `b"\x00ab'"`},
		{[]any{nil, true, 1.0, int64(3)}, `[None, True, 1.0, 3]`},
	}
	for _, tt := range tests {
		if got := Repr(tt.in); got != tt.want {
			t.Errorf("Repr(%#v) = %s, want %s", tt.in, got, tt.want)
		}
	}
	if got := ReprArgs([]any{int64(1)}); got != "(1,)" {
		t.Errorf("ReprArgs one = %s", got)
	}
	if got := ReprArgs([]any{strings.Repeat("x", 2000)}); len(got) != reprMaxSize+3 {
		t.Errorf("ReprArgs long has %d chars", len(got))
	}
}
