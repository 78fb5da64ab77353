package rollout

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// WorkerOptions configure a pool of rollout workers.
type WorkerOptions struct {
	Run, Worker string
	Episode     EpisodeOptions
	// Workers is how many episodes run at once.
	Workers int
	// Groups is how many groups to play (0: until the context ends); the GroupSize episodes of a
	// group share one seed.
	Groups, GroupSize int
	// FirstGroup numbers the first group; group g plays seed SeedBase+g.
	FirstGroup int
	SeedBase   int64
	NewEnv     func() (envs.Env, error)
	Router     *Router
	Tokens     *Tokens
	// Publish receives each finished trajectory (the bus publisher, or a slice in tests).
	Publish func(context.Context, *bus.Trajectory) error
	// Policy, when set, carries policy versions (the spa_policy KV watch); new episodes ask for
	// the latest version's model name. Episodes already running keep theirs.
	Policy <-chan bus.Policy
	// MaxAttempts bounds how often an episode is restarted on another server; zero means 5.
	MaxAttempts int
	// Drain is how long episodes in flight may finish after the context ends; zero means 60 s.
	Drain time.Duration
}

// WorkerStats count what a pool did.
type WorkerStats struct {
	Episodes  int64 `json:"episodes"`
	Turns     int64 `json:"turns"`
	Successes int64 `json:"successes"`
	Restarts  int64 `json:"restarts"`
	Failed    int64 `json:"failed"`
}

// RunWorkers plays groups of episodes with opts.Workers at a time and publishes each trajectory.
// When ctx ends it starts no new episode and lets those in flight finish (up to Drain), so a
// shutdown loses nothing already paid for.
func RunWorkers(ctx context.Context, opts WorkerOptions) (WorkerStats, error) {
	if opts.Workers <= 0 || opts.GroupSize <= 0 {
		return WorkerStats{}, fmt.Errorf("rollout workers: workers %d and group size %d must be positive", opts.Workers, opts.GroupSize)
	}
	if opts.NewEnv == nil || opts.Router == nil || opts.Publish == nil {
		return WorkerStats{}, errors.New("rollout workers: NewEnv, Router and Publish are required")
	}
	if err := bus.CheckName("run", opts.Run); err != nil {
		return WorkerStats{}, err
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.Drain <= 0 {
		opts.Drain = 60 * time.Second
	}
	// Episodes run on their own context, cancelled only Drain after ctx ends.
	epCtx, cancelEpisodes := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelEpisodes()
	go func() {
		<-ctx.Done()
		select {
		case <-time.After(opts.Drain):
			cancelEpisodes()
		case <-epCtx.Done():
		}
	}()

	var model atomic.Value
	model.Store(opts.Episode.Model)
	if opts.Policy != nil {
		go func() {
			for p := range opts.Policy {
				model.Store(p.Model)
			}
		}()
	}

	type job struct {
		group, index int
	}
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		for g := opts.FirstGroup; opts.Groups == 0 || g < opts.FirstGroup+opts.Groups; g++ {
			for i := range opts.GroupSize {
				select {
				case jobs <- job{g, i}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()

	var stats WorkerStats
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				eo := opts.Episode
				eo.Run, eo.Worker = opts.Run, opts.Worker
				eo.Seed = opts.SeedBase + int64(j.group)
				eo.Group = fmt.Sprintf("%s-g%d", opts.Run, j.group)
				eo.ID = fmt.Sprintf("%s-%s-g%d-%d", opts.Run, opts.Worker, j.group, j.index)
				eo.Model = model.Load().(string)
				tr, err := playWithRestarts(epCtx, opts, eo, &stats)
				if err == nil {
					err = opts.Publish(epCtx, tr)
				}
				mu.Lock()
				if err != nil {
					stats.Failed++
					if firstErr == nil && epCtx.Err() == nil {
						firstErr = err
					}
				} else {
					stats.Episodes++
					stats.Turns += int64(len(tr.Turns))
					if tr.Success {
						stats.Successes++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return stats, firstErr
}

// playWithRestarts plays one episode, restarting it from scratch on another server when its
// server fails mid-episode (a trajectory must come from one server and one policy version).
func playWithRestarts(ctx context.Context, opts WorkerOptions, eo EpisodeOptions, stats *WorkerStats) (*bus.Trajectory, error) {
	var last error
	for attempt := range opts.MaxAttempts {
		llm, err := opts.Router.Episode()
		if errors.Is(err, ErrNoServer) {
			// Every server is backing off; wait a little and look again.
			select {
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
				last = err
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		env, err := opts.NewEnv()
		if err != nil {
			return nil, err
		}
		tr, err := Play(ctx, env, llm, opts.Tokens, eo)
		if c, ok := env.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		if err == nil {
			return tr, nil
		}
		var se *ServerError
		if !errors.As(err, &se) || ctx.Err() != nil {
			return nil, err
		}
		last = err
		atomic.AddInt64(&stats.Restarts, 1)
	}
	return nil, fmt.Errorf("episode %s: gave up after %d attempts: %w", eo.ID, opts.MaxAttempts, last)
}
