// Package keyfile keeps the broker's secret keys (the token issuer key, the
// pseudonym key) in PEM files of mode 0600 inside a directory that only
// their owner may write, and creates a key on first use.
package keyfile

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// maxSize bounds how much of a key file is read; the broker's keys are a few
// hundred bytes.
const maxSize = 64 << 10

// LoadOrCreate returns the bytes of the PEM block of type pemType in the file
// path, and on first use makes them with create and writes the file. what
// names the key in errors (e.g. "pseudonym key").
//
// Several processes (a starting broker and `epsctl token`, say) may call it
// at the same time: the key is written to a temporary file and hard-linked
// into place, so exactly one key wins and every caller returns it. The file
// system must support hard links.
//
// A key file that group or others may read or write, or a key directory
// that they may write, is refused rather than used: a key others can read
// is no longer secret, and one they can write is no longer ours.
func LoadOrCreate(path, pemType, what string, create func() ([]byte, error)) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := checkDir(dir, what); err != nil {
		return nil, err
	}
	key, err := read(path, pemType, what)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key, err = create()
	if err != nil {
		return nil, fmt.Errorf("%s: generating: %w", what, err)
	}
	return write(dir, path, pemType, what, key)
}

// checkDir refuses a key directory that group or others may write to, as
// they could then replace the key.
func checkDir(dir, what string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s: %s is not a directory", what, dir)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s: directory %s is writable by group or others (mode %04o); restrict it with chmod 700",
			what, dir, fi.Mode().Perm())
	}
	return nil
}

// read reads and checks an existing key file. When the file does not exist
// the error wraps fs.ErrNotExist.
func read(path, pemType, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file", what, path)
	}
	// File modes mean little on Windows.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s: %s is readable or writable by group or others (mode %04o); "+
			"refusing to use it: restrict it with chmod 600", what, path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSize))
	if err != nil {
		return nil, fmt.Errorf("%s: reading %s: %w", what, path, err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != pemType {
		return nil, fmt.Errorf("%s: %s holds no PEM %q block", what, path, pemType)
	}
	return block.Bytes, nil
}

// write puts key into path through a temporary file in dir. If another
// process linked its key first, that key is read and returned instead.
func write(dir, path, pemType, what string, key []byte) ([]byte, error) {
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: key})
	// CreateTemp opens with O_CREATE|O_EXCL and mode 0600.
	tmp, err := os.CreateTemp(dir, ".key-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tmpName := tmp.Name()
	// The temporary name goes whatever happens; once linked, path keeps the
	// data.
	defer os.Remove(tmpName)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("%s: writing: %w", what, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("%s: writing: %w", what, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("%s: writing: %w", what, err)
	}
	// Link, unlike rename, never replaces an existing file: the first
	// process to link wins and the others read its complete, synced key.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return read(path, pemType, what)
		}
		return nil, fmt.Errorf("%s: installing %s: %w", what, path, err)
	}
	// Make the new directory entry durable where the platform allows it.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return key, nil
}
