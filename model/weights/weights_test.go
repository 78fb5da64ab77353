package weights

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawSafetensors builds a file from a header and a data section, whatever they claim.
func rawSafetensors(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	return append(append(out, header...), data...)
}

func TestFloat16Decoding(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{{0x3C00, 1}, {0xC000, -2}, {0x3555, 0.333251953125}, {0x0001, 5.960464477539063e-08}, {0x7BFF, 65504}, {0x8000, float32(math.Copysign(0, -1))}} {
		if got := float16ToFloat32(c.h); got != c.want {
			t.Errorf("float16 %#04x = %v, want %v", c.h, got, c.want)
		}
	}
}

// FuzzParseHeader feeds arbitrary headers and data sizes to the safetensors header check: it must
// never panic, and whatever it accepts must lie inside the data.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte(`{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}`), int64(16))
	f.Add([]byte(`{"x":{"dtype":"BF16","shape":[],"data_offsets":[0,2]}}`), int64(2))
	f.Add([]byte(`{"x":{"dtype":"F16","shape":[0],"data_offsets":[4,4]}}`), int64(4))
	f.Add([]byte(`{"x":{"dtype":"F32","shape":[9223372036854775807,2],"data_offsets":[0,8]}}`), int64(8))
	f.Add([]byte(`[]`), int64(0))
	f.Fuzz(func(t *testing.T, header []byte, dataLen int64) {
		if dataLen < 0 {
			dataLen = -dataLen
		}
		entries, err := parseHeader(header, dataLen)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.begin < 0 || e.end < e.begin || e.end > dataLen {
				t.Fatalf("accepted %s with range [%d, %d) outside %d bytes", e.name, e.begin, e.end, dataLen)
			}
		}
	})
}

// FuzzReadShard writes arbitrary bytes as a safetensors file and reads it: errors are fine,
// panics and allocations beyond the file are not.
func FuzzReadShard(f *testing.F) {
	f.Add(rawSafetensors(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(rawSafetensors(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}}`, make([]byte, 10)))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, '{'})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "model.safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out := map[string]Tensor{}
		if err := readShard(path, "model.safetensors", out, map[string]string{}); err != nil {
			return
		}
		total := 0
		for _, p := range out {
			total += 4 * len(p.Data)
		}
		if total > 2*len(data) {
			t.Fatalf("read %d bytes of float32 from a %d-byte file", total, len(data))
		}
	})
}

// FuzzParseIndex checks that no accepted shard name leaves the checkpoint directory.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map":{"a":"../x"}}`))
	f.Add([]byte(`{"weight_map":{"a":"/etc/passwd"}}`))
	f.Add([]byte(`{"weight_map":{"a":"."}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		files, err := parseIndex(data)
		if err != nil {
			return
		}
		for _, name := range files {
			if !filepath.IsLocal(name) || strings.ContainsAny(name, `/`) || name == "." || name == ".." {
				t.Fatalf("accepted shard name %q", name)
			}
		}
	})
}
