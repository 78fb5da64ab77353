package inference

import (
	"context"

	"github.com/spa-rl/spa/weightsync"
)

// Embedded syncs the in-process engine of the single-process default, without HTTP.
func Embedded(e *Engine) weightsync.Syncer { return embedded{e} }

type embedded struct{ e *Engine }

func (embedded) Name() string { return "embedded" }

func (s embedded) Sync(ctx context.Context, v weightsync.Version) error {
	return s.e.LoadVersion(ctx, v.Model, v.Number, v.Dir)
}
