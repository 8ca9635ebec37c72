package httpapi

import "io"

// readBody reads all of body. size is the request's Content-Length (-1:
// unknown), at most the body limit: with it a body of up to presizeLimit
// bytes (every order) is read into one buffer of its size, where io.ReadAll
// would start at 512 bytes and grow (copying) about a dozen times for the
// 16 KB of an order. A larger declared size gets a buffer of presizeLimit
// that grows as the bytes arrive: a client that declares a large body and
// sends it slowly, or never, holds no more memory than it has sent. A body
// longer or shorter than it declared is read all the same (the server
// refuses one that ends early with io.ErrUnexpectedEOF).
func readBody(body io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(body)
	}
	// One byte more than declared, so that reading the end needs no growth.
	b := make([]byte, 0, min(size, presizeLimit)+1)
	for {
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // past the buffer: grow as io.ReadAll does
		}
	}
}

// presizeLimit is the largest buffer readBody makes before the bytes
// arrive: more than the NHS example requests (an order of 4 items is 16-24
// KB, the largest dispense notification 47 KB); 1,024 connections that
// declare more and send nothing hold 64 MiB.
const presizeLimit = 64 << 10
