package bus

import (
	"encoding/json"
	"fmt"
	"time"
)

// SyntheticTrajectory builds a well-formed trajectory whose encoding is about size bytes, for
// benchmarks and tests of the stream. Its content is deterministic in id.
func SyntheticTrajectory(run, id string, size int) *Trajectory {
	t := &Trajectory{
		Schema: TrajectorySchema, ID: id, Run: run, Env: "sokoban", Variant: "6x6-1box",
		Seed: 7, Group: run + "-g0", PolicyVersion: 3, Model: "spa-v3", Mode: "world_model", Render: "coords",
		Success: true, Reward: 10.8,
		Timing: Timing{Started: time.Unix(1_700_000_000, 0).UTC(), Finished: time.Unix(1_700_000_003, 0).UTC(), GenerateSeconds: 2.5, EnvSeconds: 0.001},
	}
	turn := Turn{
		Messages: []Message{{Role: "user", Content: "Turn 1:\nState:\n######\n#_P__#\n#_X_O#\n######"}, {Role: "assistant", Content: "<think>push right</think><answer>Right</answer>"}},
		State:    "######\n#_P__#\n#_X_O#\n######", Reward: 1, Actions: []string{"Right"}, Valid: []bool{true}, FormatOK: true,
	}
	t.Turns = []Turn{turn}
	// Grow the response until the encoding reaches size: estimate the bytes per token from a
	// first fill, then refill once with the corrected count.
	base, _ := json.Marshal(t)
	fill := func(n int) {
		n = max(n, 1)
		turn.PromptIDs = []int32{151644, 872, 198}
		turn.ResponseIDs = make([]int32, n)
		turn.Logprobs = make([]float32, n)
		turn.LossMask = make([]int8, n)
		for i := range n {
			turn.ResponseIDs[i] = int32(10000 + (i*7919)%90000)
			turn.Logprobs[i] = -float32(i%9) / 8
			turn.LossMask[i] = 1
		}
		t.Turns[0] = turn
	}
	n := max((size-len(base))/12, 1)
	fill(n)
	full, _ := json.Marshal(t)
	perToken := float64(len(full)-len(base)) / float64(n)
	fill(int(float64(size-len(base)) / perToken))
	return t
}

// TrajectoryID formats the id of the i-th trajectory a worker produces, for tests and benchmarks.
func TrajectoryID(worker string, i int) string { return fmt.Sprintf("%s-%08d", worker, i) }
