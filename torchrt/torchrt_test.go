package torchrt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { RunTests(m) }

func TestAutogradStepOnLockedThread(t *testing.T) {
	ex := NewExecutor()
	defer ex.Close()
	if err := CheckAutograd(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
}

func TestReadInfoDescribesLoadedLibraries(t *testing.T) {
	info, err := ReadInfo()
	if err != nil {
		t.Fatal(err)
	}
	if info.BuildVersion == "" || info.Version == "" {
		t.Errorf("no libtorch version: %+v", info)
	}
	if !strings.Contains(info.Library, "libtorch_cpu") {
		t.Errorf("Library = %q, want the loaded libtorch_cpu", info.Library)
	}
	if info.Threads < 1 {
		t.Errorf("Threads = %d", info.Threads)
	}
	if info.BLAS == "" {
		t.Error("BLAS is empty")
	}
	t.Logf("%+v", info)
}

func TestTunedEnv(t *testing.T) {
	const (
		mmap    = "MALLOC_MMAP_THRESHOLD_=131072"
		tc      = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
		preload = "LD_PRELOAD=" + tc
		quiet   = "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1099511627776"
	)
	want := bestCore()
	cores := fmt.Sprint(runtime.NumCPU())
	for _, tc := range []struct {
		name     string
		environ  []string
		loaded   string
		tcmalloc string
		want     []string
	}{
		{"nothing set, misdetected core", nil, "Prescott", tc, nonEmpty("OMP_NUM_THREADS="+cores, prefixed("OPENBLAS_CORETYPE=", want), preload, quiet)},
		{"user chose the core", []string{"OPENBLAS_CORETYPE=Haswell"}, "Prescott", tc, []string{"OMP_NUM_THREADS=" + cores, preload, quiet}},
		{"user chose threads", []string{"OMP_NUM_THREADS=1"}, "", tc, []string{preload, quiet}},
		{"user preloads an allocator", []string{"OMP_NUM_THREADS=1", "LD_PRELOAD=/x/libjemalloc.so.2"}, "", tc, nil},
		{"user chose the malloc threshold", []string{"OMP_NUM_THREADS=1", "MALLOC_MMAP_THRESHOLD_=1"}, "", tc, nil},
		{"user chose tcmalloc's report threshold", []string{"OMP_NUM_THREADS=1", "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=1"}, "", tc, []string{preload}},
		{"no tcmalloc: glibc with a fixed threshold", []string{"OMP_NUM_THREADS=1"}, "", "", []string{mmap}},
		{"unknown core is left alone", []string{"OMP_NUM_THREADS=2", mmap}, "FutureLake", tc, nil},
		{"correct detection is left alone", []string{"OMP_NUM_THREADS=2", mmap}, "SapphireRapids", tc, nil},
	} {
		got := TunedEnv(tc.environ, tc.loaded, tc.tcmalloc)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s: TunedEnv = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestReexecLeavesUserEnvironment checks what this test binary's own start-up did: the variables
// Reexec added reached the libraries (tcmalloc serves malloc where it is installed) and were then
// taken out of the environment, so child processes see the user's environment.
func TestReexecLeavesUserEnvironment(t *testing.T) {
	if os.Getenv(tunedMarker) != "" {
		t.Fatalf("%s is still set", tunedMarker)
	}
	// Reexec adds only variables the user did not set, so none of them may remain.
	for _, kv := range Tuned() {
		key, _, _ := strings.Cut(kv, "=")
		if v, ok := os.LookupEnv(key); ok {
			t.Errorf("%s=%s is still in the environment after start-up", key, v)
		}
	}
	info, err := ReadInfo()
	if err != nil {
		t.Fatal(err)
	}
	_, userPreload := os.LookupEnv("LD_PRELOAD")
	_, userThreshold := os.LookupEnv("MALLOC_MMAP_THRESHOLD_")
	switch {
	case userPreload || userThreshold:
		t.Logf("allocator chosen by the environment: %s", info.Allocator)
	case FindTCMalloc() != "":
		if info.Allocator != "tcmalloc" {
			t.Errorf("allocator %q with %s installed; tuned %v", info.Allocator, FindTCMalloc(), Tuned())
		}
	default:
		t.Logf("%s is not installed; allocator %s", TCMallocLibrary, info.Allocator)
	}
}

func prefixed(prefix, v string) string {
	if v == "" {
		return ""
	}
	return prefix + v
}

func nonEmpty(vs ...string) []string {
	var out []string
	for _, v := range vs {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

func TestExecutorRunsOnOneThreadAndRecoversPanics(t *testing.T) {
	ex := NewExecutor()
	if err := ex.Do(context.Background(), func() error { panic("boom") }); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("panic not turned into an error: %v", err)
	}
	// A call still works after a panic.
	if err := ex.Do(context.Background(), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	// A call that cannot start before its context ends returns the context's error.
	release, busy := make(chan struct{}), make(chan struct{})
	go ex.Do(context.Background(), func() error { close(busy); <-release; return nil })
	<-busy
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ex.Do(ctx, func() error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("busy executor: err = %v, want deadline exceeded", err)
	}
	close(release)
	ex.Close()
	if err := ex.Do(context.Background(), func() error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: err = %v, want ErrClosed", err)
	}
}

func TestUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{"1.13.1+dfsg-4": "1.13.1", "2:2.1.0-1": "2.1.0", "weird": ""} {
		if got := upstreamVersion(in); got != want {
			t.Errorf("upstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFromBuildSettings(t *testing.T) {
	// The build-settings lines that at::show_config() printed for Debian's libtorch and for
	// PyTorch's official 2.1.2 wheel (CUDA 12.1, MKL).
	for _, tc := range []struct {
		file string
		want Info
	}{
		{"show_config-debian-1.13.1.txt", Info{BuildVersion: "1.13.0"}},
		{"show_config-pypi-2.1.2-cu121.txt", Info{BuildVersion: "2.1.2", CUDA: true, CUDAVersion: "12.1", MKL: true}},
	} {
		data, err := os.ReadFile("testdata/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		if got := fromBuildSettings(string(data)); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.file, got, tc.want)
		}
	}
}

func TestGPUProblem(t *testing.T) {
	for _, tc := range []struct {
		info Info
		want string
	}{
		{Info{}, "CPU-only"},
		{Info{CUDA: true, CUDAVersion: "12.1"}, "CUDA 12.1 but its CUDA library is not linked"},
		{Info{CUDA: true, CUDAVersion: "12.1", CUDALinked: true}, "CUDA 12.1 but sees no GPU"},
		{Info{CUDA: true, CUDAVersion: "12.1", CUDALinked: true, GPUs: 1}, ""},
	} {
		got := tc.info.GPUProblem()
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.info, got, tc.want)
		}
	}
}
