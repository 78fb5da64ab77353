package harness

import (
	"strings"
	"testing"

	"github.com/spa-rl/spa/config"
)

// TestPresetsLoad: every preset names real keys with valid values, and run.preset accepts its
// name (the two lists live in different packages); an unknown name lists the choices.
func TestPresetsLoad(t *testing.T) {
	for name := range Presets {
		values, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(config.Sources{Preset: values, Flags: map[string]string{"run.preset": name}})
		if err != nil {
			t.Errorf("preset %s: %v", name, err)
			continue
		}
		if cfg.Run.Preset != name {
			t.Errorf("preset %s loads as %q", name, cfg.Run.Preset)
		}
	}
	if _, err := Preset("huge"); err == nil || !strings.Contains(err.Error(), "want long, paper, quick, smoke") {
		t.Errorf("unknown preset: %v", err)
	}
}
