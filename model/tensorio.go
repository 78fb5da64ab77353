package model

import (
	"unsafe"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// gotch's OfSlice and CopyData check Go slices element by element through reflection, which cost
// more than the model for the masks and logits of a decoding step (17% of serving time). These
// helpers copy through the tensor's data pointer instead. They work on contiguous CPU tensors;
// callers move to and from other devices.

// Float32Tensor makes a CPU float tensor of the given shape holding data.
func Float32Tensor(data []float32, shape ...int64) *ts.Tensor {
	t := ts.MustEmpty(shape, gotch.Float, gotch.CPU)
	if len(data) > 0 {
		copy(unsafe.Slice((*float32)(t.MustDataPtr()), len(data)), data)
	}
	return t
}

// Int64Tensor makes a CPU int64 tensor of the given shape holding data.
func Int64Tensor(data []int64, shape ...int64) *ts.Tensor {
	t := ts.MustEmpty(shape, gotch.Int64, gotch.CPU)
	if len(data) > 0 {
		copy(unsafe.Slice((*int64)(t.MustDataPtr()), len(data)), data)
	}
	return t
}

// Float32s copies a tensor's values out as float32 (converting, moving to the CPU and making it
// contiguous as needed).
func Float32s(t *ts.Tensor) []float32 {
	c := t.MustDetach(false).MustTotype(gotch.Float, true).MustTo(gotch.CPU, true).MustContiguous(true)
	defer c.MustDrop()
	n := int(c.Numel())
	out := make([]float32, n)
	if n > 0 {
		copy(out, unsafe.Slice((*float32)(c.MustDataPtr()), n))
	}
	return out
}
