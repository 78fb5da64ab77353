// Package weights reads the tensors of safetensors checkpoints (single files, or shards listed in
// an index) as float32, checking everything a file claims before trusting it: the header against
// the file's size, each tensor's dtype, shape and byte range against the data, shard names against
// the directory, and every value for NaN and infinity. It needs no libtorch, so what reads
// untrusted checkpoints can be fuzzed on its own.
package weights

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/bits"
	"path/filepath"
	"sort"

	"github.com/nlpodyssey/safetensors"

	"github.com/spa-rl/spa/internal/safefile"
)

// Tensor is one tensor's shape and values, row-major.
type Tensor struct {
	Shape []int
	Data  []float32
}

// Bounds on what a checkpoint's metadata may claim. A safetensors header above 100 MB is refused
// by the format's own reader too; an index is a name-to-file map, far below its bound.
const (
	maxHeaderBytes = 100 << 20
	maxIndexBytes  = 64 << 20
)

// tensorEntry is one tensor of a safetensors header, checked against the file it came from.
type tensorEntry struct {
	name       string
	dtype      safetensors.DType
	shape      []int
	begin, end int64 // byte offsets in the data section
}

// ReadDir reads every tensor of a checkpoint directory as float32: model.safetensors, or the
// shards listed in model.safetensors.index.json. Shard names must stay inside dir and name regular
// files; headers are checked against the file sizes before anything is allocated; values that are
// NaN or infinite are refused, since no step of training or serving recovers from them.
func ReadDir(dir string) (map[string]Tensor, error) {
	files := []string{"model.safetensors"}
	indexPath := filepath.Join(dir, "model.safetensors.index.json")
	if data, err := safefile.Read(indexPath, maxIndexBytes); err == nil {
		if files, err = parseIndex(data); err != nil {
			return nil, fmt.Errorf("%s: %w", indexPath, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read weights: %w", err)
	}
	out := map[string]Tensor{}
	from := map[string]string{}
	for _, name := range files {
		if err := readShard(filepath.Join(dir, name), name, out, from); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// parseIndex returns the distinct shard files of a model.safetensors.index.json, sorted.
func parseIndex(data []byte) ([]string, error) {
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return nil, err
	}
	if len(index.WeightMap) == 0 {
		return nil, errors.New("weight_map lists no tensors")
	}
	seen := map[string]bool{}
	var files []string
	for tensor, f := range index.WeightMap {
		if !filepath.IsLocal(f) || filepath.Base(f) != f || f == "." {
			return nil, fmt.Errorf("tensor %q maps to %q: shard names must be plain file names inside the checkpoint directory", tensor, f)
		}
		if !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	sort.Strings(files)
	return files, nil
}

// ReadFile reads one safetensors file, with ReadDir's checks.
func ReadFile(path string) (map[string]Tensor, error) {
	out := map[string]Tensor{}
	if err := readShard(path, filepath.Base(path), out, map[string]string{}); err != nil {
		return nil, err
	}
	return out, nil
}

// readShard reads one safetensors file into out; from records which file each tensor came from,
// so that a tensor stored twice is an error rather than a silent overwrite.
func readShard(path, name string, out map[string]Tensor, from map[string]string) error {
	f, size, err := safefile.Open(path)
	if err != nil {
		return fmt.Errorf("read weights: %w", err)
	}
	defer f.Close()
	var head [8]byte
	if _, err := io.ReadFull(f, head[:]); err != nil {
		return fmt.Errorf("read weights %s: %d bytes is too short for a safetensors file", name, size)
	}
	n := binary.LittleEndian.Uint64(head[:])
	if n > maxHeaderBytes || n > uint64(size-8) {
		return fmt.Errorf("read weights %s: the header claims %d bytes; the file has %d after the length and the limit is %d", name, n, size-8, maxHeaderBytes)
	}
	header := make([]byte, n)
	if _, err := io.ReadFull(f, header); err != nil {
		return fmt.Errorf("read weights %s: header: %w", name, err)
	}
	dataStart := 8 + int64(n)
	entries, err := parseHeader(header, size-dataStart)
	if err != nil {
		return fmt.Errorf("read weights %s: %w", name, err)
	}
	for _, e := range entries {
		if prev, ok := from[e.name]; ok {
			return fmt.Errorf("read weights: tensor %s is in both %s and %s", e.name, prev, name)
		}
		buf := make([]byte, e.end-e.begin)
		if _, err := f.ReadAt(buf, dataStart+e.begin); err != nil {
			return fmt.Errorf("read weights %s: %s: %w", name, e.name, err)
		}
		vals, err := Decode(buf, e.dtype)
		if err != nil {
			return fmt.Errorf("read weights %s: %s: %w", name, e.name, err)
		}
		if bad, at := nonFinite(vals); bad > 0 {
			return fmt.Errorf("read weights %s: %s has %d NaN or infinite values (the first at index %d, %v); refusing a checkpoint no step can recover from", name, e.name, bad, at, vals[at])
		}
		out[e.name] = Tensor{Shape: e.shape, Data: vals}
		from[e.name] = name
	}
	return nil
}

// parseHeader reads a safetensors JSON header and checks every tensor against a data section of
// dataLen bytes: a supported dtype, a shape whose size matches its byte range, and a range inside
// the data.
func parseHeader(header []byte, dataLen int64) ([]tensorEntry, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, fmt.Errorf("header is not a JSON object: %w", err)
	}
	var out []tensorEntry
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var t struct {
			DType       string   `json:"dtype"`
			Shape       []int64  `json:"shape"`
			DataOffsets []uint64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &t); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		e := tensorEntry{name: name}
		var width uint64
		switch t.DType {
		case "F32":
			e.dtype, width = safetensors.F32, 4
		case "BF16":
			e.dtype, width = safetensors.BF16, 2
		case "F16":
			e.dtype, width = safetensors.F16, 2
		default:
			return nil, fmt.Errorf("tensor %q: dtype %q is not supported (want F32, BF16 or F16)", name, t.DType)
		}
		count := uint64(1)
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, t.Shape)
			}
			hi, lo := bits.Mul64(count, uint64(d))
			if hi != 0 || lo > math.MaxInt32 {
				return nil, fmt.Errorf("tensor %q: shape %v is too large", name, t.Shape)
			}
			count = lo
			e.shape = append(e.shape, int(d))
		}
		if len(t.DataOffsets) != 2 || t.DataOffsets[0] > t.DataOffsets[1] || t.DataOffsets[1] > uint64(dataLen) {
			return nil, fmt.Errorf("tensor %q: data_offsets %v outside the %d bytes of data", name, t.DataOffsets, dataLen)
		}
		if t.DataOffsets[1]-t.DataOffsets[0] != count*width {
			return nil, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data_offsets give %d", name, t.Shape, t.DType, count*width, t.DataOffsets[1]-t.DataOffsets[0])
		}
		e.begin, e.end = int64(t.DataOffsets[0]), int64(t.DataOffsets[1])
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].begin < out[j].begin })
	return out, nil
}

// nonFinite counts NaN and infinite values and returns the index of the first.
func nonFinite(v []float32) (int, int) {
	n, first := 0, -1
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	return n, first
}

// Decode reads little-endian F32, BF16 or F16 values as float32.
func Decode(b []byte, dtype safetensors.DType) ([]float32, error) {
	switch dtype {
	case safetensors.F32:
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out, nil
	case safetensors.BF16:
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
		return out, nil
	case safetensors.F16:
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = float16ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out, nil
	}
	return nil, fmt.Errorf("dtype %s is not supported (want F32, BF16 or F16)", dtype)
}

func float16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	mant := uint32(h) & 0x3FF
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: renormalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3FF)<<13)
	case exp == 0x1F:
		return math.Float32frombits(sign | 0xFF<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
