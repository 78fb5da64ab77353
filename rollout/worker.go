package rollout

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
)

// WorkerOptions configure a pool of rollout workers.
type WorkerOptions struct {
	Run, Worker string
	// Incarnation tells this process's trajectory and group ids from those of an earlier process
	// under the same worker name, which numbers its groups from 0 again; JetStream would drop
	// its trajectories as duplicates of the first one's. Empty leaves it out of the ids.
	Incarnation string
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
	// EnvRetryFor bounds how long an episode waits for an env host when none answers (hosts
	// restarting, NATS restarting), replaying from the start; zero means a minute.
	EnvRetryFor time.Duration
	// Log, when set, hears about episodes that failed.
	Log func(format string, args ...any)
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

	var policy atomic.Value
	policy.Store(bus.Policy{Model: opts.Episode.Model, Version: opts.Episode.Version})
	if opts.Policy != nil {
		go func() {
			for p := range opts.Policy {
				policy.Store(p)
			}
		}()
	}

	type job struct {
		group, index int
	}
	// A fatal error (the server refuses the API key) stops new episodes as the context would.
	jobCtx, stopJobs := context.WithCancel(ctx)
	defer stopJobs()
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		for g := opts.FirstGroup; opts.Groups == 0 || g < opts.FirstGroup+opts.Groups; g++ {
			for i := range opts.GroupSize {
				select {
				case jobs <- job{g, i}:
				case <-jobCtx.Done():
					return
				}
			}
		}
	}()
	prefix := opts.Run + "-" + opts.Worker
	if opts.Incarnation != "" {
		prefix += "-" + opts.Incarnation
	}

	var stats WorkerStats
	var mu sync.Mutex
	var firstErr error
	var fatal bool
	var wg sync.WaitGroup
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				eo := opts.Episode
				eo.Run, eo.Worker = opts.Run, opts.Worker
				eo.Seed = opts.SeedBase + int64(j.group)
				eo.Group = fmt.Sprintf("%s-g%d", prefix, j.group)
				eo.ID = fmt.Sprintf("%s-g%d-%d", prefix, j.group, j.index)
				pol := policy.Load().(bus.Policy)
				eo.Model, eo.Version = pol.Model, pol.Version
				tr, err := playWithRestarts(epCtx, opts, eo, &stats)
				if err == nil {
					err = opts.Publish(epCtx, tr)
				}
				mu.Lock()
				if err != nil {
					stats.Failed++
					if epCtx.Err() == nil {
						if opts.Log != nil {
							opts.Log("episode %s failed: %v", eo.ID, err)
						}
						if firstErr == nil || errors.Is(err, ErrUnauthorized) {
							firstErr = err
						}
					}
					if errors.Is(err, ErrUnauthorized) {
						fatal = true
						stopJobs()
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
	// A failed episode is counted and logged, and the pool goes on: a long-running worker
	// outlives a dead server or env host. It fails when it cannot go on (the API key is refused)
	// or when nothing it played succeeded.
	if fatal || (stats.Episodes == 0 && stats.Failed > 0) {
		return stats, firstErr
	}
	return stats, nil
}

// playWithRestarts plays one episode, restarting it from scratch on another server when its
// server fails mid-episode (a trajectory must come from one server and one policy version).
func playWithRestarts(ctx context.Context, opts WorkerOptions, eo EpisodeOptions, stats *WorkerStats) (*bus.Trajectory, error) {
	var last error
	envWait, envDeadline := 250*time.Millisecond, time.Time{}
	// envRetry waits before replaying an episode whose env host could not be reached, and says
	// whether to go on.
	envRetry := func(err error) bool {
		if !bus.EnvUnavailable(err) || ctx.Err() != nil {
			return false
		}
		limit := opts.EnvRetryFor
		if limit <= 0 {
			limit = time.Minute
		}
		if envDeadline.IsZero() {
			envDeadline = time.Now().Add(limit)
		}
		if time.Now().Add(envWait).After(envDeadline) {
			return false
		}
		select {
		case <-time.After(envWait):
		case <-ctx.Done():
			return false
		}
		envWait = min(2*envWait, 5*time.Second)
		atomic.AddInt64(&stats.Restarts, 1)
		return true
	}
	for attempt := 0; attempt < opts.MaxAttempts; attempt++ {
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
			if envRetry(err) {
				attempt-- // an env host's absence is not the LLM server's fault
				continue
			}
			return nil, err
		}
		tr, err := Play(ctx, env, llm, opts.Tokens, eo)
		_ = envs.Close(env)
		if err == nil {
			return tr, nil
		}
		if envRetry(err) {
			attempt--
			continue
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

// WorkerSeedBase gives each worker name its own range of a million puzzle seeds, so that workers
// on several machines do not all play the same puzzles; a restarted worker replays its own.
func WorkerSeedBase(seed int, worker string) int64 {
	h := fnv.New32a()
	h.Write([]byte(worker))
	return int64(seed)*1_000_003 + int64(h.Sum32()%(1<<30))<<20
}
