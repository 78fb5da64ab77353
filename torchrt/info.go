package torchrt

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Info describes the libtorch and BLAS that this process has loaded.
type Info struct {
	// Version is libtorch's version: the upstream version of the distribution package that owns the
	// loaded library when there is one (Debian's 1.13.1 reports itself as 1.13.0 in its build
	// settings), else BuildVersion.
	Version string
	// BuildVersion is TORCH_VERSION from the library's own build settings.
	BuildVersion string
	// Library is the resolved path of the loaded libtorch_cpu.
	Library string
	// Package is "name version" of the distribution package that owns Library, if any.
	Package string
	// CUDA reports whether the library was built with CUDA.
	CUDA bool
	// CUDAVersion is the CUDA toolkit the library was built against ("12.1"), when it was.
	CUDAVersion string
	// CUDALinked reports whether libtorch's CUDA library is loaded, which is what makes CUDA
	// available: a binary can load a CUDA build's libtorch_cpu without it (see cuda.go).
	CUDALinked bool
	// GPUs is the number of CUDA devices the library sees: 0 for a CPU-only build, and for a CUDA
	// build on a machine without a driver or with CUDA_VISIBLE_DEVICES empty.
	GPUs int
	// BLAS names the BLAS implementation in use ("OpenBLAS 0.3.21 ...", "MKL (built into
	// libtorch)" or the loaded library's path).
	BLAS string
	// BLASLibrary is the resolved path of the loaded BLAS.
	BLASLibrary string
	// BLASCore is the kernel set OpenBLAS chose for this CPU ("" for other BLAS).
	BLASCore string
	// OpenBLAS reports whether the BLAS in use is OpenBLAS.
	OpenBLAS bool
	// MKL reports whether libtorch was built with Intel MKL as its BLAS, as PyTorch's official
	// x86 builds are (the pip wheels and the libtorch zips).
	MKL bool
	// Threads is the number of intra-op threads libtorch uses.
	Threads int
	// Allocator is the malloc that libtorch's allocations go through: "tcmalloc", "jemalloc" or
	// "glibc".
	Allocator string
}

var (
	buildVersionRE = regexp.MustCompile(`TORCH_VERSION=([0-9][^,\s]*)`)
	cudaVersionRE  = regexp.MustCompile(`CUDA_VERSION=([0-9][^,\s]*)`)
	blasInfoRE     = regexp.MustCompile(`BLAS_INFO=(\w+)`)
)

// ReadInfo inspects the loaded libraries. It reads /proc/self/maps and asks dpkg which package owns
// libtorch, so it works without headers or a Python install.
func ReadInfo() (Info, error) {
	config := torchConfig()
	if config == "" {
		return Info{}, fmt.Errorf("libtorch did not report its build configuration")
	}
	info := fromBuildSettings(config)
	if info.CUDA {
		info.CUDALinked = cudaRuntime() > 0
		info.GPUs = cudaDevices()
	}
	libs, err := loadedLibraries()
	if err != nil {
		return info, err
	}
	for _, lib := range libs {
		base := filepath.Base(lib)
		switch {
		case info.Library == "" && strings.HasPrefix(base, "libtorch_cpu"):
			info.Library = lib
		case info.BLASLibrary == "" && (strings.Contains(base, "openblas") || strings.HasPrefix(base, "libblas")):
			info.BLASLibrary = lib
		case strings.Contains(base, "openblas"):
			// Debian's libblas.so.3 alternative for OpenBLAS sits beside the real libopenblas;
			// the latter names the build, so prefer it.
			info.BLASLibrary = lib
		}
	}
	info.Version = info.BuildVersion
	if info.Library != "" {
		if name, version := owningPackage(info.Library); name != "" {
			info.Package = name + " " + version
			if upstream := upstreamVersion(version); upstream != "" {
				info.Version = upstream
			}
		}
	}
	if cfg := blasConfig(); cfg != "" {
		info.OpenBLAS = true
		info.BLAS = cfg
		info.BLASCore = blasCorename()
	} else if info.MKL {
		info.BLAS = "MKL (built into libtorch)"
	} else if info.BLASLibrary != "" {
		info.BLAS = "non-OpenBLAS library " + info.BLASLibrary
	} else {
		info.BLAS = "none found among the loaded libraries"
	}
	info.Threads = getThreads()
	info.Allocator = mallocName()
	return info, nil
}

// GPUProblem says why this process cannot use a GPU, or returns "" when it can: the library is
// CPU-only, its CUDA library is not linked into the binary, or it sees no device. spa doctor and
// every --device cuda refusal give the same reason.
func (i Info) GPUProblem() string {
	switch {
	case !i.CUDA:
		return "this libtorch is CPU-only; build spa against a CUDA libtorch (make build LIBTORCH=DIR, docs/build.md)"
	case !i.CUDALinked:
		return "this libtorch has CUDA " + i.CUDAVersion + " but its CUDA library is not linked into this binary (make build LIBTORCH=DIR, docs/build.md)"
	case i.GPUs == 0:
		return "this libtorch has CUDA " + i.CUDAVersion + " but sees no GPU (no NVIDIA driver, or CUDA_VISIBLE_DEVICES hides them)"
	}
	return ""
}

// fromBuildSettings reads what at::show_config() says about the build: its version, CUDA and
// whether its BLAS is MKL (which is linked into libtorch_cpu, so no loaded library shows it).
func fromBuildSettings(config string) Info {
	var info Info
	if m := buildVersionRE.FindStringSubmatch(config); m != nil {
		info.BuildVersion = m[1]
	}
	info.CUDA = strings.Contains(config, "USE_CUDA=ON") || strings.Contains(config, "USE_CUDA=1")
	if m := cudaVersionRE.FindStringSubmatch(config); m != nil && info.CUDA {
		info.CUDAVersion = m[1]
	}
	if m := blasInfoRE.FindStringSubmatch(config); m != nil && m[1] == "mkl" {
		info.MKL = true
	}
	return info
}

// SetThreads sets libtorch's intra-op thread count. Call it before torch work starts; the
// OMP_NUM_THREADS environment variable (see TunedEnv) is the more reliable knob.
func SetThreads(n int) {
	if n > 0 {
		setThreads(n)
	}
}

func loadedLibraries() ([]string, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, fmt.Errorf("list loaded libraries: %w", err)
	}
	defer f.Close()
	seen := map[string]bool{}
	var libs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") || !strings.Contains(fields[5], ".so") {
			continue
		}
		path := fields[5]
		if resolved, err := filepath.EvalSymlinks(path); err == nil {
			path = resolved
		}
		if !seen[path] {
			seen[path] = true
			libs = append(libs, path)
		}
	}
	return libs, sc.Err()
}

// owningPackage asks dpkg which package installed path; it returns empty strings off Debian.
func owningPackage(path string) (name, version string) {
	out, err := exec.Command("dpkg-query", "-S", path).Output()
	if err != nil {
		// dpkg records the unresolved /usr/lib path on merged-/usr systems; try the other spelling.
		alt := strings.Replace(path, "/usr/lib/", "/lib/", 1)
		if alt == path {
			return "", ""
		}
		if out, err = exec.Command("dpkg-query", "-S", alt).Output(); err != nil {
			return "", ""
		}
	}
	pkg, _, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
	if !ok {
		return "", ""
	}
	v, err := exec.Command("dpkg-query", "-W", "-f=${Version}", pkg).Output()
	if err != nil {
		return pkg, ""
	}
	return pkg, strings.TrimSpace(string(v))
}

var upstreamRE = regexp.MustCompile(`^(?:\d+:)?(\d+(?:\.\d+)+)`)

// upstreamVersion extracts "1.13.1" from a Debian version such as "1.13.1+dfsg-4".
func upstreamVersion(debian string) string {
	if m := upstreamRE.FindStringSubmatch(debian); m != nil {
		return m[1]
	}
	return ""
}
