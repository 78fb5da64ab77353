package harness

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	metricslog "github.com/spa-rl/spa/internal/metrics"
	"github.com/spa-rl/spa/internal/progress"
	"github.com/spa-rl/spa/learner"
	"github.com/spa-rl/spa/torchrt"
)

// The training stages, as spa learn and the pipeline both run them: a policy loaded on a torch
// thread, the learner's loop, one metrics.jsonl record and one progress line per step.

// StageIO is where a stage runs and reports.
type StageIO struct {
	// Metrics receives one record per step; nil records nothing.
	Metrics *metricslog.Log
	// Log receives the progress line.
	Log io.Writer
	// Exec is the torch thread to train on; nil makes one for the stage.
	Exec *torchrt.Executor
}

// SFTStage is one supervised fine-tuning run.
type SFTStage struct {
	StageIO
	// Name labels the progress line and the metrics records ("sft", "warmup-sft", "spa-sft").
	Name string
	// From is the checkpoint the policy is loaded from.
	From string
	// Train and Val are the tokenised conversations (learner.SFTSequences,
	// learner.SplitValidation); Val may be empty.
	Train, Val []learner.Sequence
	// Policy says how the policy is loaded (device, LoRA); Options how it trains, checkpoints
	// included.
	Policy  learner.PolicyOptions
	Options learner.SFTOptions
}

// RunSFT trains s. On an interruption the result still names the checkpoint saved on the way
// out.
func RunSFT(ctx context.Context, s SFTStage) (learner.SFTResult, error) {
	exec, done := stageExecutor(s.Exec)
	defer done()
	var line *progress.Line
	o := s.Options
	o.Progress = func(p learner.SFTProgress) {
		record(s.Metrics, map[string]any{"stage": s.Name, "step": p.Step, "epoch": p.Epoch, "loss": p.Loss, "val_loss": metricslog.Number(p.ValLoss),
			"grad_norm": p.GradNorm, "lr": p.LR, "tokens": p.Tokens})
		if line == nil {
			line = progress.New(s.Log, s.Name, p.Steps)
		}
		line.Set(p.Step, fmt.Sprintf("epoch %d loss %.4f val %s lr %.2g", p.Epoch, p.Loss, LossText(p.ValLoss), p.LR))
	}
	var res learner.SFTResult
	err := exec.Do(ctx, func() error {
		m, err := learner.LoadPolicy(s.From, s.Policy)
		if err != nil {
			return err
		}
		defer m.Close()
		res, err = learner.TrainSFT(ctx, m, s.Train, s.Val, o)
		return err
	})
	line.Done()
	return res, err
}

// PPOStage is one PPO run over a trajectory source.
type PPOStage struct {
	StageIO
	// Name labels the progress line; Method, when set, is the metrics records' "method".
	Name, Method string
	// New loads the trainer (NewPPO) on the torch thread; close frees it.
	New func() (trainer *learner.PPO, close func(), err error)
	// Source gives the batches; Run says how many steps and where checkpoints and weights go.
	// Run.AfterStep is the stage's own; use AfterStep below.
	Source learner.Source
	Run    learner.RunOptions
	// AfterStep runs after each step's record, before its progress line; the text it returns
	// replaces the line's usual summary when not empty (a validation result, say).
	AfterStep func(ctx context.Context, r learner.StepReport) (string, error)
}

// RunPPO trains s and returns the trainer's final state.
func RunPPO(ctx context.Context, s PPOStage) (learner.TrainerState, error) {
	exec, done := stageExecutor(s.Exec)
	defer done()
	line := progress.New(s.Log, s.Name, s.Run.Steps)
	ro := s.Run
	ro.AfterStep = func(ctx context.Context, r learner.StepReport) error {
		rec := map[string]any{"stage": "ppo", "step": r.Step, "report": r}
		if s.Method != "" {
			rec["method"] = s.Method
		}
		record(s.Metrics, rec)
		m := r.Metrics
		text := fmt.Sprintf("v%d reward %.2f success %.0f%% moves %.1f format errors %.0f%% pg %.3f kl %.4f | gen %.1fs update %.1fs sync %.1fs",
			r.Version, m.Reward, 100*m.Success, m.Moves, 100*m.FormatErrors, m.PolicyLoss, m.ApproxKL, r.GenerateS, r.UpdateS, r.SyncS)
		if s.AfterStep != nil {
			more, err := s.AfterStep(ctx, r)
			if err != nil {
				return err
			}
			if more != "" {
				text = more
			}
		}
		line.Set(r.Step, text)
		return nil
	}
	var st learner.TrainerState
	err := exec.Do(ctx, func() error {
		trainer, closeAll, err := s.New()
		if err != nil {
			return err
		}
		defer closeAll()
		st, err = trainer.Run(ctx, s.Source, ro)
		return err
	})
	line.Done()
	return st, err
}

// record writes one metrics line, stamped with the time.
func record(w *metricslog.Log, v map[string]any) {
	if w == nil {
		return
	}
	v["time"] = time.Now().UTC().Format(time.RFC3339)
	_ = w.Write(v)
}

func stageExecutor(ex *torchrt.Executor) (*torchrt.Executor, func()) {
	if ex != nil {
		return ex, func() {}
	}
	ex = torchrt.NewExecutor()
	return ex, ex.Close
}

// LossText prints a validation loss, or says there was no validation set (the loss is NaN then).
func LossText(v float64) string {
	if math.IsNaN(v) {
		return "none (no validation data)"
	}
	return fmt.Sprintf("%.4f", v)
}
