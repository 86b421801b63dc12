module github.com/gocelery/gocelery

go 1.26.8

require (
	github.com/andybalholm/brotli v1.3.0
	github.com/dsnet/compress v0.0.1
	github.com/google/uuid v1.6.0
	github.com/klauspost/compress v1.20.4
	github.com/ulikunitz/xz v0.5.17
	github.com/vmihailenco/msgpack/v5 v5.4.1
)

require github.com/vmihailenco/tagparser/v2 v2.0.0 // indirect
