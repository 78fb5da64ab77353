package safefile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 100), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(big, link); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path  string
		limit int64
		want  string // "" means success
	}{
		{fifo, 10, "not a regular file"},
		{dir, 10, "not a regular file"},
		{"/dev/zero", 10, "not a regular file"},
		{big, 10, "more than"},
		{big, 100, ""},
		{link, 100, ""}, // symlinks to regular files are fine (the Hugging Face cache is made of them)
		{filepath.Join(dir, "missing"), 10, "no such file"},
	}
	for _, c := range cases {
		done := make(chan error, 1)
		go func() { _, err := Read(c.path, c.limit); done <- err }()
		select {
		case err := <-done:
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("Read(%s, %d) = %v, want %q", c.path, c.limit, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Read(%s) blocked", c.path)
		}
	}
}
