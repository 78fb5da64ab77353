package learner

import "testing"

func TestSplitValidation(t *testing.T) {
	for _, tc := range []struct {
		n     int
		share float64
		val   int
	}{{100, 0.05, 5}, {140, 0.05, 7}, {19, 0.05, 0}, {20, 0.05, 1}, {1, 0.5, 0}, {10, 0, 0}, {4, 1, 0}} {
		seqs := make([]Sequence, tc.n)
		for i := range seqs {
			seqs[i].IDs = []int{i}
		}
		train, val := SplitValidation(seqs, tc.share)
		if len(val) != tc.val || len(train)+len(val) != tc.n || (len(val) > 0 && val[0].IDs[0] != len(train)) {
			t.Errorf("%d × %v: %d train, %d val; want %d val from the tail", tc.n, tc.share, len(train), len(val), tc.val)
		}
	}
}
