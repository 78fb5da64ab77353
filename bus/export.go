package bus

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoTrajectories means a run has nothing stored: most often a mistyped run id.
var ErrNoTrajectories = errors.New("no trajectories stored for this run")

// storedRuns names the runs that do have trajectories, for an error message.
func storedRuns(ctx context.Context, stream jetstream.Stream) string {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(TrajSubject(">")))
	if err != nil {
		return "the stored runs could not be listed: " + err.Error()
	}
	var runs []string
	for subj, n := range info.State.Subjects {
		runs = append(runs, fmt.Sprintf("%s (%d)", strings.TrimPrefix(subj, TrajSubject("")), n))
	}
	if len(runs) == 0 {
		return "it holds no runs at all"
	}
	sort.Strings(runs)
	if len(runs) > 10 {
		runs = append(runs[:10], fmt.Sprintf("and %d more", len(runs)-10))
	}
	return "runs stored: " + strings.Join(runs, ", ")
}

// ExportTrajectories writes every trajectory of run stored when the call starts to w, one JSON
// object per line, in stream order. progress, if set, is called with (done, total) as it goes.
// It does not touch any durable consumer, so exporting never disturbs a running learner.
func ExportTrajectories(ctx context.Context, b *Bus, run string, w io.Writer, progress func(done, total uint64)) (uint64, error) {
	if err := CheckName("run", run); err != nil {
		return 0, err
	}
	subject := TrajSubject(run)
	stream, err := b.JS.Stream(ctx, TrajStream)
	if err != nil {
		return 0, fmt.Errorf("export run %s: stream %s: %w", run, TrajStream, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("export run %s: %w", run, err)
	}
	total := info.State.Subjects[subject]
	if total == 0 {
		return 0, fmt.Errorf("export run %s: %w in stream %s (%s)", run, ErrNoTrajectories, TrajStream, storedRuns(ctx, stream))
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return 0, fmt.Errorf("export run %s: %w", run, err)
	}
	// Ordered consumers are ephemeral and would expire by themselves, but only after minutes.
	// Ordered consumers are recreated under new names as they go; delete the last one.
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			_ = stream.DeleteConsumer(context.WithoutCancel(ctx), info.Name)
		}
	}()
	bw := bufio.NewWriterSize(w, 1<<20)
	var done uint64
	for done < total {
		batch, err := cons.Fetch(int(min(total-done, 1000)), jetstream.FetchMaxWait(b.timeout))
		if err != nil {
			return done, fmt.Errorf("export run %s: fetch: %w", run, err)
		}
		n := 0
		for msg := range batch.Messages() {
			data := msg.Data()
			if !json.Valid(data) {
				return done, fmt.Errorf("export run %s: message %d is not JSON", run, done+1)
			}
			if _, err := bw.Write(data); err != nil {
				return done, fmt.Errorf("export run %s: write: %w", run, err)
			}
			if err := bw.WriteByte('\n'); err != nil {
				return done, fmt.Errorf("export run %s: write: %w", run, err)
			}
			done++
			n++
		}
		if err := batch.Error(); err != nil && n == 0 {
			return done, fmt.Errorf("export run %s after %d of %d: %w", run, done, total, err)
		}
		if n == 0 {
			return done, fmt.Errorf("export run %s: no messages after %d of %d within %s", run, done, total, b.timeout)
		}
		if progress != nil {
			progress(done, total)
		}
		if err := ctx.Err(); err != nil {
			return done, err
		}
	}
	return done, bw.Flush()
}
