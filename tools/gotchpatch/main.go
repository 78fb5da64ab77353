// Command gotchpatch derives a copy of gotch that builds against the libtorch installed on this
// machine.
//
// gotch v0.9.1 is generated for libtorch 2.1. Debian ships libtorch 1.13, which lacks some of the
// operators that gotch wraps, so about a hundred generated C++ wrappers do not compile. Rather than
// keep a hand-made list that rots with every libtorch or gotch version, gotchpatch asks the compiler:
// it compiles the wrappers, collects every generated function that a diagnostic points into, and
// replaces the body of each with one that reports a runtime error through gotch's normal error path.
// It repeats until the file compiles. gotch's lib.go also links CUDA libraries; for every library it
// names that the linker cannot find, gotchpatch builds an empty stub, and the build links with
// -Wl,--as-needed so the stubs never become runtime dependencies.
//
// With -consumer (setup passes spa's root), gotchpatch also deletes the generated wrappers that the
// consumer's code cannot reach (prune.go): spa reaches about 130 of gotch's 2,525 operators, and the
// rest were most of a fresh build's one-core C++ compile. What the consumer uses is part of the
// stamp, so code that starts calling another operator gets a new copy at the next setup, and
// other edits do not.
//
// On a libtorch 2.1, the version gotch targets, every wrapper compiles and none is replaced. The
// fixes to gotch's Go code (goEdits, patchKeepAlive, patchInPlaceHandles) are bugs in gotch, not
// version differences, so they apply to every libtorch.
//
// -torch-root names the libtorch: /usr for Debian's libtorch-dev, or the folder of the official C++
// distribution (libtorch-*.zip) or of a PyTorch wheel's torch package, each with include/ and lib/.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

const (
	generatedFile = "torch_api_generated.cpp.h"
	stampFile     = ".spa-patch"
	stubDir       = "spa-stubs"
	// patchRevision changes whenever the patch logic changes, so old copies are rebuilt.
	patchRevision = "9"
	maxRounds     = 5
)

func main() {
	src := flag.String("src", "", "pristine gotch module directory (from the module cache)")
	dst := flag.String("dst", "third_party/gotch", "where to write the patched copy")
	root := flag.String("torch-root", "/usr", "libtorch's root, holding include/ and lib/ (/usr: Debian's libtorch-dev)")
	cxx := flag.String("cxx", "g++", "C++ compiler")
	consumer := flag.String("consumer", "", "the module that uses gotch (spa's root): only the generated wrappers its code reaches are kept; empty keeps all")
	flag.Parse()
	if err := run(*src, *dst, *root, *cxx, *consumer); err != nil {
		fmt.Fprintln(os.Stderr, "gotchpatch:", err)
		os.Exit(1)
	}
}

// includeDirs are the folders under a libtorch root that its C++ API needs on the include path.
func includeDirs(root string) []string {
	return []string{filepath.Join(root, "include"), filepath.Join(root, "include", "torch", "csrc", "api", "include")}
}

func run(src, dst, root, cxx, consumer string) error {
	if src == "" {
		return errors.New("-src is required")
	}
	major, minor, err := readTorchVersion(root)
	if err != nil {
		return err
	}
	cxxVersion, err := exec.Command(cxx, "--version").Output()
	if err != nil {
		return fmt.Errorf("run %s --version: %w", cxx, err)
	}
	stamp := fmt.Sprintf("src=%s\nlibtorch=%d.%d\nroot=%s\ncxx=%s\nrevision=%s\n",
		filepath.Base(src), major, minor, root, firstLine(string(cxxVersion)), patchRevision)
	var use usage
	if consumer != "" {
		if use, err = readUsage(consumer, src); err != nil {
			return fmt.Errorf("read what %s uses of gotch: %w", consumer, err)
		}
		if len(use.packages) == 0 {
			return fmt.Errorf("no Go file under %s imports %s; -consumer names the module that uses it", consumer, gotchModule)
		}
		stamp += "uses=" + use.digest() + "\n"
	}
	if old, err := os.ReadFile(filepath.Join(dst, stampFile)); err == nil && string(old) == stamp {
		fmt.Printf("gotchpatch: %s is up to date\n", dst)
		return nil
	}

	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := copyTree(src, tmp); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	libtch := filepath.Join(tmp, "libtch")
	if err := patchGoSources(tmp); err != nil {
		return err
	}
	if err := patchKeepAlive(filepath.Join(tmp, "ts")); err != nil {
		return err
	}
	if err := patchInPlaceHandles(filepath.Join(libtch, generatedFile)); err != nil {
		return err
	}
	// Pruned before the compile rounds, which then check only the wrappers that are kept.
	if consumer != "" {
		st, err := prune(tmp, use)
		if err != nil {
			return err
		}
		fmt.Printf("gotchpatch: kept the %d of %d generated Go functions and %d of %d C++ wrappers that the code in %s reaches\n",
			st.goKept, st.goTotal, st.cKept, st.cTotal, mustAbs(consumer))
	}
	patched, err := patchUntilItCompiles(libtch, includeDirs(root), cxx)
	if err != nil {
		return err
	}
	stubs, err := buildStubs(filepath.Join(libtch, "lib.go"), filepath.Join(tmp, stubDir), filepath.Join(root, "lib"), cxx)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, stampFile), []byte(stamp), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	fmt.Printf("gotchpatch: libtorch %d.%d: %d generated wrappers turned into runtime errors, %d CUDA stub libraries (%s)\n",
		major, minor, len(patched), len(stubs), strings.Join(stubs, " "))
	return nil
}

// patchUntilItCompiles compiles the wrappers and stubs out every function the diagnostics name,
// until the compiler is satisfied. It returns the names of the patched functions.
func patchUntilItCompiles(libtch string, includes []string, cxx string) ([]string, error) {
	path := filepath.Join(libtch, generatedFile)
	var all []string
	for round := 1; round <= maxRounds; round++ {
		args := []string{"-std=c++17", "-fsyntax-only", "-w", "-fmax-errors=0", "-I" + libtch}
		for _, dir := range includes {
			args = append(args, "-I"+dir)
		}
		cmd := exec.Command(cxx, append(args, filepath.Join(libtch, "torch_api.cpp"))...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil {
			sort.Strings(all)
			return all, nil
		}
		code, readErr := os.ReadFile(path)
		if readErr != nil {
			return nil, readErr
		}
		lines := diagnosticLines(out.String())
		if len(lines) == 0 {
			return nil, fmt.Errorf("compiling gotch's torch_api.cpp failed outside the generated wrappers, which gotchpatch cannot fix:\n%s", tail(out.String(), 4000))
		}
		fixed, names, err := stubFunctions(string(code), lines, "libtorch on this machine")
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
			return nil, err
		}
		all = append(all, names...)
		fmt.Printf("gotchpatch: round %d: %d wrappers rejected by the compiler\n", round, len(names))
	}
	return nil, fmt.Errorf("the generated wrappers still do not compile after %d rounds", maxRounds)
}

// goEdits are source changes to gotch's Go code that are not about libtorch versions.
var goEdits = []struct {
	file, old, new, why string
	// all replaces every occurrence (generated code), not just the one.
	all bool
}{{
	file: "ts/tensor.go",
	old:  "\tx.d = new(bigStruct)\n",
	new:  "\t// spa: no 100 KB bigStruct per tensor (see tools/gotchpatch)\n",
	// gotch gives every tensor handle a 100 KB Go allocation "so the GC targets it". A decoding
	// step makes hundreds of handles, so this was most of the Go heap churn and a 5x slow-down of
	// batch-1 generation on two cores. The handle escapes to the heap anyway; finalizers still
	// free the C tensors.
	why: "per-tensor 100 KB allocation",
}, {
	file: "ts/tensor-generated.go",
	old:  "ptr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(0)))\n",
	new:  "ptr := (*lib.Ctensor)(unsafe.Pointer(C.malloc(16))) // spa: sized, and freed (see tools/gotchpatch)\n  defer C.free(unsafe.Pointer(ptr))\n",
	// Every generated single-output op mallocs its out-parameter and never frees it (and sizes it
	// 0 while C++ writes a pointer into it). Thousands of ops per decoding step made a serving
	// process's RSS climb without end (spa bench soak). The value is copied out before return.
	why: "leaked out-parameter of every generated op",
	all: true,
}}

// patchGoSources applies goEdits, failing loudly when gotch's code no longer matches.
func patchGoSources(root string) error {
	for _, e := range goEdits {
		path := filepath.Join(root, e.file)
		code, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Contains(code, []byte(e.old)) {
			return fmt.Errorf("%s no longer contains the code gotchpatch removes (%s); update goEdits", e.file, e.why)
		}
		n := 1
		if e.all {
			n = -1
		}
		if err := os.WriteFile(path, bytes.Replace(code, []byte(e.old), []byte(e.new), n), 0o644); err != nil {
			return err
		}
		fmt.Printf("gotchpatch: %s: removed the %s\n", e.file, e.why)
	}
	return nil
}

// A call into libtorch from gotch's Go wrappers, alone on its line, with an optional assignment.
var (
	cCallRE    = regexp.MustCompile(`^(\s*)(?:[\w, ]+:?= *)?lib\.At\w*\((.*)\)\s*$`)
	handleRE   = regexp.MustCompile(`(?:^|[^.\w])([A-Za-z_]\w*)\.c(?:tensor|scalar)\b`)
	listRE     = regexp.MustCompile(`^\s*for _, t := range (\w+) \{(\w+) = append\(\w+, t\.ctensor\)\}\s*$`)
	importRE   = regexp.MustCompile(`(?m)^import ?\($`)
	funcLineRE = regexp.MustCompile(`^func\b`)
)

// patchKeepAlive keeps every tensor and scalar a wrapper hands to libtorch alive until the call
// returns. gotch reads the C handle out of the Go value (ts.ctensor, other.cscalar) and passes only
// that, so the Go value can become unreachable during the call and its finalizer free the C
// object under libtorch's feet. Temporaries such as x.AddScalar(ts.FloatScalar(eps)) hit it: a
// spa serve process under load died with "s.isIntegral(false) INTERNAL ASSERT FAILED" in
// scalar_to_tensor, reading a scalar the garbage collector had just freed. runtime.KeepAlive after
// each call is what the Go documentation prescribes for exactly this.
func patchKeepAlive(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return err
	}
	total := 0
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		code, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fixed, n, err := keepAlive(string(code))
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if n == 0 {
			continue
		}
		total += n
		if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
			return err
		}
	}
	if total == 0 {
		return fmt.Errorf("no libtorch call in %s passes a handle the way gotchpatch expects; update cCallRE", dir)
	}
	fmt.Printf("gotchpatch: ts: %d calls keep their tensors and scalars alive until they return\n", total)
	return nil
}

// keepAlive adds runtime.KeepAlive after every libtorch call in code for each Go value whose
// handle the call takes, directly or through a handle list built from a []*Tensor. It returns
// the new code and how many calls it changed.
func keepAlive(code string) (string, int, error) {
	lines := strings.Split(code, "\n")
	out := make([]string, 0, len(lines))
	lists := map[string]string{} // handle list -> the []*Tensor it was built from, in this function
	calls := 0
	for _, line := range lines {
		out = append(out, line)
		if funcLineRE.MatchString(line) {
			clear(lists)
		}
		if m := listRE.FindStringSubmatch(line); m != nil {
			lists[m[2]] = m[1]
			continue
		}
		m := cCallRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var keep []string
		for _, h := range handleRE.FindAllStringSubmatch(m[2], -1) {
			keep = append(keep, h[1])
		}
		for _, arg := range strings.Split(m[2], ",") {
			if v, ok := lists[strings.TrimSpace(arg)]; ok {
				keep = append(keep, v)
			}
		}
		slices.Sort(keep)
		keep = slices.Compact(keep)
		for _, v := range keep {
			out = append(out, m[1]+"runtime.KeepAlive("+v+")")
		}
		if len(keep) > 0 {
			calls++
		}
	}
	code = strings.Join(out, "\n")
	if calls > 0 && !strings.Contains(code, "\t\"runtime\"\n") && !strings.Contains(code, "  \"runtime\"\n") {
		loc := importRE.FindStringIndex(code)
		if loc == nil {
			return "", 0, errors.New("no import block to add \"runtime\" to")
		}
		code = code[:loc[1]] + "\n\t\"runtime\"" + code[loc[1]:]
	}
	return code, calls, nil
}

// inPlaceRE matches a generated in-place wrapper (name ending in "_", on self) up to the line that
// wraps its result in a new handle.
var inPlaceRE = regexp.MustCompile(`(?m)^(void atg_\w+_\(tensor \*out__, tensor self[^\n]*\{\n  PROTECT\(\n    auto outputs__ = self->\w+\([^\n]*\);\n)    out__\[0\] = new torch::Tensor\(outputs__\);\n`)

// patchInPlaceHandles makes in-place wrappers hand back the handle they were given. An in-place op
// returns its own tensor, and gotch wrapped it in a new handle that its Go side then put in place
// of the old one without deleting it: a leaked torch::Tensor per call (the KV cache writes one
// per layer per decoding step), which spa bench soak showed as RSS growth. Deleting the old handle
// from Go instead is unsafe, since several Go tensors can share one handle.
func patchInPlaceHandles(path string) error {
	code, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	n := len(inPlaceRE.FindAllIndex(code, -1))
	if n == 0 {
		return fmt.Errorf("%s has no in-place wrapper of the shape gotchpatch patches; update inPlaceRE", path)
	}
	code = inPlaceRE.ReplaceAll(code, []byte("${1}    out__[0] = self; // spa: the in-place op's own handle (see tools/gotchpatch)\n"))
	fmt.Printf("gotchpatch: %s: %d in-place wrappers return their own handle\n", generatedFile, n)
	return os.WriteFile(path, code, 0o644)
}

var diagRE = regexp.MustCompile(`(?m)(?:^|[\s/])` + regexp.QuoteMeta(generatedFile) + `:(\d+):`)

// diagnosticLines returns the line numbers of the generated file that the compiler output points
// at, in errors, notes and "required from here" lines alike.
func diagnosticLines(output string) []int {
	seen := map[int]bool{}
	var lines []int
	for _, m := range diagRE.FindAllStringSubmatch(output, -1) {
		var n int
		fmt.Sscanf(m[1], "%d", &n)
		if n > 0 && !seen[n] {
			seen[n] = true
			lines = append(lines, n)
		}
	}
	sort.Ints(lines)
	return lines
}

var signatureRE = regexp.MustCompile(`^(\w[\w\s\*]*?)\s*\*?\s*\b(atg_\w+)\(.*\)\s*\{$`)

// span is one generated C++ function: its lines (0-based, inclusive: the signature line and the
// closing brace), name and return type.
type span struct {
	start, end int
	name, ret  string
}

// generatedSpans finds the generated functions in src's lines.
func generatedSpans(src []string) ([]span, error) {
	var spans []span
	for i := 0; i < len(src); i++ {
		m := signatureRE.FindStringSubmatch(src[i])
		if m == nil {
			continue
		}
		j := i + 1
		for j < len(src) && src[j] != "}" {
			j++
		}
		if j == len(src) {
			return nil, fmt.Errorf("function %s at line %d has no closing brace", m[2], i+1)
		}
		spans = append(spans, span{i, j, m[2], strings.TrimSpace(m[1])})
		i = j
	}
	return spans, nil
}

// stubFunctions replaces the body of every generated function that contains one of lines (1-based)
// with a body that raises a runtime error through PROTECT, which gotch reports as a Go error.
func stubFunctions(code string, lines []int, why string) (string, []string, error) {
	src := strings.Split(code, "\n")
	spans, err := generatedSpans(src)
	if err != nil {
		return "", nil, err
	}
	hit := map[int]bool{}
	for _, l := range lines {
		idx := sort.Search(len(spans), func(k int) bool { return spans[k].end >= l-1 })
		if idx == len(spans) || spans[idx].start > l-1 {
			return "", nil, fmt.Errorf("line %d of %s is outside every generated function", l, generatedFile)
		}
		hit[idx] = true
	}
	var out []string
	var names []string
	prev := 0
	for k, s := range spans {
		if !hit[k] {
			continue
		}
		out = append(out, src[prev:s.start+1]...)
		out = append(out, fmt.Sprintf("  PROTECT(throw std::runtime_error(%q);)",
			s.name+" is not available: gotch v0.9.1 targets libtorch 2.1 and this wrapper does not compile against the "+why+" (patched by spa's setup)"))
		if s.ret != "void" {
			out = append(out, "  return {};")
		}
		names = append(names, s.name)
		prev = s.end
	}
	out = append(out, src[prev:]...)
	return strings.Join(out, "\n"), names, nil
}

var linkLibRE = regexp.MustCompile(`-l([\w+.-]+)`)

// buildStubs writes an empty shared library for every library named in lib.go's LDFLAGS that the
// linker cannot find on this machine, in libDir (libtorch's own lib folder) or the compiler's
// search path.
func buildStubs(libGo, dir, libDir, cxx string) ([]string, error) {
	data, err := os.ReadFile(libGo)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	empty := filepath.Join(dir, "empty.c")
	if err := os.WriteFile(empty, []byte("/* empty stub: see tools/gotchpatch */\n"), 0o644); err != nil {
		return nil, err
	}
	var stubs []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, "#cgo LDFLAGS") {
			continue
		}
		for _, m := range linkLibRE.FindAllStringSubmatch(line, -1) {
			lib := m[1]
			if seen[lib] {
				continue
			}
			seen[lib] = true
			if _, err := os.Stat(filepath.Join(libDir, "lib"+lib+".so")); err == nil {
				continue
			}
			found, err := exec.Command(cxx, "-print-file-name=lib"+lib+".so").Output()
			if err == nil && filepath.IsAbs(strings.TrimSpace(string(found))) {
				continue
			}
			so := filepath.Join(dir, "lib"+lib+".so")
			if out, err := exec.Command(cxx, "-shared", "-x", "c", "-o", so, empty).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("build stub %s: %v: %s", so, err, out)
			}
			stubs = append(stubs, lib)
		}
	}
	return stubs, nil
}

// readTorchVersion reads the libtorch version under root from its headers.
func readTorchVersion(root string) (major, minor int, err error) {
	versionHeader := filepath.Join(includeDirs(root)[1], "torch", "version.h")
	header, err := os.ReadFile(versionHeader)
	if err != nil {
		return 0, 0, fmt.Errorf("read libtorch's version (is libtorch-dev installed, or LIBTORCH a libtorch folder?): %w", err)
	}
	// libtorch 2.10 and later define the version in a header-only file that version.h includes.
	if more, err := os.ReadFile(filepath.Join(root, "include", "torch", "headeronly", "version.h")); err == nil {
		header = append(header, more...)
	}
	if major, minor, err = parseTorchVersion(string(header)); err != nil {
		return 0, 0, fmt.Errorf("parse %s: %w", versionHeader, err)
	}
	return major, minor, nil
}

var versionRE = regexp.MustCompile(`#define\s+TORCH_VERSION_(MAJOR|MINOR)\s+(\d+)`)

func parseTorchVersion(header string) (major, minor int, err error) {
	found := 0
	for _, m := range versionRE.FindAllStringSubmatch(header, -1) {
		var n int
		fmt.Sscanf(m[2], "%d", &n)
		if m[1] == "MAJOR" {
			major = n
		} else {
			minor = n
		}
		found++
	}
	if found != 2 {
		return 0, 0, errors.New("no TORCH_VERSION_MAJOR/MINOR defines")
	}
	return major, minor, nil
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

func mustAbs(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
