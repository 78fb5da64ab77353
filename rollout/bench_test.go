package rollout

import (
	"testing"
	"time"

	"github.com/spa-rl/spa/envs"
)

func TestQuickHarness(t *testing.T) {
	tk := domainTokens(t)
	r, err := MeasureHarness(func() (envs.Env, error) { return envs.New("sokoban", "") }, tk, 4, 2*time.Second)
	t.Logf("%+v %v", r, err)
}
