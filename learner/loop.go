package learner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/weightsync"
)

// Batch is one step's trajectories and what was set aside while gathering them.
type Batch struct {
	Trajs []*bus.Trajectory
	// Seqs are the trajectories' stream positions (empty for sources without a stream).
	Seqs []uint64
	// Stale counts trajectories dropped for coming from too old a policy; Invalid those that
	// could not be decoded or trained on (chat mode).
	Stale, Invalid int
	// Dropped are the stream positions of what was set aside (stale or invalid). They are acknowledged with the batch, so that a learner that
	// dies mid-step hands them back too and no trajectory is counted without a checkpoint.
	Dropped    []uint64
	deliveries []bus.Delivery
}

// Source hands the learner trajectories.
type Source interface {
	// Next gathers n trajectories sampled by policy version minVersion or newer, dropping and
	// counting older ones. It blocks until it has n or ctx ends.
	Next(ctx context.Context, n int, minVersion int64) (Batch, error)
	// Done acknowledges a batch once its step is checkpointed.
	Done(ctx context.Context, b Batch) error
	// Skip acknowledges, without handing them out, the positions a step already trained on
	// before the learner stopped (TrainerState.Consumed).
	Skip(seqs []uint64)
}

// BusSource reads trajectories from the run's durable consumer. It rides out a NATS server
// restart: fetches and acknowledgements that fail are retried for up to RetryFor, and the batch a
// step holds is kept alive (in-progress acknowledgements every third of AckWait) so that a long
// step is not redelivered while a learner that dies gives its batch back after AckWait.
type BusSource struct {
	C *bus.Consumer
	// Wait bounds one fetch; zero means 2 s.
	Wait time.Duration
	// RetryFor bounds how long failing bus calls are retried; zero means 2 minutes.
	RetryFor time.Duration
	// Log, when set, hears about retries.
	Log  func(format string, args ...any)
	skip map[uint64]bool
	// extra holds trajectories fetched beyond a batch's n, for the next batch.
	extra []bus.Delivery
	// stopHold ends the in-progress acknowledgements of the batch being trained.
	stopHold func()
}

// retry calls f until it succeeds, ctx ends, or RetryFor passes, backing off from 250 ms to 5 s.
func (s *BusSource) retry(ctx context.Context, what string, f func() error) error {
	limit := s.RetryFor
	if limit <= 0 {
		limit = 2 * time.Minute
	}
	deadline := time.Now().Add(limit)
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || ctx.Err() != nil {
			return err
		}
		if time.Now().Add(wait).After(deadline) {
			return fmt.Errorf("%s: still failing after %d attempts in %s: %w", what, attempt, limit, err)
		}
		if s.Log != nil {
			s.Log("%s failed (attempt %d, retrying in %s): %v", what, attempt, wait, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// hold keeps ds from being redelivered until the returned stop is called.
func (s *BusSource) hold(ds []bus.Delivery) func() {
	every := s.C.AckWait() / 3
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				// A failure here (the server restarting) only risks an early redelivery, which
				// the consumer drops once this batch is acknowledged.
				_ = s.C.InProgress(ds)
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// Skip implements Source.
func (s *BusSource) Skip(seqs []uint64) {
	if s.skip == nil {
		s.skip = map[uint64]bool{}
	}
	for _, q := range seqs {
		s.skip[q] = true
	}
}

// Next implements Source. Stale, untrainable and skipped trajectories are acknowledged with the
// batch by Done; until then all of them are kept alive.
func (s *BusSource) Next(ctx context.Context, n int, minVersion int64) (Batch, error) {
	var b Batch
	wait := s.Wait
	if wait <= 0 {
		wait = 2 * time.Second
	}
	inBatch := map[uint64]bool{}
	for len(b.Trajs) < n {
		if ctx.Err() != nil {
			s.Release()
			return Batch{}, ctx.Err()
		}
		ds := s.extra
		s.extra = nil
		if len(ds) == 0 {
			err := s.retry(ctx, "fetch trajectories", func() error {
				var err error
				ds, err = s.C.Fetch(ctx, n-len(b.Trajs), wait)
				return err
			})
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				return Batch{}, err
			}
		}
		var skipped []bus.Delivery
		held := len(b.deliveries)
		for _, d := range ds {
			if inBatch[d.Seq] {
				// Redelivered while this step held it (the hold lapsed during a server restart).
				continue
			}
			inBatch[d.Seq] = true
			drop := func() {
				b.deliveries = append(b.deliveries, d)
				b.Dropped = append(b.Dropped, d.Seq)
			}
			switch {
			case s.skip[d.Seq]:
				// Counted in the checkpoint already: acknowledged at once, outside the batch's
				// books. Kept in the set: a redelivery can arrive before the acknowledgement lands.
				skipped = append(skipped, d)
			case d.Traj.PolicyVersion < minVersion:
				drop()
				b.Stale++
			case !trainable(d.Traj):
				drop()
				b.Invalid++
			case len(b.Trajs) < n:
				b.Trajs = append(b.Trajs, d.Traj)
				b.Seqs = append(b.Seqs, d.Seq)
				b.deliveries = append(b.deliveries, d)
			default:
				s.extra = append(s.extra, d)
			}
		}
		if len(skipped) > 0 {
			if err := s.retry(ctx, "acknowledge trajectories trained before the restart", func() error {
				return s.C.Ack(context.WithoutCancel(ctx), skipped)
			}); err != nil {
				return Batch{}, err
			}
		}
		// Keep what this batch holds so far alive while it waits for more.
		if len(b.deliveries) > held || s.stopHold == nil {
			if s.stopHold != nil {
				s.stopHold()
			}
			s.stopHold = s.hold(slices.Clone(b.deliveries))
		}
	}
	return b, nil
}

// Release stops keeping a batch alive that will never be acknowledged (the run stopped), so
// that the server redelivers it after AckWait.
func (s *BusSource) Release() {
	if s.stopHold != nil {
		s.stopHold()
		s.stopHold = nil
	}
}

// Done implements Source.
func (s *BusSource) Done(ctx context.Context, b Batch) error {
	if s.stopHold != nil {
		s.stopHold()
		s.stopHold = nil
	}
	return s.retry(ctx, "acknowledge trajectories", func() error { return s.C.Ack(ctx, b.deliveries) })
}

// trainable reports whether FromTrajectory would accept t (token ids in every turn, and a trained
// token with something before it to predict it) without building the sequence.
func trainable(t *bus.Trajectory) bool {
	n, trained := 0, false
	for _, turn := range t.Turns {
		if len(turn.PromptIDs) == 0 && len(turn.ResponseIDs) == 0 {
			return false // a chat-mode turn
		}
		n += len(turn.PromptIDs)
		for _, m := range turn.LossMask {
			trained = trained || (m == 1 && n > 0)
			n++
		}
	}
	return trained
}

// RunOptions configure the PPO loop.
type RunOptions struct {
	// Steps is the number of PPO steps in the whole run (a resumed run does the rest).
	Steps int
	// BatchSize is trajectories per step (groups × group size).
	BatchSize int
	// MaxOffPolicySteps: a trajectory from version v is used at version V only when V − v is
	// below it (1: only the current policy's).
	MaxOffPolicySteps int
	Checkpoints       *Checkpointer
	// Fleet receives each new version; nil trains without serving (tests, offline runs).
	Fleet *weightsync.Fleet
	// ModelName names version v for the servers (spa's "<prefix>-v<v>").
	ModelName func(v int64) string
	// StartVersion is the version of the initial weights.
	StartVersion int64
	Seed         uint64
	// Resume continues from the newest checkpoint in Checkpoints.Dir.
	Resume bool
	// AfterStep is called after each step is checkpointed and synced (validation, logging); an
	// error stops the run.
	AfterStep func(ctx context.Context, r StepReport) error
}

// StepReport is one PPO step: what was trained on, the metrics, and where the time went.
type StepReport struct {
	Step    int        `json:"step"`
	Version int64      `json:"version"`
	Metrics PPOMetrics `json:"metrics"`
	Stale   int        `json:"stale"`
	Invalid int        `json:"invalid"`
	// Times in seconds: waiting for trajectories (generation), critic and reference scoring,
	// the updates, saving the checkpoint, and the weight sync.
	GenerateS float64 `json:"generate_s"`
	ScoreS    float64 `json:"score_s"`
	UpdateS   float64 `json:"update_s"`
	SaveS     float64 `json:"save_s"`
	SyncS     float64 `json:"sync_s"`
	Totals    Totals  `json:"totals"`
	// Checkpoint is the step's checkpoint directory.
	Checkpoint string `json:"checkpoint"`
}

// served is version n as the servers load it: the checkpoint's absolute path, and its PEFT
// adapter when the checkpoint has one (LoRA runs).
func (o RunOptions) served(n int64, ckpt string) weightsync.Version {
	dir, _ := filepath.Abs(ckpt)
	v := weightsync.Version{Number: n, Model: o.ModelName(n), Dir: dir}
	if _, err := os.Stat(filepath.Join(dir, "adapter")); err == nil {
		v.AdapterDir = filepath.Join(dir, "adapter")
	}
	return v
}

// Run trains until o.Steps steps are done: gather a batch, update, checkpoint, sync the servers
// (which points the policy KV at the new version), then acknowledge the batch. A step that
// fails to sync stops the run with the servers named; its checkpoint is kept.
func (p *PPO) Run(ctx context.Context, src Source, o RunOptions) (TrainerState, error) {
	if o.BatchSize <= 0 || o.Steps <= 0 {
		return TrainerState{}, fmt.Errorf("ppo: steps %d and batch size %d must be positive", o.Steps, o.BatchSize)
	}
	if o.MaxOffPolicySteps <= 0 {
		o.MaxOffPolicySteps = 1
	}
	if o.ModelName == nil {
		o.ModelName = func(v int64) string { return bus.VersionName("spa", v) }
	}
	st := TrainerState{Stage: "ppo", Seed: o.Seed, Version: o.StartVersion}
	if o.Resume && o.Checkpoints != nil {
		ckpt, saved, err := Latest(o.Checkpoints.Dir)
		switch {
		case IsNotExist(err):
		case err != nil:
			return st, err
		default:
			if saved.Stage != "ppo" {
				return st, fmt.Errorf("ppo: resume: %s is a %s checkpoint", ckpt, saved.Stage)
			}
			if err := p.restore(ckpt, saved); err != nil {
				return st, err
			}
			st = saved
			src.Skip(saved.Consumed)
			// The learner may have stopped between the checkpoint and the sync, or the servers
			// may have restarted: send them the version training resumes from. Servers that
			// have it already take it as a no-op, and a policy KV that is there keeps its value.
			if o.Fleet != nil && st.Version > o.StartVersion {
				if err := o.Fleet.Sync(ctx, o.served(st.Version, ckpt)); err != nil && !errors.Is(err, bus.ErrStaleVersion) {
					return st, fmt.Errorf("ppo: resume: %w", err)
				}
			}
		}
	}
	if r, ok := src.(interface{ Release() }); ok {
		defer r.Release()
	}
	p.o.Seed = st.Seed
	for st.Step < o.Steps {
		r := StepReport{Step: st.Step + 1}
		t0 := time.Now()
		batch, err := src.Next(ctx, o.BatchSize, st.Version-int64(o.MaxOffPolicySteps)+1)
		if err != nil {
			return st, fmt.Errorf("ppo step %d: gather trajectories: %w", r.Step, err)
		}
		r.GenerateS = time.Since(t0).Seconds()
		r.Stale, r.Invalid = batch.Stale, batch.Invalid
		met, err := p.Update(batch.Trajs, st.Step)
		if err != nil {
			return st, fmt.Errorf("ppo step %d: %w", r.Step, err)
		}
		r.Metrics, r.ScoreS, r.UpdateS = met, met.ScoreTime, met.UpdateTime
		st.Step++
		st.Version++
		st.ActorOptStep = p.ActorOpt.Step
		if p.CriticOpt != nil {
			st.CriticOptStep = p.CriticOpt.Step
		}
		st.Consumed = append(slices.Clone(batch.Seqs), batch.Dropped...)
		st.Totals.Trained += int64(met.Kept)
		st.Totals.Filtered += int64(met.Filtered)
		st.Totals.Stale += int64(batch.Stale)
		st.Totals.Invalid += int64(batch.Invalid)
		st.Finished = st.Step == o.Steps
		r.Version, r.Totals = st.Version, st.Totals

		var saved Saved
		if o.Checkpoints != nil {
			t0 = time.Now()
			if saved, err = o.Checkpoints.Save(fmt.Sprintf("step-%06d", st.Step), p.Actor, p.Critic, p.ActorOpt, p.CriticOpt, st); err != nil {
				return st, err
			}
			r.SaveS = time.Since(t0).Seconds()
			r.Checkpoint = saved.Dir
		}
		if o.Fleet != nil {
			if saved.Dir == "" {
				return st, errors.New("ppo: weight sync needs checkpoints to load from")
			}
			t0 = time.Now()
			if err := o.Fleet.Sync(ctx, o.served(st.Version, saved.Dir)); err != nil {
				return st, fmt.Errorf("ppo step %d: %w", r.Step, err)
			}
			r.SyncS = time.Since(t0).Seconds()
		}
		if err := src.Done(ctx, batch); err != nil {
			return st, fmt.Errorf("ppo step %d: acknowledge trajectories: %w", r.Step, err)
		}
		if o.AfterStep != nil {
			if err := o.AfterStep(ctx, r); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}

// restore loads a PPO checkpoint's weights and optimiser moments.
func (p *PPO) restore(ckpt string, st TrainerState) error {
	if err := restoreWeights(p.Actor, ckpt); err != nil {
		return err
	}
	if err := LoadOptimizer(ckpt, p.ActorOpt, st.ActorOptStep); err != nil {
		return err
	}
	if p.Critic != nil {
		cdir := filepath.Join(ckpt, "critic")
		if err := restoreWeights(p.Critic, cdir); err != nil {
			return err
		}
		if err := LoadOptimizer(cdir, p.CriticOpt, st.CriticOptStep); err != nil {
			return err
		}
	}
	return nil
}
