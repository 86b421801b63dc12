package protocol

import (
	"errors"
	"fmt"
)

// Sentinel errors callers branch on. Errors returned by this package wrap
// one of them, so use errors.Is.
var (
	// ErrMalformed reports bytes that are not a valid encoding, or a
	// structure that is not what Celery sends (a body that is not
	// [args, kwargs, embed], a header of the wrong type).
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrTooLarge reports a body, or a decompressed body, over the limit.
	ErrTooLarge = errors.New("protocol: message too large")
	// ErrTooDeep reports nesting deeper than the limit.
	ErrTooDeep = errors.New("protocol: nesting too deep")
	// ErrUnsupportedContentType reports a serializer this package refuses or
	// does not know. The concrete error is a *ContentTypeError.
	ErrUnsupportedContentType = errors.New("protocol: unsupported content type")
	// ErrUnsupportedCompression reports an unknown compression header.
	ErrUnsupportedCompression = errors.New("protocol: unsupported compression")
	// ErrNotTaskMessage reports a message that is neither protocol v1 nor v2.
	ErrNotTaskMessage = errors.New("protocol: not a task message")
)

// ContentTypeError names a content type that cannot be decoded.
type ContentTypeError struct {
	ContentType string
	Reason      string
}

func (e *ContentTypeError) Error() string {
	return fmt.Sprintf("protocol: content type %q refused: %s", e.ContentType, e.Reason)
}

// Is makes errors.Is(err, ErrUnsupportedContentType) true.
func (e *ContentTypeError) Is(target error) bool { return target == ErrUnsupportedContentType }

// SyntaxError locates a decoding failure in the input.
type SyntaxError struct {
	Format string // "json" or "msgpack"
	Offset int    // byte offset in the (decompressed) body
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("protocol: invalid %s at offset %d: %s", e.Format, e.Offset, e.Msg)
}

// Is makes errors.Is(err, ErrMalformed) true.
func (e *SyntaxError) Is(target error) bool { return target == ErrMalformed }

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}
