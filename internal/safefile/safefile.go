// Package safefile opens files named by untrusted input (checkpoint directories sent to the
// server, shard names in an index) without the ways a path can hang or exhaust a process: it
// refuses anything that is not a regular file (a FIFO would block, a device never end) and
// bounds how much it reads.
package safefile

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// Open opens path for reading when it is a regular file (after symlinks), and returns its size.
// The open itself does not block: a FIFO is refused without waiting for a writer.
func Open(path string) (*os.File, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file (%s)", path, st.Mode().Type())
	}
	return f, st.Size(), nil
}

// Read reads a whole regular file of at most limit bytes.
func Read(path string, limit int64) ([]byte, error) {
	f, size, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d this file may have", path, size, limit)
	}
	// The size may change under us; read at most limit+1 to notice growth past it.
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s grew past %d bytes while being read", path, limit)
	}
	return data, nil
}
