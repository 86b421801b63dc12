package tasks

import (
	"fmt"
	"math/big"

	"github.com/gocelery/gocelery/consumer"
	"github.com/gocelery/gocelery/protocol"
)

// params is a Python function's parameter list, for binding a request's
// args and kwargs the way a call binds them.
type params struct {
	names    []string       // positional-or-keyword, in order
	defaults map[string]any // of the trailing names; absent means required
	varargs  bool           // *args: extra positionals are kept
	varkw    bool           // **kwargs: unknown keywords are kept
	kwonly   []string       // keyword-only names
}

// bound is a call's arguments by name, and the extra positionals.
type bound struct {
	vals  map[string]any
	extra []any
}

func (b bound) get(name string) any { return b.vals[name] }

// bind binds r's args and kwargs to p, with Python's TypeError messages.
func bind(r *consumer.Request, fn string, p params) (bound, error) {
	b := bound{vals: map[string]any{}}
	for i, a := range r.Args {
		if i < len(p.names) {
			b.vals[p.names[i]] = a
			continue
		}
		if !p.varargs {
			return b, &consumer.ArgumentError{Msg: fmt.Sprintf("%s() takes %d positional arguments but %d were given", fn, len(p.names), len(r.Args))}
		}
		b.extra = append(b.extra, a)
	}
	known := map[string]bool{}
	for _, n := range p.names {
		known[n] = true
	}
	for _, n := range p.kwonly {
		known[n] = true
	}
	for k, v := range r.Kwargs {
		if !known[k] && !p.varkw {
			return b, &consumer.ArgumentError{Msg: fmt.Sprintf("%s() got an unexpected keyword argument '%s'", fn, k)}
		}
		if _, dup := b.vals[k]; dup {
			return b, &consumer.ArgumentError{Msg: fmt.Sprintf("%s() got multiple values for argument '%s'", fn, k)}
		}
		b.vals[k] = v
	}
	for _, n := range append(append([]string(nil), p.names...), p.kwonly...) {
		if _, ok := b.vals[n]; ok {
			continue
		}
		if d, ok := p.defaults[n]; ok {
			b.vals[n] = d
			continue
		}
		return b, &consumer.ArgumentError{Msg: fmt.Sprintf("%s() missing 1 required positional argument: '%s'", fn, n)}
	}
	return b, nil
}

// typeName is Python's type(v).__name__ for decoded JSON values.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "NoneType"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	}
	return fmt.Sprintf("%T", v)
}

func typeErr(op string, x, y any) error {
	return &consumer.ArgumentError{Msg: fmt.Sprintf("unsupported operand type(s) for %s: '%s' and '%s'", op, typeName(x), typeName(y))}
}

func toBig(v any) (*big.Int, bool) {
	switch x := v.(type) {
	case int64:
		return big.NewInt(x), true
	case *big.Int:
		return x, true
	case bool:
		if x {
			return big.NewInt(1), true
		}
		return big.NewInt(0), true
	}
	return nil, false
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case *big.Int:
		f, _ := new(big.Float).SetInt(x).Float64()
		return f, true
	}
	if b, ok := toBig(v); ok {
		f, _ := new(big.Float).SetInt(b).Float64()
		return f, true
	}
	return 0, false
}

// small returns an int64 when the big value fits, as Python's ints print.
func small(b *big.Int) any {
	if b.IsInt64() {
		return b.Int64()
	}
	return b
}

// pyAdd is Python's x + y for JSON values: ints (any size), floats,
// strings and lists.
func pyAdd(x, y any) (any, error) {
	if xs, ok := x.(string); ok {
		if ys, ok := y.(string); ok {
			return xs + ys, nil
		}
		return nil, &consumer.ArgumentError{Msg: fmt.Sprintf("can only concatenate str (not \"%s\") to str", typeName(y))}
	}
	if xl, ok := x.([]any); ok {
		if yl, ok := y.([]any); ok {
			return append(append([]any{}, xl...), yl...), nil
		}
		return nil, &consumer.ArgumentError{Msg: fmt.Sprintf("can only concatenate list (not \"%s\") to list", typeName(y))}
	}
	if xb, ok := toBig(x); ok {
		if yb, ok := toBig(y); ok {
			return small(new(big.Int).Add(xb, yb)), nil
		}
	}
	xf, ok1 := toFloat(x)
	yf, ok2 := toFloat(y)
	if !ok1 || !ok2 {
		return nil, typeErr("+", x, y)
	}
	return xf + yf, nil
}

// pyMul is Python's x * y for numbers.
func pyMul(x, y any) (any, error) {
	if xb, ok := toBig(x); ok {
		if yb, ok := toBig(y); ok {
			return small(new(big.Int).Mul(xb, yb)), nil
		}
	}
	xf, ok1 := toFloat(x)
	yf, ok2 := toFloat(y)
	if !ok1 || !ok2 {
		return nil, typeErr("*", x, y)
	}
	return xf * yf, nil
}

// truthy is Python's bool(v).
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case int64:
		return x != 0
	case *big.Int:
		return x.Sign() != 0
	case float64:
		return x != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// iterable returns v's items when Python could iterate it.
func iterable(v any) ([]any, error) {
	switch x := v.(type) {
	case []any:
		return x, nil
	case string:
		out := make([]any, 0, len(x))
		for _, c := range x {
			out = append(out, string(c))
		}
		return out, nil
	case map[string]any:
		out := make([]any, 0, len(x))
		for k := range x {
			out = append(out, k)
		}
		return out, nil
	}
	return nil, &consumer.ArgumentError{Msg: fmt.Sprintf("'%s' object is not iterable", typeName(v))}
}

// pySum is Python's sum(items) (start 0).
func pySum(v any) (any, error) {
	items, err := iterable(v)
	if err != nil {
		return nil, err
	}
	var total any = int64(0)
	for _, it := range items {
		if _, ok := it.(string); ok {
			return nil, typeErr("+", total, it)
		}
		if total, err = pyAdd(total, it); err != nil {
			return nil, err
		}
	}
	return total, nil
}

// str is Python's str(v) for the values these tasks see.
func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	}
	return protocol.Repr(v)
}
