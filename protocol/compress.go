package protocol

import (
	"bytes"
	"compress/bzip2"
	"compress/zlib"
	"fmt"
	"io"
	"strings"

	"github.com/andybalholm/brotli"
	dsbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression MIME types, as kombu writes them in the "compression" header.
const (
	CompressionZlib   = "application/x-gzip" // kombu's "gzip" and "zlib": an RFC 1950 zlib stream
	CompressionBzip2  = "application/x-bz2"
	CompressionLZMA   = "application/x-lzma" // an xz container, as Python's lzma.compress writes
	CompressionBrotli = "application/x-brotli"
	CompressionZstd   = "application/zstd"
)

// CompressionType maps a kombu alias ("gzip", "zlib", "bzip2", "lzma", "xz",
// "brotli", "zstd") or MIME type to the MIME type kombu writes; ok is false
// for an unknown name.
func CompressionType(name string) (mime string, ok bool) {
	switch strings.ToLower(name) {
	case "gzip", "zlib", CompressionZlib:
		return CompressionZlib, true
	case "bzip2", "bzip", CompressionBzip2:
		return CompressionBzip2, true
	case "lzma", "xz", CompressionLZMA:
		return CompressionLZMA, true
	case "brotli", CompressionBrotli:
		return CompressionBrotli, true
	case "zstd", "zstandard", CompressionZstd:
		return CompressionZstd, true
	}
	return "", false
}

// Compress compresses data with the named codec and returns the MIME type
// to put in the "compression" header.
func Compress(name string, data []byte) (mime string, out []byte, err error) {
	mime, ok := CompressionType(name)
	if !ok {
		return "", nil, fmt.Errorf("%w: %q", ErrUnsupportedCompression, name)
	}
	var buf bytes.Buffer
	var w io.WriteCloser
	switch mime {
	case CompressionZlib:
		w = zlib.NewWriter(&buf)
	case CompressionBzip2:
		w, err = dsbzip2.NewWriter(&buf, &dsbzip2.WriterConfig{Level: dsbzip2.BestCompression})
	case CompressionLZMA:
		w, err = xz.NewWriter(&buf)
	case CompressionBrotli:
		w = brotli.NewWriter(&buf)
	case CompressionZstd:
		w, err = zstd.NewWriter(&buf)
	}
	if err != nil {
		return "", nil, fmt.Errorf("protocol: %s compressor: %w", mime, err)
	}
	if _, err := w.Write(data); err != nil {
		return "", nil, fmt.Errorf("protocol: %s compress: %w", mime, err)
	}
	if err := w.Close(); err != nil {
		return "", nil, fmt.Errorf("protocol: %s compress: %w", mime, err)
	}
	return mime, buf.Bytes(), nil
}

// Decompress reverses Compress for the codec named by a "compression"
// header (MIME type or alias). Output over maxSize bytes fails with
// ErrTooLarge, so a small compressed bomb cannot exhaust memory.
func Decompress(name string, data []byte, maxSize int) ([]byte, error) {
	mime, ok := CompressionType(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedCompression, name)
	}
	var r io.Reader
	var err error
	src := bytes.NewReader(data)
	switch mime {
	case CompressionZlib:
		var zr io.ReadCloser
		if zr, err = zlib.NewReader(src); err == nil {
			defer zr.Close()
			r = zr
		}
	case CompressionBzip2:
		r = bzip2.NewReader(src)
	case CompressionLZMA:
		r, err = xz.NewReader(src)
	case CompressionBrotli:
		r = brotli.NewReader(src)
	case CompressionZstd:
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(maxSize)+1)); err == nil {
			defer zr.Close()
			r = zr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s body: %v", ErrMalformed, mime, err)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(maxSize)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s body: %v", ErrMalformed, mime, err)
	}
	if len(out) > maxSize {
		return nil, fmt.Errorf("%w: decompressed body exceeds %d bytes", ErrTooLarge, maxSize)
	}
	return out, nil
}
