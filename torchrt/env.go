package torchrt

import (
	"fmt"
	"os"
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

// TunedEnv returns the variables to add to environ so that libtorch and OpenBLAS use this CPU well,
// given the OpenBLAS core the library picked by itself (loaded, "" when not OpenBLAS):
//
//   - OMP_NUM_THREADS=<cores> when unset: libgomp can default to one thread in containers.
//   - OPENBLAS_CORETYPE when unset and OpenBLAS's own CPU detection chose weaker kernels than the
//     CPU supports. Virtual machines that hide the CPU model make DYNAMIC_ARCH OpenBLAS fall back to
//     Prescott (SSE3) kernels, several times slower than the AVX-512 or AVX2 ones.
//   - MALLOC_MMAP_THRESHOLD_=131072 when unset. glibc raises its mmap threshold each time a large
//     block is freed, so libtorch's freed activations stay in the heap and fragment it. Fixing the
//     threshold more than halved the RSS growth of `spa bench soak` (2.9 → 1.2 MiB/s; the
//     rest were gotch leaks, which tools/gotchpatch fixes).
//
// They are read when the libraries load, so they only take effect in a new process (see Reexec).
func TunedEnv(environ []string, loaded string) []string {
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
	if !has("OPENBLAS_CORETYPE") && loaded != "" {
		want := bestCore()
		have, known := coreRank[strings.ToLower(loaded)]
		if want != "" && known && have < coreRank[strings.ToLower(want)] {
			add = append(add, "OPENBLAS_CORETYPE="+want)
		}
	}
	if !has("MALLOC_MMAP_THRESHOLD_") {
		add = append(add, "MALLOC_MMAP_THRESHOLD_=131072")
	}
	return add
}

// Reexec restarts the current program with TunedEnv's variables added, when there are any. It
// returns only if nothing needed changing or the exec failed. Call it first thing in main (and in
// TestMain), before any goroutine does torch work. Setting the variables yourself opts out.
func Reexec() error {
	add := TunedEnv(os.Environ(), blasCorename())
	if len(add) == 0 {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("re-exec with %v: %w", add, err)
	}
	if err := syscall.Exec(exe, os.Args, append(os.Environ(), add...)); err != nil {
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
