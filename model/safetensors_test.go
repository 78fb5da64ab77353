package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlpodyssey/safetensors"
)

// writeZeroCheckpoint writes a checkpoint of cfg's shapes with small values, without torch.
func writeZeroCheckpoint(t *testing.T, dir string, cfg Config) {
	t.Helper()
	views := map[string]safetensors.TensorView{}
	for _, s := range Shapes(cfg, false) {
		n := 1
		shape := make([]uint64, len(s.Dims))
		for i, d := range s.Dims {
			n *= d
			shape[i] = uint64(d)
		}
		v, err := safetensors.NewTensorView(safetensors.F32, shape, encodeFloats(make([]float32, n), safetensors.F32))
		if err != nil {
			t.Fatal(err)
		}
		views[s.Name] = v
	}
	data, err := safetensors.Serialize(views, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SaveConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
}

// rawSafetensors builds a file from a header and a data section, whatever they claim.
func rawSafetensors(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	return append(append(out, header...), data...)
}

// TestHostileCheckpointsAreRefused breaks a valid checkpoint in each way a probe or a corrupted
// disk can, and requires a clear error, quickly, with nothing read outside the directory.
func TestHostileCheckpointsAreRefused(t *testing.T) {
	cfg := testConfig(true)
	write := func(dir, name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	index := func(dir string, weightMap map[string]string) {
		data, _ := json.Marshal(map[string]any{"weight_map": weightMap})
		write(dir, "model.safetensors.index.json", data)
	}
	cases := []struct {
		name    string
		breakIt func(dir string)
		want    string
	}{
		{"valid", func(string) {}, ""},
		{"index entry climbs out of the directory", func(dir string) {
			index(dir, map[string]string{"model.embed_tokens.weight": "../../../../etc/passwd"})
		}, "plain file names inside"},
		{"index entry is absolute", func(dir string) {
			index(dir, map[string]string{"model.embed_tokens.weight": "/dev/zero"})
		}, "plain file names inside"},
		{"index entry is a subdirectory path", func(dir string) {
			index(dir, map[string]string{"model.embed_tokens.weight": "sub/model.safetensors"})
		}, "plain file names inside"},
		{"index lists nothing", func(dir string) { index(dir, map[string]string{}) }, "lists no tensors"},
		{"index is not JSON", func(dir string) { write(dir, "model.safetensors.index.json", []byte("{")) }, "index.json"},
		{"weights are a FIFO", func(dir string) {
			os.Remove(filepath.Join(dir, "model.safetensors"))
			if err := syscall.Mkfifo(filepath.Join(dir, "model.safetensors"), 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, "not a regular file"},
		{"weights are a link to /dev/zero", func(dir string) {
			os.Remove(filepath.Join(dir, "model.safetensors"))
			os.Symlink("/dev/zero", filepath.Join(dir, "model.safetensors"))
		}, "not a regular file"},
		{"config is a FIFO", func(dir string) {
			os.Remove(filepath.Join(dir, "config.json"))
			syscall.Mkfifo(filepath.Join(dir, "config.json"), 0o600)
		}, "not a regular file"},
		{"header length beyond the file", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors("{}", nil)[:8])
			f, _ := os.OpenFile(filepath.Join(dir, "model.safetensors"), os.O_WRONLY, 0)
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], 1<<40)
			f.WriteAt(b[:], 0)
			f.Close()
		}, "header claims"},
		{"file shorter than the length prefix", func(dir string) { write(dir, "model.safetensors", []byte{1, 2}) }, "too short"},
		{"offsets outside the data", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 8)))
		}, "outside"},
		{"shape and offsets disagree", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}`, make([]byte, 16)))
		}, "needs 12 bytes"},
		{"shape overflows", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}`, make([]byte, 16)))
		}, "too large"},
		{"negative dimension", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}`, make([]byte, 16)))
		}, "negative"},
		{"unsupported dtype", func(dir string) {
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}`, make([]byte, 16)))
		}, "not supported"},
		{"NaN weights", func(dir string) {
			bad := make([]byte, 16)
			binary.LittleEndian.PutUint32(bad[4:], math.Float32bits(float32(math.NaN())))
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, bad))
		}, "NaN or infinite"},
		{"infinite bfloat16 weights", func(dir string) {
			bad := make([]byte, 8)
			binary.LittleEndian.PutUint16(bad[2:], 0x7F80)
			write(dir, "model.safetensors", rawSafetensors(`{"x":{"dtype":"BF16","shape":[4],"data_offsets":[0,8]}}`, bad))
		}, "NaN or infinite"},
		{"config far larger than the weights", func(dir string) {
			c := cfg
			c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads = 1<<40, 1<<20, 1<<20
			data, _ := json.Marshal(c)
			write(dir, "config.json", data)
		}, "more than"},
		{"config wider than the weights", func(dir string) {
			c := cfg
			c.IntermediateSize = 64
			SaveConfig(dir, c)
		}, "mismatched"},
		{"a tensor the config does not have", func(dir string) {
			c := cfg
			c.NumHiddenLayers = 1
			SaveConfig(dir, c)
		}, "unexpected"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeZeroCheckpoint(t, dir, cfg)
			c.breakIt(dir)
			done := make(chan error, 1)
			go func() { _, err := ReadCheckpoint(dir); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("reading the checkpoint blocked")
			}
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}
