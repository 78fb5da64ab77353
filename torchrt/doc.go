// Package torchrt holds what every libtorch user in spa shares: facts about the libtorch and BLAS
// this process actually loaded, the environment they need to run well, and the Executor that keeps
// torch work on one locked OS thread.
//
// libtorch keeps grad mode (and other state) per OS thread, while Go moves goroutines between
// threads freely; every goroutine that touches tensors must therefore be locked to its thread. The
// Executor is that goroutine.
package torchrt
