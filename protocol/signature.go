package protocol

import (
	"fmt"
	"sort"
)

// Subtask types Celery writes in a signature's "subtask_type".
const (
	SubtaskChain    = "chain"
	SubtaskGroup    = "group"
	SubtaskChord    = "chord"
	SubtaskChunks   = "chunks"
	SubtaskXmap     = "xmap"
	SubtaskXstarmap = "xstarmap"
)

// Signature is Celery's serialized signature (celery.canvas.Signature): a
// task name with partial arguments and apply_async options. Composite
// signatures (chain, group, chord) keep their children in Kwargs exactly as
// Celery does ("tasks", or "header" and "body"); Tasks, Header and Body
// read them.
type Signature struct {
	Task        string
	Args        []any
	Kwargs      map[string]any
	Options     map[string]any
	SubtaskType string // "" for a plain task
	Immutable   bool
	// Extra keeps keys Celery may add that have no field here (an old
	// producer's "chord_size"), so a decode/encode round trip loses nothing.
	Extra map[string]any
}

// ID returns the pre-assigned task id in options.task_id, or "".
func (s *Signature) ID() string {
	id, _ := s.Options["task_id"].(string)
	return id
}

// Tasks returns the children of a chain or group signature.
func (s *Signature) Tasks() ([]Signature, error) {
	if s.SubtaskType != SubtaskChain && s.SubtaskType != SubtaskGroup {
		return nil, fmt.Errorf("%w: %q signature has no tasks", ErrMalformed, s.SubtaskType)
	}
	return SignaturesFrom(s.Kwargs["tasks"])
}

// Header returns the group of a chord signature.
func (s *Signature) Header() (Signature, error) {
	if s.SubtaskType != SubtaskChord {
		return Signature{}, fmt.Errorf("%w: %q signature has no chord header", ErrMalformed, s.SubtaskType)
	}
	return SignatureFrom(s.Kwargs["header"])
}

// Body returns the callback of a chord signature.
func (s *Signature) Body() (Signature, error) {
	if s.SubtaskType != SubtaskChord {
		return Signature{}, fmt.Errorf("%w: %q signature has no chord body", ErrMalformed, s.SubtaskType)
	}
	return SignatureFrom(s.Kwargs["body"])
}

// Map returns the dict form Celery sends, with nested signatures kept as
// they are.
func (s Signature) Map() map[string]any {
	m := make(map[string]any, 6+len(s.Extra))
	for k, v := range s.Extra {
		m[k] = v
	}
	args := s.Args
	if args == nil {
		args = []any{}
	}
	kwargs, options := s.Kwargs, s.Options
	if kwargs == nil {
		kwargs = map[string]any{}
	}
	if options == nil {
		options = map[string]any{}
	}
	m["task"], m["args"], m["kwargs"], m["options"] = s.Task, args, kwargs, options
	m["subtask_type"] = nilIfEmpty(s.SubtaskType)
	m["immutable"] = s.Immutable
	return m
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// appendJSON writes the keys in Signature.__init__ order, as Celery does.
func (s *Signature) appendJSON(b []byte, depth int) ([]byte, error) {
	var err error
	b = append(b, `{"task": `...)
	b = appendPyString(b, s.Task)
	b = append(b, `, "args": `...)
	args := s.Args
	if args == nil {
		args = []any{}
	}
	if b, err = appendJSON(b, args, depth+1); err != nil {
		return nil, err
	}
	for _, kv := range [...]struct {
		key string
		m   map[string]any
	}{{"kwargs", s.Kwargs}, {"options", s.Options}} {
		b = append(b, `, "`...)
		b = append(b, kv.key...)
		b = append(b, `": `...)
		m := kv.m
		if m == nil {
			m = map[string]any{}
		}
		if b, err = appendJSONMap(b, m, depth+1); err != nil {
			return nil, err
		}
	}
	b = append(b, `, "subtask_type": `...)
	if s.SubtaskType == "" {
		b = append(b, "null"...)
	} else {
		b = appendPyString(b, s.SubtaskType)
	}
	b = append(b, `, "immutable": `...)
	if s.Immutable {
		b = append(b, "true"...)
	} else {
		b = append(b, "false"...)
	}
	keys := make([]string, 0, len(s.Extra))
	for k := range s.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = append(b, ", "...)
		b = appendPyString(b, k)
		b = append(b, ": "...)
		if b, err = appendJSON(b, s.Extra[k], depth+1); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// SignatureFrom converts a decoded value (the dict form, or a Signature) to
// a Signature, as celery.canvas.Signature.from_dict accepts it.
func SignatureFrom(v any) (Signature, error) {
	switch x := v.(type) {
	case Signature:
		return x, nil
	case *Signature:
		if x != nil {
			return *x, nil
		}
	case map[string]any:
		return signatureFromMap(x)
	}
	return Signature{}, fmt.Errorf("%w: signature must be an object, got %T", ErrMalformed, v)
}

// SignaturesFrom converts a list of signatures; nil stays nil.
func SignaturesFrom(v any) ([]Signature, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []Signature:
		return x, nil
	case []any:
		out := make([]Signature, len(x))
		for i, e := range x {
			s, err := SignatureFrom(e)
			if err != nil {
				return nil, fmt.Errorf("signature %d: %w", i, err)
			}
			out[i] = s
		}
		return out, nil
	case map[string]any: // Celery accepts a single signature where a list is expected.
		s, err := signatureFromMap(x)
		if err != nil {
			return nil, err
		}
		return []Signature{s}, nil
	}
	return nil, fmt.Errorf("%w: signature list must be an array, got %T", ErrMalformed, v)
}

func signatureFromMap(m map[string]any) (Signature, error) {
	var s Signature
	var ok bool
	if s.Task, ok = m["task"].(string); !ok {
		return s, fmt.Errorf("%w: signature without a string \"task\"", ErrMalformed)
	}
	switch a := m["args"].(type) {
	case nil:
	case []any:
		s.Args = a
	default:
		return s, fmt.Errorf("%w: signature %q: args must be an array", ErrMalformed, s.Task)
	}
	for _, kv := range [...]struct {
		key string
		dst *map[string]any
	}{{"kwargs", &s.Kwargs}, {"options", &s.Options}} {
		switch x := m[kv.key].(type) {
		case nil:
		case map[string]any:
			*kv.dst = x
		default:
			return s, fmt.Errorf("%w: signature %q: %s must be an object", ErrMalformed, s.Task, kv.key)
		}
	}
	switch t := m["subtask_type"].(type) {
	case nil:
	case string:
		s.SubtaskType = t
	default:
		return s, fmt.Errorf("%w: signature %q: subtask_type must be a string", ErrMalformed, s.Task)
	}
	switch im := m["immutable"].(type) {
	case nil:
	case bool:
		s.Immutable = im
	default:
		return s, fmt.Errorf("%w: signature %q: immutable must be a bool", ErrMalformed, s.Task)
	}
	for k, v := range m {
		switch k {
		case "task", "args", "kwargs", "options", "subtask_type", "immutable":
		default:
			if s.Extra == nil {
				s.Extra = map[string]any{}
			}
			s.Extra[k] = v
		}
	}
	return s, nil
}
