package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Policy is a run's current policy version: what servers should serve and workers should ask for.
type Policy struct {
	Version int64 `json:"version"`
	// Model is the name servers answer to for this version (the request's "model").
	Model string `json:"model"`
	// WeightDir is where the checkpoint lives (a path or URL the servers can read).
	WeightDir string    `json:"weight_dir"`
	UpdatedAt time.Time `json:"updated_at"`
}

// VersionName is the name a version is served under where every version has its own (spa serve,
// vLLM LoRA adapters): <prefix>-v<N>.
func VersionName(prefix string, n int64) string { return fmt.Sprintf("%s-v%d", prefix, n) }

// ParseVersionName reads a name VersionName wrote; ok is false for any other name (a served name
// that always means the latest, an API model).
func ParseVersionName(name string) (prefix string, n int64, ok bool) {
	i := strings.LastIndex(name, "-v")
	if i <= 0 || i+2 == len(name) {
		return "", 0, false
	}
	for _, c := range name[i+2:] {
		if c < '0' || c > '9' {
			return "", 0, false
		}
	}
	n, err := strconv.ParseInt(name[i+2:], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return name[:i], n, true
}

// Errors from Policies.
var (
	ErrNoPolicy = errors.New("no policy version set for this run")
	// ErrStaleVersion is returned when a Set would move a run's version backwards or sideways.
	ErrStaleVersion = errors.New("policy version is not newer than the current one")
)

// Policies is the spa_policy KV bucket: one key per run.
type Policies struct {
	kv jetstream.KeyValue
}

// OpenPolicies opens the bucket, creating it when absent.
func OpenPolicies(ctx context.Context, b *Bus) (*Policies, error) {
	kv, err := b.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      PolicyBucket,
		Description: "spa: current policy version per run",
		History:     16,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("policy bucket %s: %w", PolicyBucket, err)
	}
	return &Policies{kv: kv}, nil
}

// Get returns run's current policy, or ErrNoPolicy.
func (p *Policies) Get(ctx context.Context, run string) (Policy, error) {
	pol, _, err := p.get(ctx, run)
	return pol, err
}

func (p *Policies) get(ctx context.Context, run string) (Policy, uint64, error) {
	if err := CheckName("run", run); err != nil {
		return Policy{}, 0, err
	}
	e, err := p.kv.Get(ctx, run)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Policy{}, 0, fmt.Errorf("run %s: %w", run, ErrNoPolicy)
	}
	if err != nil {
		return Policy{}, 0, fmt.Errorf("policy of run %s: %w", run, err)
	}
	var pol Policy
	if err := json.Unmarshal(e.Value(), &pol); err != nil {
		return Policy{}, 0, fmt.Errorf("policy of run %s: %w", run, err)
	}
	return pol, e.Revision(), nil
}

// Set publishes pol as run's current policy. Versions only move forward: a Set whose version is
// not above the stored one fails with ErrStaleVersion, so a slow learner replica cannot roll the
// fleet back. The check and the write are one compare-and-set.
func (p *Policies) Set(ctx context.Context, run string, pol Policy) error {
	if pol.Version < 0 {
		return fmt.Errorf("policy of run %s: version %d < 0", run, pol.Version)
	}
	if pol.Model == "" {
		return fmt.Errorf("policy of run %s: empty model name", run)
	}
	if pol.UpdatedAt.IsZero() {
		pol.UpdatedAt = time.Now().UTC()
	}
	data, err := json.Marshal(pol)
	if err != nil {
		return err
	}
	for {
		cur, rev, err := p.get(ctx, run)
		switch {
		case errors.Is(err, ErrNoPolicy):
			_, err = p.kv.Create(ctx, run, data)
		case err != nil:
			return err
		case pol.Version <= cur.Version:
			return fmt.Errorf("run %s: set version %d over %d: %w", run, pol.Version, cur.Version, ErrStaleVersion)
		default:
			_, err = p.kv.Update(ctx, run, data, rev)
		}
		if err == nil {
			return nil
		}
		// Someone else wrote between our read and write: read again and re-check.
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("set policy of run %s: %w", run, err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// Watch sends run's current policy (when there is one) and then every change, until ctx ends.
// The channel is closed when the watch ends.
func (p *Policies) Watch(ctx context.Context, run string) (<-chan Policy, error) {
	if err := CheckName("run", run); err != nil {
		return nil, err
	}
	w, err := p.kv.Watch(ctx, run)
	if err != nil {
		return nil, fmt.Errorf("watch policy of run %s: %w", run, err)
	}
	out := make(chan Policy, 1)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				// nil marks the end of the initial values; deletes carry no policy.
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				var pol Policy
				if json.Unmarshal(e.Value(), &pol) != nil {
					continue
				}
				// Keep only the newest: a watcher that fell behind wants the latest version,
				// not a backlog.
				select {
				case <-out:
				default:
				}
				out <- pol
			}
		}
	}()
	return out, nil
}
