// Command spa trains LLM agents with the SPA recipe: self-play world-model fine-tuning, then PPO.
// See the README for the quick start and docs/ for the details.
package main

import (
	"fmt"
	"os"

	"github.com/spa-rl/spa/torchrt"
)

func main() {
	// libtorch and OpenBLAS read their thread and CPU settings when they load, so tune them by
	// restarting once with the right environment before anything else runs.
	if err := torchrt.Reexec(); err != nil {
		fmt.Fprintln(os.Stderr, "spa: warning:", err)
	}
	os.Exit(execute(os.Args[1:], os.Stdout, os.Stderr))
}
