package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeYAML(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "spa.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := Load(Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("Load with no sources differs from Default():\n%+v\n%+v", cfg, Default())
	}
}

// Each layer beats the one below it, key by key: a key set only in a lower layer keeps that value.
func TestLayering(t *testing.T) {
	file := writeYAML(t, "rollout:\n  workers: 3\n  groups: 4\n  group_size: 5\nlearner:\n  sft:\n    lr: 0.5\n")
	env := []string{"SPA_ROLLOUT_GROUPS=40", "SPA_ROLLOUT_GROUP_SIZE=50", "HOME=/root"}
	flags := map[string]string{"rollout.group_size": "500"}
	cfg, err := Load(Sources{File: file, Environ: env, Flags: flags})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"default only", cfg.Rollout.MaxTurns, 5},
		{"file beats default", cfg.Rollout.Workers, 3},
		{"file beats default (nested)", cfg.Learner.SFT.LR, 0.5},
		{"env beats file", cfg.Rollout.Groups, 40},
		{"flag beats env and file", cfg.Rollout.GroupSize, 500},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.key, tc.got, tc.want)
		}
	}
}

func TestEnvironmentValuesOfEveryKind(t *testing.T) {
	cfg, err := Load(Sources{Environ: []string{
		"SPA_ROLLOUT_WORKERS=7",
		"SPA_ROLLOUT_TEMPERATURE=0",
		"SPA_ROLLOUT_ENDPOINTS=http://a:8000, http://b:8000",
		"SPA_ROLLOUT_REQUEST_TIMEOUT=90s",
		"SPA_ENV_COORDS=false",
		"SPA_LEARNER_PPO_ACTOR_LR=2e-6",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Rollout.Workers != 7 || cfg.Rollout.Temperature != 0 || cfg.Env.Coords ||
		cfg.Rollout.RequestTimeout != 90*time.Second || cfg.Learner.PPO.ActorLR != 2e-6 ||
		!reflect.DeepEqual(cfg.Rollout.Endpoints, []string{"http://a:8000", "http://b:8000"}) {
		t.Errorf("environment not applied: %+v", cfg.Rollout)
	}
}

func TestProblemsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        []string
		flags      map[string]string
		want       []string
	}{
		{"misspelt key", "rollout:\n  wrkers: 4\n", nil, nil,
			[]string{"rollout.wrkers: unknown key (did you mean rollout.workers?)"}},
		{"unknown section", "rolout:\n  workers: 4\n", nil, nil, []string{"rolout.workers: unknown key"}},
		{"scalar for a section", "rollout: 5\n", nil, nil, []string{"rollout: must be a mapping of keys"}},
		{"not an integer", "rollout:\n  workers: many\n", nil, nil, []string{`rollout.workers: must be an integer, got "many"`}},
		{"fraction for an integer", "rollout:\n  workers: 2.5\n", nil, nil, []string{"rollout.workers: must be an integer, got 2.5"}},
		{"bool for a number", "learner:\n  sft:\n    lr: true\n", nil, nil, []string{"learner.sft.lr: must be a number, got true"}},
		{"number for a bool", "env:\n  coords: 1\n", nil, nil, []string{"env.coords: must be true or false, got 1"}},
		{"bad duration", "bus:\n  timeout: 5\n", nil, nil, []string{"bus.timeout: must be a duration such as 30s or 5m, got 5"}},
		{"mapping for a value", "rollout:\n  workers:\n    a: 1\n", nil, nil, []string{"rollout.workers.a: unknown key"}},
		{"zero learning rate", "learner:\n  sft:\n    lr: 0\n", nil, nil, []string{"learner.sft.lr: must be > 0, got 0"}},
		{"seed past its bound", "run:\n  seed: 2000000000\n", nil, nil, []string{"run.seed: must be in [0,1000000000], got 2000000000"}},
		{"negative validation seed", "", nil, map[string]string{"run.val_seed": "-5"}, []string{"run.val_seed: must be >= 0, got -5"}},
		{"negative workers from env", "", []string{"SPA_ROLLOUT_WORKERS=-1"}, nil,
			[]string{"rollout.workers: must be >= 1, got -1 (from SPA_ROLLOUT_WORKERS)"}},
		{"bad env value", "", []string{"SPA_ROLLOUT_WORKERS=lots"}, nil,
			[]string{`rollout.workers: must be an integer, got "lots" (from SPA_ROLLOUT_WORKERS)`}},
		{"unknown env var", "", []string{"SPA_ROLLOUT_WRKERS=3"}, nil,
			[]string{"SPA_ROLLOUT_WRKERS: unknown environment variable: no key rollout.wrkers (did you mean SPA_ROLLOUT_WORKERS?)"}},
		{"unknown flag key", "", nil, map[string]string{"rollout.wrkers": "3"},
			[]string{"rollout.wrkers: unknown key (given on the command line; did you mean rollout.workers?)"}},
		{"top_p out of range", "rollout:\n  top_p: 0\n", nil, nil, []string{"rollout.top_p: must be in (0,1], got 0"}},
		{"enum", "rollout:\n  mode: tokens\n", nil, nil, []string{`rollout.mode: must be one of token, chat, got "tokens"`}},
		{"list item", "run:\n  methods: [spa, ppo]\n", nil, nil, []string{`run.methods: "ppo" is not one of spa, vanilla, state-estimation`}},
		{"endpoint url", "rollout:\n  endpoints: [localhost:8000]\n", nil, nil, []string{`rollout.endpoints: "localhost:8000"`}},
		{"nats url scheme", "bus:\n  url: http://x:4222\n", nil, nil, []string{`bus.url: "http://x:4222": scheme must be one of nats, tls, ws, wss`}},
		{"listen address", "server:\n  listen: 8000\n", nil, nil, []string{`server.listen: must be host:port, got "8000"`}},
		{"device", "learner:\n  device: gpu\n", nil, nil, []string{`learner.device: must be cpu, cuda or cuda:N, got "gpu"`}},
		{"dual clip", "learner:\n  ppo:\n    dual_clip: 0.5\n", nil, nil, []string{"learner.ppo.dual_clip: must be 0 (off) or > 1, got 0.5"}},
		{"tls pair", "bus:\n  tls_cert: c.pem\n", nil, nil, []string{"bus.tls_key: bus.tls_cert and bus.tls_key must be set together"}},
		{"user without password", "bus:\n  user: alice\n", nil, nil, []string{"bus.password: required when bus.user is set"}},
		{"every problem at once", "rollout:\n  wrkers: 4\n  mode: x\nlearner:\n  sft:\n    lr: -1\n", nil, nil,
			[]string{"rollout.wrkers: unknown key", "rollout.mode: must be one of", "learner.sft.lr: must be > 0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := Sources{Environ: tc.env, Flags: tc.flags}
			if tc.yaml != "" {
				src.File = writeYAML(t, tc.yaml)
			}
			_, err := Load(src)
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("err = %v, want a *config.Error", err)
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not contain %q:\n%v", want, err)
				}
			}
		})
	}
}

func TestUnreadableFile(t *testing.T) {
	_, err := Load(Sources{File: filepath.Join(t.TempDir(), "missing.yaml")})
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("err = %v, want it to name the file", err)
	}
	_, err = Load(Sources{File: writeYAML(t, "rollout: [unclosed\n")})
	if err == nil || !strings.Contains(err.Error(), "read config") {
		t.Errorf("malformed YAML: err = %v", err)
	}
}

// What `spa config print` writes loads back to the same configuration.
func TestYAMLRoundTrip(t *testing.T) {
	want, err := Load(Sources{Environ: []string{
		"SPA_ROLLOUT_WORKERS=7", "SPA_ROLLOUT_ENDPOINTS=http://a:1,http://b:2", "SPA_LEARNER_PPO_ACTOR_LR=3e-7",
		"SPA_ENV_SESSION_TTL=90s", "SPA_RUN_ID=2024",
	}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := want.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "\n  workers: 7 # concurrent episodes\n") {
		t.Errorf("printed YAML lacks the documented workers line:\n%s", out)
	}
	got, err := Load(Sources{File: writeYAML(t, string(out))})
	if err != nil {
		t.Fatalf("printed YAML does not load: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", got, want)
	}
}

func TestSecretsAreMasked(t *testing.T) {
	cfg, err := Load(Sources{Environ: []string{"SPA_BUS_USER=alice", "SPA_BUS_PASSWORD=hunter2"}})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := cfg.YAML()
	if strings.Contains(string(out), "hunter2") || !strings.Contains(string(out), "password: <set>") {
		t.Errorf("password not masked:\n%s", out)
	}
}

func TestEveryKeyIsDocumentedAndReachable(t *testing.T) {
	seenEnv := map[string]string{}
	for _, k := range Keys() {
		if k.Doc == "" {
			t.Errorf("%s has no doc", k.Path)
		}
		if other, dup := seenEnv[k.Env]; dup {
			t.Errorf("%s and %s share the environment variable %s", k.Path, other, k.Env)
		}
		seenEnv[k.Env] = k.Path
		if got, ok := keyForEnv(k.Env); !ok || got.Path != k.Path {
			t.Errorf("%s does not map back to %s", k.Env, k.Path)
		}
	}
}

// TestSecretsStayOffDisk: WithoutSecrets empties exactly the secret keys, and RestoreSecrets
// takes them back from another configuration without touching the rest.
func TestSecretsStayOffDisk(t *testing.T) {
	c := Default()
	c.Server.APIKey, c.Server.AdminKey, c.Bus.Token, c.Bus.Password, c.Rollout.Workers = "k1", "k2", "t", "p", 7
	bare := WithoutSecrets(c)
	if bare.Server.APIKey != "" || bare.Server.AdminKey != "" || bare.Bus.Token != "" || bare.Bus.Password != "" || bare.Rollout.Workers != 7 {
		t.Errorf("without secrets: %+v %+v", bare.Server, bare.Bus)
	}
	if c.Server.APIKey != "k1" {
		t.Error("WithoutSecrets changed its argument")
	}
	now := Default()
	now.Server.AdminKey, now.Rollout.Workers = "k3", 1
	RestoreSecrets(&bare, now)
	if bare.Server.AdminKey != "k3" || bare.Server.APIKey != "" || bare.Rollout.Workers != 7 {
		t.Errorf("restored: %+v, workers %d", bare.Server, bare.Rollout.Workers)
	}
}
