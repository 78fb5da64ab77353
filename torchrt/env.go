package torchrt

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/cpu"
)

// coreRank orders OpenBLAS kernel sets by the instructions they use. Names it does not know are
// never overridden.
var coreRank = map[string]int{
	"katmai": 1, "coppermine": 1, "northwood": 1, "prescott": 1, "banias": 1, "core2": 1, "penryn": 1,
	"dunnington": 1, "nehalem": 1, "atom": 1, "athlon": 1, "opteron": 1, "barcelona": 1,
	"sandybridge": 2, "bulldozer": 2, "piledriver": 2, "steamroller": 2, "excavator": 2,
	"haswell": 3, "zen": 3, "skylakex": 4, "cooperlake": 4, "sapphirerapids": 4,
}

// bestCore is the strongest OpenBLAS kernel set this CPU and OS can run, judged from CPUID.
func bestCore() string {
	switch {
	case cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512DQ:
		return "SkylakeX"
	case cpu.X86.HasAVX2 && cpu.X86.HasFMA:
		return "Haswell"
	}
	return ""
}

// BetterCore returns the OpenBLAS kernel set to ask for when OpenBLAS's own CPU detection chose
// loaded and the CPU supports stronger kernels; "" when loaded is as good as this CPU allows, is
// not OpenBLAS (""), or is a name this table does not know.
func BetterCore(loaded string) string {
	want := bestCore()
	have, known := coreRank[strings.ToLower(loaded)]
	if loaded == "" || want == "" || !known || have >= coreRank[strings.ToLower(want)] {
		return ""
	}
	return want
}

// TCMallocLibrary is the file name of gperftools' tcmalloc (Debian's libtcmalloc-minimal4).
const TCMallocLibrary = "libtcmalloc_minimal.so.4"

// FindTCMalloc returns the path of TCMallocLibrary in the usual library folders, or "".
func FindTCMalloc() string {
	for _, pattern := range []string{"/usr/lib/*-linux-gnu/", "/lib/*-linux-gnu/", "/usr/lib64/", "/usr/lib/", "/usr/local/lib/"} {
		if m, _ := filepath.Glob(pattern + TCMallocLibrary); len(m) > 0 {
			return m[0]
		}
	}
	return ""
}

// TunedEnv returns the variables to add to environ so that libtorch and OpenBLAS use this CPU well,
// given the OpenBLAS core the library picked by itself (loaded, "" when not OpenBLAS) and the path
// of tcmalloc ("" when it is not installed):
//
//   - OMP_NUM_THREADS=<cores> when unset: libgomp can default to one thread in containers.
//   - OPENBLAS_CORETYPE when unset and OpenBLAS's own CPU detection chose weaker kernels than the
//     CPU supports. Virtual machines that hide the CPU model make DYNAMIC_ARCH OpenBLAS fall back to
//     Prescott (SSE3) kernels, several times slower than the AVX-512 or AVX2 ones.
//   - The allocator, unless LD_PRELOAD or MALLOC_MMAP_THRESHOLD_ is set (the user chose one).
//     libtorch frees and reallocates every activation on every step. glibc's malloc either keeps
//     freed blocks in a heap that fragments (RSS grows under serving load) or, with a fixed low
//     mmap threshold, maps and zero-faults every activation afresh (2–3× slower training, half
//     the time in the kernel); jemalloc's purging did the same in some runs and not others.
//     tcmalloc trained at full speed in every run with RSS levelling off (docs/build.md has the
//     measurements), so it is preloaded when installed; without it the low threshold keeps memory
//     flat at the cost of speed. tcmalloc's report of allocations over 1 GiB is silenced: a KV
//     cache is meant to be large.
//
// They are read when the libraries load, so they only take effect in a new process (see Reexec).
func TunedEnv(environ []string, loaded, tcmalloc string) []string {
	has := func(key string) bool {
		for _, kv := range environ {
			if strings.HasPrefix(kv, key+"=") {
				return true
			}
		}
		return false
	}
	var add []string
	if !has("OMP_NUM_THREADS") {
		add = append(add, "OMP_NUM_THREADS="+strconv.Itoa(runtime.NumCPU()))
	}
	if core := BetterCore(loaded); core != "" && !has("OPENBLAS_CORETYPE") {
		add = append(add, "OPENBLAS_CORETYPE="+core)
	}
	if !has("LD_PRELOAD") && !has("MALLOC_MMAP_THRESHOLD_") {
		if tcmalloc != "" {
			add = append(add, "LD_PRELOAD="+tcmalloc)
			if !has("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD") {
				add = append(add, "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776")
			}
		} else {
			add = append(add, "MALLOC_MMAP_THRESHOLD_=131072")
		}
	}
	return add
}

// tunedMarker carries the names of the variables Reexec added across the exec, so the new process
// can take them out of its environment again.
const tunedMarker = "SPA_TORCHRT_TUNED"

// tuned holds the variables Reexec added to start this process, set once at start-up.
var tuned []string

// Tuned returns the variables ("KEY=VALUE") that Reexec set for this process's libraries and then
// removed from its environment. Child processes (a PyTorch peer in a benchmark, a Node.js
// environment) therefore start with the user's own environment; append these to give one spa's
// tuning.
func Tuned() []string { return append([]string(nil), tuned...) }

// Reexec restarts the current program with TunedEnv's variables added, when there are any. It
// returns only if nothing needed changing, the exec failed, or this process is the restarted one;
// the restarted process removes the added variables from its environment, since the libraries
// have read them, and remembers them for Tuned. Call it first thing in main (and in TestMain),
// before any goroutine does torch work. Setting the variables yourself opts out.
func Reexec() error {
	if keys, ok := os.LookupEnv(tunedMarker); ok {
		os.Unsetenv(tunedMarker)
		for _, key := range strings.Split(keys, ",") {
			if v, ok := os.LookupEnv(key); ok && key != "" {
				tuned = append(tuned, key+"="+v)
				os.Unsetenv(key)
				// libtorch reads OMP_NUM_THREADS lazily, on each thread's first parallel op,
				// after it was removed here; without it, c10 takes half the hardware threads on
				// x86 (one on a 2-core machine). Its own setting outlives the variable.
				if n, err := strconv.Atoi(v); key == "OMP_NUM_THREADS" && err == nil {
					SetThreads(n)
				}
			}
		}
		return nil
	}
	add := TunedEnv(os.Environ(), blasCorename(), FindTCMalloc())
	if len(add) == 0 {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-exec with %v: %w", add, err)
	}
	keys := make([]string, len(add))
	for i, kv := range add {
		keys[i], _, _ = strings.Cut(kv, "=")
	}
	env := append(os.Environ(), add...)
	env = append(env, tunedMarker+"="+strings.Join(keys, ","))
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		return fmt.Errorf("re-exec %s with %v: %w", exe, add, err)
	}
	return nil
}

// RunTests is the TestMain of every package whose tests use libtorch: it tunes the runtime as the
// spa binary does (Reexec), then runs the tests and exits with their status.
//
//	func TestMain(m *testing.M) { torchrt.RunTests(m) }
func RunTests(m interface{ Run() int }) {
	if err := Reexec(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}
