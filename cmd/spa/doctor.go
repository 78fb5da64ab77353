package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/torchrt"
)

type status int

const (
	ok status = iota
	warn
	fail
)

// check is one doctor check: it returns what it found and how that stands.
type check struct {
	name string
	run  func(ctx context.Context) (status, string)
}

func newDoctorCmd() *cobra.Command {
	var store string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the runtime for real: libtorch, BLAS, threads, autograd and embedded NATS",
		Long: `Check the runtime for real, not from constants: the libtorch and BLAS this process loaded,
libtorch's thread count, one autograd step on a locked OS thread, and an embedded NATS server
with JetStream that round-trips a message. Exits non-zero naming every check that failed.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&store, "store", "", "JetStream store for the NATS check (default: a temporary directory)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "time limit for all checks")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if _, err := cf.load(); err != nil { // load applies run.threads
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		return runDoctor(ctx, cmd.OutOrStdout(), doctorChecks(store))
	}
	return cmd
}

func doctorChecks(store string) []check {
	var info torchrt.Info
	var infoErr error
	return []check{
		{"go", func(context.Context) (status, string) {
			return ok, fmt.Sprintf("%s %s/%s, %d CPUs", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
		}},
		{"libtorch", func(context.Context) (status, string) {
			info, infoErr = torchrt.ReadInfo()
			if infoErr != nil {
				return fail, infoErr.Error()
			}
			if info.Version == "" {
				return fail, "the loaded library reports no version"
			}
			detail := info.Version
			if info.Package != "" {
				detail += " (package " + info.Package
				if info.BuildVersion != info.Version {
					detail += "; its build settings say " + info.BuildVersion
				}
				detail += ")"
			}
			if info.CUDA {
				detail += ", CUDA " + info.CUDAVersion + " build"
			} else {
				detail += ", CPU only"
			}
			return ok, detail + ", " + info.Library
		}},
		{"blas", func(context.Context) (status, string) {
			if infoErr != nil {
				return fail, "skipped: libtorch did not load"
			}
			if info.MKL {
				return ok, info.BLAS
			}
			if !info.OpenBLAS {
				return fail, info.BLAS + ": install libopenblas0-openmp; other BLAS builds are about 10x slower for spa's matrix sizes"
			}
			detail := fmt.Sprintf("%s, kernels %s", strings.TrimSpace(info.BLAS), info.BLASCore)
			// The environment is the user's again after start-up (torchrt.Reexec); spa's own choice
			// is in Tuned.
			if forced := os.Getenv("OPENBLAS_CORETYPE"); forced != "" {
				detail += " (OPENBLAS_CORETYPE=" + forced + " set in the environment)"
			} else if tunedValue("OPENBLAS_CORETYPE") != "" {
				detail += " (chosen by spa over OpenBLAS's own detection)"
			} else if better := torchrt.BetterCore(info.BLASCore); better != "" {
				return warn, detail + "; these kernels are slower than this CPU allows: set OPENBLAS_CORETYPE=" + better
			}
			return ok, detail
		}},
		{"gpu", func(context.Context) (status, string) {
			switch {
			case infoErr != nil:
				return fail, "skipped: libtorch did not load"
			case !info.CUDA:
				// A CPU-only build is the default, not a fault.
				return ok, "none: " + info.GPUProblem()
			case !info.CUDALinked:
				return fail, info.GPUProblem()
			case info.GPUs == 0:
				return warn, info.GPUProblem() + ": learner.device cuda will fail"
			}
			return ok, gpuNames(info.GPUs)
		}},
		{"malloc", func(context.Context) (status, string) {
			if infoErr != nil {
				return fail, "skipped: libtorch did not load"
			}
			switch {
			case info.Allocator != "glibc":
				how := "preloaded by spa"
				if tunedValue("LD_PRELOAD") == "" {
					how = "from LD_PRELOAD"
				}
				return ok, info.Allocator + " (" + how + ")"
			case os.Getenv("MALLOC_MMAP_THRESHOLD_") != "" || os.Getenv("LD_PRELOAD") != "":
				return ok, "glibc, as the environment chose (docs/build.md: tcmalloc trains 2-3x faster with flat memory)"
			case torchrt.FindTCMalloc() == "":
				return warn, "glibc with a fixed mmap threshold: flat memory, but training is 2-3x slower than with tcmalloc; install libtcmalloc-minimal4"
			}
			return warn, "glibc, although " + torchrt.FindTCMalloc() + " is installed"
		}},
		{"threads", func(context.Context) (status, string) {
			if infoErr != nil {
				return fail, "skipped: libtorch did not load"
			}
			threads := envOr("OMP_NUM_THREADS", "unset")
			if v := tunedValue("OMP_NUM_THREADS"); v != "" {
				threads = v + " set by spa"
			}
			detail := fmt.Sprintf("%d intra-op threads (OMP_NUM_THREADS=%s, %d CPUs)", info.Threads, threads, runtime.NumCPU())
			switch {
			case info.Threads < 1:
				return fail, detail
			case info.Threads > runtime.NumCPU():
				return warn, detail + ": more threads than CPUs oversubscribes the machine"
			}
			return ok, detail
		}},
		{"autograd", func(ctx context.Context) (status, string) {
			ex := torchrt.NewExecutor()
			defer ex.Close()
			if err := torchrt.CheckAutograd(ctx, ex); err != nil {
				return fail, err.Error()
			}
			return ok, "d/dx sum(x²) = 2x on a locked OS thread"
		}},
		{"nats", func(ctx context.Context) (status, string) {
			dir := store
			if dir == "" {
				tmp, err := os.MkdirTemp("", "spa-doctor-nats-")
				if err != nil {
					return fail, err.Error()
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			start := time.Now()
			srv, err := bus.StartEmbedded(bus.EmbeddedOptions{StoreDir: dir})
			if err != nil {
				return fail, err.Error()
			}
			defer srv.Shutdown()
			nc, err := srv.Connect()
			if err != nil {
				return fail, err.Error()
			}
			defer nc.Close()
			if err := bus.CheckRoundTrip(ctx, nc); err != nil {
				return fail, err.Error()
			}
			return ok, fmt.Sprintf("embedded nats-server %s with JetStream: request/reply and a file-stored message in %s",
				srv.Version(), time.Since(start).Round(time.Millisecond))
		}},
	}
}

func runDoctor(ctx context.Context, out io.Writer, checks []check) error {
	var failed []string
	for _, c := range checks {
		st, detail := c.run(ctx)
		label := map[status]string{ok: "ok", warn: "WARN", fail: "FAIL"}[st]
		fmt.Fprintf(out, "%-9s %-4s  %s\n", c.name, label, detail)
		if st == fail {
			failed = append(failed, c.name+": "+detail)
		}
	}
	if len(failed) > 0 {
		return &exitError{code: 1, err: fmt.Errorf("doctor: %d of %d checks failed:\n%s", len(failed), len(checks), strings.Join(failed, "\n"))}
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// tunedValue is the value torchrt.Reexec gave key for this process's libraries, or "".
func tunedValue(key string) string {
	for _, kv := range torchrt.Tuned() {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// gpuNames describes n CUDA devices, with their names and memory from nvidia-smi when it is
// installed (libtorch's C++ API has no device-properties call outside the CUDA headers).
func gpuNames(n int) string {
	detail := fmt.Sprintf("%d CUDA device(s)", n)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader").Output()
	if err != nil {
		return detail
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, "cuda:"+line)
		}
	}
	return detail + ": " + strings.Join(names, "; ")
}
