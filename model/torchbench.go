package model

import _ "embed"

// TorchBenchScript is the same decoder in PyTorch eager (model/bench_torch.py), run by
// 'spa bench model' beside the Go measurement.
//
//go:embed bench_torch.py
var TorchBenchScript string
