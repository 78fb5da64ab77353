// Package config is spa's one typed configuration and the only place that reads configuration
// sources. Values are layered, lowest first: built-in defaults, a YAML file, SPA_* environment
// variables, command-line flags. Other packages take the typed sections, never viper.
//
// Every leaf field's key is its dotted yaml path (rollout.workers); its environment variable is
// SPA_ plus the key in upper case with dots as underscores (SPA_ROLLOUT_WORKERS). The struct tags
// doc (one line, shown by `spa config print`), check (validation rule, see check.go) and secret
// (masked when printed) describe each key.
package config

import "time"

// Config is the whole system's configuration.
type Config struct {
	Run     Run     `yaml:"run"`
	Bus     Bus     `yaml:"bus"`
	Server  Server  `yaml:"server"`
	Rollout Rollout `yaml:"rollout"`
	Learner Learner `yaml:"learner"`
	Env     Env     `yaml:"env"`
}

// Run holds settings of a whole pipeline run.
type Run struct {
	ID      string   `yaml:"id" doc:"run id; empty picks one from the start time"`
	Dir     string   `yaml:"dir" doc:"directory that holds run directories (<dir>/<id>)" check:"nonempty"`
	Preset  string   `yaml:"preset" doc:"pipeline size: smoke, quick, long or paper" check:"oneof=smoke quick long paper"`
	Methods []string `yaml:"methods" doc:"methods to train and compare: spa, vanilla, state-estimation" check:"each=spa vanilla state-estimation"`
	Seed    int      `yaml:"seed" doc:"seed for the training puzzles (each seed has its own range), sampling and initialisation" check:"[0,1000000000]"`
	Threads int      `yaml:"threads" doc:"libtorch intra-op threads; 0 uses every core" check:">=0"`
	// Model is a pretrained starting checkpoint; empty trains the tiny preset from scratch.
	Model          string  `yaml:"model" doc:"starting checkpoint (Hugging Face directory); empty trains a tiny model from scratch"`
	Explore        string  `yaml:"explore" doc:"self-play exploration: auto (policy for a pretrained run.model, random from scratch), random (well-formed turns with random actions), policy, or mix" check:"oneof=auto random policy mix"`
	SelfPlay       int     `yaml:"selfplay_episodes" doc:"self-play episodes for the world-model SFT data" check:">=1"`
	WarmupEpisodes int     `yaml:"warmup_episodes" doc:"format warm-up episodes for a from-scratch model (its stand-in for an instruct model); 0 skips" check:">=0"`
	WarmupEpochs   int     `yaml:"warmup_epochs" doc:"epochs of the format warm-up SFT; 0 uses learner.sft.epochs" check:">=0"`
	WarmupLR       float64 `yaml:"warmup_lr" doc:"peak learning rate of the format warm-up SFT; 0 uses learner.sft.lr" check:">=0"`
	// WarmupSkill exists because a from-scratch model that copies a random player ignores the
	// state, and PPO from ~130 solves cannot teach it to read one; an instruct model reads it a
	// little, which is what RL sharpens.
	WarmupSkill float64 `yaml:"warmup_skill" doc:"share of the warm-up player's actions that follow a shortest solution (environments that plan: sokoban); 0 is the random explorer" check:"[0,1]"`
	// SFTReplay exists for models trained from scratch, which forget the answer format of the
	// base prompt when fine-tuned on world-model conversations alone; an instruct model does not.
	SFTReplay   float64 `yaml:"sft_replay" doc:"share of the warm-up conversations replayed, mixed in, during spa's world-model SFT (from scratch only)" check:"[0,1]"`
	Filter      bool    `yaml:"filter" doc:"keep only turns with an observation before a prediction inside <think>, de-duplicated"`
	GroundTruth bool    `yaml:"ground_truth" doc:"replace observation/prediction bodies with the true states (off: the self-belief ablation)"`
	ValPuzzles  int     `yaml:"val_puzzles" doc:"validation puzzles (seeds val_seed..val_seed+N-1)" check:">=1"`
	// ValSeed exists so presets can be tuned on one range of puzzles and reported on another.
	ValSeed int `yaml:"val_seed" doc:"first validation puzzle seed; tune on another range than the one you report (training puzzles start at 1000000)" check:">=0"`
	ValK    int `yaml:"val_k" doc:"samples per validation puzzle (Pass@k)" check:">=1"`
}

// Bus holds how to reach NATS.
type Bus struct {
	URL       string        `yaml:"url" doc:"NATS server or cluster URL(s), comma-separated; empty starts an embedded server" check:"natsurl"`
	Listen    string        `yaml:"listen" doc:"TCP address the embedded server listens on; empty means in-process only" check:"hostport"`
	StoreDir  string        `yaml:"store_dir" doc:"JetStream store of the embedded server; empty means <run dir>/nats"`
	User      string        `yaml:"user" doc:"NATS user name"`
	Password  string        `yaml:"password" doc:"NATS password" secret:"true"`
	Token     string        `yaml:"token" doc:"NATS token" secret:"true"`
	CredsFile string        `yaml:"creds_file" doc:"NATS credentials (.creds) file"`
	NKeyFile  string        `yaml:"nkey_file" doc:"NATS NKey seed file"`
	TLSCA     string        `yaml:"tls_ca" doc:"CA certificate that signs the server's TLS certificate"`
	TLSCert   string        `yaml:"tls_cert" doc:"client TLS certificate, for servers that verify clients"`
	TLSKey    string        `yaml:"tls_key" doc:"client TLS key"`
	Timeout   time.Duration `yaml:"timeout" doc:"connect and request timeout" check:">0"`
}

// Server holds the embedded inference server's settings.
type Server struct {
	Listen      string `yaml:"listen" doc:"HTTP address; binds loopback unless told otherwise" check:"hostport"`
	ModelDir    string `yaml:"model_dir" doc:"Hugging Face checkpoint directory to serve"`
	APIKey      string `yaml:"api_key" doc:"bearer token required on /v1 endpoints; empty disables auth" secret:"true"`
	AdminKey    string `yaml:"admin_key" doc:"bearer token required on weight and pause endpoints; empty uses api_key" secret:"true"`
	MaxBatch    int    `yaml:"max_batch" doc:"most sequences decoded together" check:">=1"`
	MaxModelLen int    `yaml:"max_model_len" doc:"longest prompt plus completion, in tokens" check:">=16"`
	KVCacheMB   int    `yaml:"kv_cache_mb" doc:"memory budget of the KV cache, MiB" check:">=1"`
	MaxVersions int    `yaml:"max_versions" doc:"policy versions kept loaded at once" check:">=1"`
	MaxWaiting  int    `yaml:"max_waiting" doc:"sequences queued for a slot before requests get 429" check:">=1"`
	// MaxRequestSeqs bounds prompts × n of one request.
	MaxRequestSeqs int           `yaml:"max_request_seqs" doc:"most sequences (prompts x n) in one request; more is a 400" check:">=1"`
	LoadTimeout    time.Duration `yaml:"load_timeout" doc:"deadline for reading a checkpoint on /update_weights" check:">0"`
	BodyTimeout    time.Duration `yaml:"body_timeout" doc:"deadline for receiving a request body" check:">0"`
	WeightsRoot    string        `yaml:"weights_root" doc:"if set, /update_weights loads only from this directory tree (after symlinks); empty allows any"`
}

// Rollout holds the sampling side: endpoints, episodes and sampling parameters.
type Rollout struct {
	Endpoints         []string      `yaml:"endpoints" doc:"OpenAI-compatible base URLs (vLLM, SGLang, spa serve; spa run takes spa serve only); empty: spa run embeds a server" check:"httpurls"`
	Model             string        `yaml:"model" doc:"model name sent to the endpoint; empty follows the current policy version"`
	Mode              string        `yaml:"mode" doc:"token: token ids via /v1/completions (training); chat: /v1/chat/completions" check:"oneof=token chat"`
	Prompt            string        `yaml:"prompt" doc:"world-model (<observation>/<prediction> in <think>) or base" check:"oneof=world-model base"`
	Workers           int           `yaml:"workers" doc:"concurrent episodes" check:">=1"`
	Groups            int           `yaml:"groups" doc:"groups per batch; a group shares one seed" check:">=1"`
	GroupSize         int           `yaml:"group_size" doc:"episodes per group" check:">=1"`
	MaxTurns          int           `yaml:"max_turns" doc:"turns per episode" check:">=1"`
	MaxActionsPerTurn int           `yaml:"max_actions_per_turn" doc:"actions per turn, separated by ||" check:">=1"`
	MaxTokens         int           `yaml:"max_tokens" doc:"tokens generated per turn" check:">=1"`
	Temperature       float64       `yaml:"temperature" doc:"sampling temperature; 0 is greedy" check:">=0"`
	TopP              float64       `yaml:"top_p" doc:"nucleus sampling mass" check:"(0,1]"`
	TopK              int           `yaml:"top_k" doc:"sample from the k most likely tokens; 0 disables" check:">=0"`
	RequestTimeout    time.Duration `yaml:"request_timeout" doc:"timeout of one LLM request" check:">0"`
	Retries           int           `yaml:"retries" doc:"retries of a failed LLM request, with backoff" check:">=0"`
}

// Learner holds SFT and PPO settings.
type Learner struct {
	Device            string  `yaml:"device" doc:"torch device: cpu, cuda or cuda:N" check:"device"`
	MaxOffPolicySteps int     `yaml:"max_off_policy_steps" doc:"drop trajectories sampled by a policy this many versions old or older" check:">=1"`
	Beta1             float64 `yaml:"beta1" doc:"AdamW beta1" check:"[0,1)"`
	Beta2             float64 `yaml:"beta2" doc:"AdamW beta2" check:"[0,1)"`
	WeightDecay       float64 `yaml:"weight_decay" doc:"AdamW weight decay" check:">=0"`
	GradClip          float64 `yaml:"grad_clip" doc:"clip the global gradient norm; 0 disables" check:">=0"`
	MicroBatch        int     `yaml:"micro_batch" doc:"sequences per forward pass (gradient accumulation); 0 means a whole batch" check:">=0"`
	SaveDType         string  `yaml:"save_dtype" doc:"dtype of saved weights: float32 (exact resume) or bfloat16" check:"oneof=float32 bfloat16"`
	KeepCheckpoints   int     `yaml:"keep_checkpoints" doc:"older checkpoints kept besides the newest; 0 keeps all" check:">=0"`
	// AckWait is short because the learner keeps the batch it trains on alive; it is how long a
	// crashed learner's batch waits before another learner gets it.
	AckWait time.Duration `yaml:"ack_wait" doc:"how soon trajectories fetched by a learner that died are redelivered" check:">0"`
	// SyncPatience covers a server restarting mid-run: vLLM takes a minute or more to listen again.
	SyncPatience time.Duration `yaml:"sync_patience" doc:"how long a weight sync keeps retrying a server that gives no answer (down or restarting) before the step fails; 0 tries 3 times" check:">=0"`
	SFT          SFT           `yaml:"sft"`
	PPO          PPO           `yaml:"ppo"`
	LoRA         LoRA          `yaml:"lora"`
}

// SFT holds the world-model fine-tuning stage.
type SFT struct {
	LR          float64 `yaml:"lr" doc:"peak learning rate" check:">0"`
	Epochs      int     `yaml:"epochs" doc:"passes over the SFT data" check:">=1"`
	BatchSize   int     `yaml:"batch_size" doc:"samples per optimiser step" check:">=1"`
	WarmupRatio float64 `yaml:"warmup_ratio" doc:"share of steps with linear warmup, then cosine decay" check:"[0,1]"`
	MaxLength   int     `yaml:"max_length" doc:"longest sample in tokens; longer ones are dropped and counted" check:">=16"`
	MaskState   bool    `yaml:"mask_state" doc:"mask observation/prediction content from the loss (the public code's ablation)"`
}

// PPO holds the reinforcement-learning stage.
type PPO struct {
	Steps          int     `yaml:"steps" doc:"PPO steps" check:">=1"`
	ActorLR        float64 `yaml:"actor_lr" doc:"policy learning rate" check:">0"`
	CriticLR       float64 `yaml:"critic_lr" doc:"critic learning rate" check:">0"`
	ClipLow        float64 `yaml:"clip_low" doc:"ratio clip below 1" check:"[0,1)"`
	ClipHigh       float64 `yaml:"clip_high" doc:"ratio clip above 1" check:">=0"`
	DualClip       float64 `yaml:"dual_clip" doc:"dual-clip bound for negative advantages; 0 disables" check:"dualclip"`
	EntropyCoef    float64 `yaml:"entropy_coef" doc:"entropy bonus" check:">=0"`
	KLCoef         float64 `yaml:"kl_coef" doc:"KL penalty to the reference policy; 0 disables" check:">=0"`
	Gamma          float64 `yaml:"gamma" doc:"GAE discount" check:"[0,1]"`
	Lambda         float64 `yaml:"lambda" doc:"GAE lambda" check:"[0,1]"`
	ValueClip      float64 `yaml:"value_clip" doc:"critic value clip; 0 disables" check:">=0"`
	KeepGroupRatio float64 `yaml:"keep_group_ratio" doc:"keep this share of groups, highest in-group reward std first" check:"(0,1]"`
	MiniBatches    int     `yaml:"mini_batches" doc:"mini-batches per step" check:">=1"`
	Epochs         int     `yaml:"epochs" doc:"passes over each step's batch" check:">=1"`
	Advantage      string  `yaml:"advantage" doc:"gae, turn-gae (bi-level) or grpo (no critic)" check:"oneof=gae turn-gae grpo"`
	LossAgg        string  `yaml:"loss_agg" doc:"policy loss over tokens: token-mean (the paper's) or seq-mean-token-mean (each trajectory weighs the same)" check:"oneof=token-mean seq-mean-token-mean"`
	ValidateEvery  int     `yaml:"validate_every" doc:"validate every N steps; 0 disables" check:">=0"`
	GroupNorm      string  `yaml:"group_norm" doc:"grpo: divide centred group rewards by the group's std (verl's, n-1), population-std, or none (Dr.GRPO)" check:"oneof=std population-std none"`
	GroupFilter    string  `yaml:"group_filter" doc:"groups a step trains on: std (keep_group_ratio of them, highest reward std first; the paper's), success (groups with a solve) or none" check:"oneof=std success none"`
	RewardScale    float64 `yaml:"reward_scale" doc:"multiply rewards by this before advantages and returns; value_clip is in scaled units" check:">0"`
	CriticWarmup   int     `yaml:"critic_warmup" doc:"steps that train the critic alone before the actor starts (gae, turn-gae)" check:">=0"`
	CriticEpochs   int     `yaml:"critic_epochs" doc:"passes of the critic over each step's batch (gae, turn-gae); 0 uses epochs" check:">=0"`
	CompleteGroups bool    `yaml:"complete_groups" doc:"train only groups with all rollout.group_size episodes in the batch; drop and count the rest"`
	ShuffleRewards bool    `yaml:"shuffle_rewards" doc:"negative control: permute rewards within each group before training; a run that still improves has a bug"`
}

// LoRA holds low-rank adaptation settings.
type LoRA struct {
	Rank    int      `yaml:"rank" doc:"adapter rank; 0 trains all weights" check:">=0"`
	Alpha   float64  `yaml:"alpha" doc:"adapter scaling numerator (scale = alpha/rank)" check:">0"`
	Targets []string `yaml:"targets" doc:"modules that get adapters" check:"each=q_proj k_proj v_proj o_proj gate_proj up_proj down_proj"`
}

// Env holds which environment to play and how it is hosted.
type Env struct {
	Name       string        `yaml:"name" doc:"environment: sokoban, frozenlake, sudoku or one served on the bus" check:"nonempty"`
	Variant    string        `yaml:"variant" doc:"environment variant; empty is the environment's default"`
	Coords     bool          `yaml:"coords" doc:"render states with the coordinate line (state estimation)"`
	Replicas   int           `yaml:"replicas" doc:"env host replicas in this process" check:">=1"`
	SessionTTL time.Duration `yaml:"session_ttl" doc:"close sessions idle this long" check:">0"`
}

// Default returns the built-in defaults: the paper's hyperparameters (docs/method.md) where it gives them,
// and settings for the embedded single-process run elsewhere.
func Default() Config {
	return Config{
		Run: Run{
			Dir: "runs", Preset: "quick", Methods: []string{"spa"}, Seed: 1, Explore: "auto", SelfPlay: 1280,
			WarmupEpisodes: 1280, WarmupEpochs: 3, Filter: true, GroundTruth: true, ValPuzzles: 128, ValK: 8,
		},
		Bus: Bus{Timeout: 5 * time.Second},
		Server: Server{
			Listen: "127.0.0.1:8000", MaxBatch: 64, MaxModelLen: 4096, KVCacheMB: 1024, MaxVersions: 2,
			MaxWaiting: 4096, MaxRequestSeqs: 256, LoadTimeout: 5 * time.Minute, BodyTimeout: 30 * time.Second,
		},
		Rollout: Rollout{
			Mode: "token", Prompt: "world-model", Workers: 8, Groups: 32, GroupSize: 8,
			MaxTurns: 5, MaxActionsPerTurn: 5, MaxTokens: 256, Temperature: 1, TopP: 1,
			RequestTimeout: 60 * time.Second, Retries: 3,
		},
		Learner: Learner{
			Device: "cpu", MaxOffPolicySteps: 1, Beta1: 0.9, Beta2: 0.95, WeightDecay: 0.01, GradClip: 1,
			MicroBatch: 8, SaveDType: "float32", KeepCheckpoints: 2, AckWait: time.Minute, SyncPatience: 3 * time.Minute,
			SFT: SFT{LR: 1e-4, Epochs: 5, BatchSize: 16, WarmupRatio: 0.1, MaxLength: 2048},
			PPO: PPO{
				Steps: 1000, ActorLR: 1e-6, CriticLR: 1e-5, ClipLow: 0.2, ClipHigh: 0.28, DualClip: 3,
				EntropyCoef: 0.001, Gamma: 1, Lambda: 1, ValueClip: 0.5, KeepGroupRatio: 0.25,
				MiniBatches: 1, Epochs: 1, Advantage: "gae", LossAgg: "token-mean", ValidateEvery: 10,
				GroupNorm: "std", GroupFilter: "std", RewardScale: 1,
			},
			LoRA: LoRA{Alpha: 16, Targets: []string{"q_proj", "k_proj", "v_proj", "o_proj"}},
		},
		Env: Env{Name: "sokoban", Coords: true, Replicas: 1, SessionTTL: 5 * time.Minute},
	}
}
