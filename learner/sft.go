package learner

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/rollout"
	"github.com/spa-rl/spa/worldmodel"
)

// SFTExample is one line of the world-model SFT data: a whole conversation whose assistant turns
// are trained on, with where it came from.
type SFTExample = worldmodel.Example

// ReadSFTExamples reads JSON lines of SFTExample; a bad line is an error naming its number.
func ReadSFTExamples(path string) ([]SFTExample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sft data: %w", err)
	}
	defer f.Close()
	var out []SFTExample
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var ex SFTExample
		if err := json.Unmarshal(sc.Bytes(), &ex); err != nil {
			return nil, fmt.Errorf("sft data %s:%d: %w", path, line, err)
		}
		if len(ex.Messages) == 0 {
			return nil, fmt.Errorf("sft data %s:%d: no messages", path, line)
		}
		out = append(out, ex)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("sft data %s: %w", path, err)
	}
	return out, nil
}

// WriteSFTExamples writes examples as JSON lines.
func WriteSFTExamples(path string, exs []SFTExample) error {
	var b strings.Builder
	for _, ex := range exs {
		data, err := json.Marshal(ex)
		if err != nil {
			return err
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	return writeAtomic(path, []byte(b.String()))
}

// SFTSequences tokenises examples the way token-mode episodes are laid out. Every assistant turn
// of a conversation is trained in one sequence: with a causal model that is the same set of
// (context, target) pairs as one sample per assistant turn with its full context (the paper's
// layout), at a fraction of the compute. Sequences longer than maxLen are dropped and counted.
// With maskState, the bodies of <observation> and <prediction> are left out of the loss (the
// public code's variant, the paper's failed "masking" ablation); the tags themselves are kept.
func SFTSequences(tokens *rollout.Tokens, exs []SFTExample, maxLen int, maskState bool) (seqs []Sequence, dropped int, err error) {
	for i, ex := range exs {
		msgs := ex.Messages
		ids, assistant, err := tokens.Conversation(msgs)
		if err != nil {
			return nil, 0, fmt.Errorf("sft example %d: %w", i, err)
		}
		if maskState {
			assistant = maskStateTokens(tokens, msgs, ids, assistant)
		}
		if maxLen > 0 && len(ids) > maxLen {
			dropped++
			continue
		}
		seqs = append(seqs, Sequence{IDs: ids, Train: assistant})
	}
	return seqs, dropped, nil
}

// SplitValidation holds out the last share of seqs (rounded down) for validation, when that is at
// least one sequence and leaves at least one to train on; otherwise val is empty.
func SplitValidation(seqs []Sequence, share float64) (train, val []Sequence) {
	n := int(share*float64(len(seqs)) + 1e-9) // 0.05 × 140 is 7, not 6.999…
	if n <= 0 || n >= len(seqs) {
		return seqs, nil
	}
	return seqs[:len(seqs)-n], seqs[len(seqs)-n:]
}

// maskStateTokens clears the train flag on the tokens of observation and prediction bodies. Each
// assistant message is re-encoded piecewise (text outside the bodies, then each body), which is
// where its tokens' boundaries lie: the tags are single tokens in spa's tokenizer, and for other
// tokenizers a body boundary may fall inside a token, which is then kept in the loss.
func maskStateTokens(tokens *rollout.Tokens, msgs []chat.Message, ids []int, train []bool) []bool {
	out := append([]bool(nil), train...)
	// Walk the assistant runs of train in order, pairing each with its message.
	var contents []string
	for _, m := range msgs {
		if m.Role == "assistant" {
			contents = append(contents, m.Content)
		}
	}
	run := 0
	for i := 0; i < len(out); {
		if !out[i] {
			i++
			continue
		}
		j := i
		for j < len(out) && out[j] {
			j++
		}
		if run < len(contents) {
			pos := i
			for _, piece := range worldmodel.StateSpans(contents[run]) {
				enc := tokens.Tok.Encode(piece.Text)
				n := len(enc)
				if piece.State && slices.Equal(enc, ids[pos:min(pos+n, j)]) {
					for k := pos; k < pos+n && k < j; k++ {
						out[k] = false
					}
				}
				pos += n
			}
		}
		run++
		i = j
	}
	return out
}

// SFTOptions configure world-model fine-tuning (docs/method.md: lr 1e-4, AdamW (0.9, 0.95), wd 0.01,
// 10% warmup then cosine, grad clip 1.0, batch 16, 5 epochs).
type SFTOptions struct {
	LR, Beta1, Beta2, WeightDecay, GradClip, WarmupRatio float64
	Epochs, BatchSize                                    int
	// MicroBatch is how many sequences one forward pass holds (gradient accumulation); zero
	// means the whole batch.
	MicroBatch int
	// Seed orders the data: epoch e visits a permutation drawn from (Seed, e).
	Seed uint64
	// Checkpoints, when set, receives a checkpoint after every epoch (and every SaveEvery steps,
	// and when the context ends), and is where Resume looks.
	Checkpoints *Checkpointer
	SaveEvery   int
	// Resume continues from the newest checkpoint in Checkpoints.Dir, if there is one.
	Resume bool
	// StopAfter ends training after this many steps (0: run every epoch), for tests and smoke runs.
	StopAfter int
	// Progress is called after every step.
	Progress func(SFTProgress)
}

// SFTProgress is one step's numbers.
type SFTProgress struct {
	Step, Steps, Epoch int
	Loss, GradNorm, LR float64
	// ValLoss is set at the end of each epoch (NaN before the first, or without validation data).
	ValLoss float64
	Tokens  int64
	Skipped int
	Elapsed time.Duration
}

// SFTResult summarises a finished (or stopped) run.
type SFTResult struct {
	Steps         int
	TrainLoss     float64 // mean over the last epoch's steps
	ValLoss       float64
	Tokens        int64
	Skipped       int
	TokensPerSec  float64
	Checkpoint    string
	ResumedAtStep int
}

// TrainSFT fine-tunes m on train with the token-mean cross-entropy of the trained tokens, reports
// validation loss on val after each epoch, and checkpoints. It must run on a locked OS thread.
func TrainSFT(ctx context.Context, m *model.Model, train, val []Sequence, o SFTOptions) (SFTResult, error) {
	if len(train) == 0 {
		return SFTResult{}, errors.New("sft: no training sequences")
	}
	if o.BatchSize <= 0 || o.Epochs <= 0 || o.LR <= 0 {
		return SFTResult{}, fmt.Errorf("sft: batch size %d, epochs %d and lr %g must be positive", o.BatchSize, o.Epochs, o.LR)
	}
	perEpoch := (len(train) + o.BatchSize - 1) / o.BatchSize
	total := perEpoch * o.Epochs
	opt := NewAdamW(m.TrainableVarStore(), o.Beta1, o.Beta2, 1e-8, o.WeightDecay)
	defer opt.Close()
	res := SFTResult{ValLoss: math.NaN()}
	step := 0
	if o.Resume && o.Checkpoints != nil {
		ckpt, st, err := Latest(o.Checkpoints.Dir)
		switch {
		case IsNotExist(err):
		case err != nil:
			return res, err
		default:
			if st.Stage != "sft" {
				return res, fmt.Errorf("sft: resume: %s is a %s checkpoint", ckpt, st.Stage)
			}
			if err := restoreWeights(m, ckpt); err != nil {
				return res, err
			}
			if err := LoadOptimizer(ckpt, opt, st.ActorOptStep); err != nil {
				return res, err
			}
			step, o.Seed = st.Step, st.Seed
			res.ResumedAtStep = step
		}
	}
	save := func(name string) error {
		if o.Checkpoints == nil {
			return nil
		}
		saved, err := o.Checkpoints.Save(name, m, nil, opt, nil, TrainerState{Stage: "sft", Step: step, Seed: o.Seed, ActorOptStep: opt.Step, Finished: step == total})
		res.Checkpoint = saved.Dir
		return err
	}
	started := time.Now()
	var epochLoss float64
	var epochSteps int
	for step < total {
		if o.StopAfter > 0 && step >= o.StopAfter {
			break
		}
		if ctx.Err() != nil {
			if err := save(fmt.Sprintf("step-%06d", step)); err != nil {
				return res, err
			}
			return res, ctx.Err()
		}
		epoch, b := step/perEpoch, step%perEpoch
		order := permutation(len(train), o.Seed, uint64(epoch))
		idx := order[b*o.BatchSize : min(len(train), (b+1)*o.BatchSize)]
		batch := make([]Sequence, len(idx))
		for i, j := range idx {
			batch[i] = train[j]
		}
		lr := WarmupCosine(step, total, o.WarmupRatio, o.LR, 0)
		loss, norm, applied, tokens, err := sftStep(m, opt, batch, o.MicroBatch, lr, o.GradClip)
		if err != nil {
			return res, fmt.Errorf("sft step %d: %w", step, err)
		}
		step++
		res.Steps = step
		res.Tokens += tokens
		if !applied {
			res.Skipped++
		}
		epochLoss += loss
		epochSteps++
		p := SFTProgress{Step: step, Steps: total, Epoch: epoch + 1, Loss: loss, GradNorm: norm, LR: lr, ValLoss: res.ValLoss, Tokens: res.Tokens, Skipped: res.Skipped, Elapsed: time.Since(started)}
		endOfEpoch := step%perEpoch == 0
		if endOfEpoch {
			res.TrainLoss = epochLoss / float64(epochSteps)
			epochLoss, epochSteps = 0, 0
			if len(val) > 0 {
				if res.ValLoss, err = EvalLoss(m, val, o.MicroBatch); err != nil {
					return res, err
				}
				p.ValLoss = res.ValLoss
			}
		}
		if o.Progress != nil {
			o.Progress(p)
		}
		if endOfEpoch || (o.SaveEvery > 0 && step%o.SaveEvery == 0) {
			if err := save(fmt.Sprintf("step-%06d", step)); err != nil {
				return res, err
			}
		}
	}
	if epochSteps > 0 {
		res.TrainLoss = epochLoss / float64(epochSteps)
	}
	if secs := time.Since(started).Seconds(); secs > 0 {
		res.TokensPerSec = float64(res.Tokens) / secs
	}
	return res, nil
}

// sftStep accumulates the batch's gradient over micro-batches, each weighted by its share of
// the batch's trained tokens (so the whole is a token mean), and applies one update.
func sftStep(m *model.Model, opt *AdamW, batch []Sequence, micro int, lr, clip float64) (loss, norm float64, applied bool, tokens int64, err error) {
	total := 0
	for _, s := range batch {
		total += len(s.Targets())
	}
	batch = byLength(batch, micro)
	opt.ZeroGrad()
	for _, c := range chunks(len(batch), micro) {
		p, err := pack(batch[c[0]:c[1]], m.Device())
		if err != nil {
			return 0, 0, false, 0, err
		}
		logits, err := p.logits(m, 1)
		if err != nil {
			p.drop()
			return 0, 0, false, 0, err
		}
		ones := ts.MustOnes([]int64{int64(p.n)}, gotch.Float, m.Device())
		l := SFTLoss(logits, p.targets, ones)
		weighted := l.MustMulScalar(ts.FloatScalar(float64(p.n)/float64(total)), false)
		weighted.MustBackward()
		loss += l.Float64Values()[0] * float64(p.n) / float64(total)
		tokens += int64(p.n)
		for _, t := range []*ts.Tensor{logits, ones, l, weighted} {
			t.MustDrop()
		}
		p.drop()
	}
	norm, applied = opt.Update(lr, clip)
	return loss, norm, applied, tokens, nil
}

// byLength returns seqs sorted longest first when they will be cut into micro-batches, so each
// forward pass pads to a length near its own sequences' rather than the batch's longest. The loss
// is a token-weighted sum over micro-batches, so the order does not change it (beyond float
// rounding). seqs itself is left as it is.
func byLength(seqs []Sequence, micro int) []Sequence {
	if micro <= 0 || micro >= len(seqs) {
		return seqs
	}
	sorted := slices.Clone(seqs)
	slices.SortStableFunc(sorted, func(a, b Sequence) int { return len(b.IDs) - len(a.IDs) })
	return sorted
}

// EvalLoss is the token-mean cross-entropy of seqs' trained tokens under m, without gradients.
func EvalLoss(m *model.Model, seqs []Sequence, micro int) (float64, error) {
	var sum float64
	var n int
	var err error
	seqs = byLength(seqs, micro)
	ts.NoGrad(func() {
		for _, c := range chunks(len(seqs), micro) {
			p, e := pack(seqs[c[0]:c[1]], m.Device())
			if e != nil {
				err = e
				return
			}
			logits, e := p.logits(m, 1)
			if e != nil {
				p.drop()
				err = e
				return
			}
			ones := ts.MustOnes([]int64{int64(p.n)}, gotch.Float, m.Device())
			l := SFTLoss(logits, p.targets, ones)
			sum += l.Float64Values()[0] * float64(p.n)
			n += p.n
			for _, t := range []*ts.Tensor{logits, ones, l} {
				t.MustDrop()
			}
			p.drop()
		}
	})
	if err != nil {
		return 0, err
	}
	return sum / float64(max(n, 1)), nil
}

// permutation is a deterministic shuffle of 0..n−1 for (seed, stream).
func permutation(n int, seed, stream uint64) []int {
	return rand.New(rand.NewPCG(seed, 0x53465400+stream)).Perm(n)
}

// restoreWeights loads a checkpoint's weights into m: the adapters for a LoRA model (whose base
// stays as loaded), every weight otherwise.
func restoreWeights(m *model.Model, ckpt string) error {
	if m.LoRA() != nil {
		return m.LoadAdapter(ckpt + "/adapter")
	}
	params, err := model.ReadSafetensors(ckpt)
	if err != nil {
		return err
	}
	var ignore []string
	if m.Config.TieWordEmbeddings {
		ignore = append(ignore, "lm_head.weight")
	}
	return m.SetParams(params, ignore...)
}

// StatePerplexity is the perplexity of the state text (the bodies of <observation> and
// <prediction>) of conversations under m: exp of the mean cross-entropy of those tokens given
// everything before them (docs/method.md's state perplexity). It must run on a locked OS thread.
func StatePerplexity(m *model.Model, tokens *rollout.Tokens, exs []SFTExample, maxLen, micro int) (float64, error) {
	full, _, err := SFTSequences(tokens, exs, maxLen, false)
	if err != nil {
		return 0, err
	}
	masked, _, err := SFTSequences(tokens, exs, maxLen, true)
	if err != nil {
		return 0, err
	}
	var seqs []Sequence
	for i := range full {
		s := Sequence{IDs: full[i].IDs, Train: make([]bool, len(full[i].IDs))}
		n := 0
		for j := range s.Train {
			s.Train[j] = full[i].Train[j] && !masked[i].Train[j]
			if s.Train[j] {
				n++
			}
		}
		if n > 0 {
			seqs = append(seqs, s)
		}
	}
	if len(seqs) == 0 {
		return 0, errors.New("state perplexity: no state text in the conversations")
	}
	loss, err := EvalLoss(m, seqs, micro)
	if err != nil {
		return 0, err
	}
	return math.Exp(loss), nil
}
