package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/model"
	"github.com/spa-rl/spa/model/chat"
	"github.com/spa-rl/spa/model/domain"
	"github.com/spa-rl/spa/model/tokenizer"
	"github.com/spa-rl/spa/torchrt"
)

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "model",
		Short: "Make and inspect Hugging Face checkpoints of the policy model",
	}
	cmd.AddCommand(newModelInitCmd(), newModelInfoCmd())
	return cmd
}

func newModelInitCmd() *cobra.Command {
	var preset, out, dtype, tokDir string
	var vocab, corpusSeeds, layers int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "init --preset tiny|small|qwen2.5-0.5b --out DIR [--tokenizer DIR] [--layers N]",
		Short: "Write a randomly initialised checkpoint with the domain tokenizer or a given one",
		Long: `Write a Hugging Face checkpoint of a Qwen2 model, randomly initialised: config.json,
generation_config.json, model.safetensors, tokenizer.json and tokenizer_config.json. transformers
and vLLM load the directory as a Qwen2ForCausalLM.

The tokenizer is spa's domain tokenizer (byte-level BPE trained on the environments' text, ChatML
and SPA tags as single tokens), or with --tokenizer DIR a Hugging Face tokenizer (tokenizer.json
and tokenizer_config.json with its chat template), copied.

Presets: tiny (hidden 128, 4 layers, 4 heads with 2 KV heads; trains at useful speed on 2 CPU
cores), small (hidden 384, 8 layers) and qwen2.5-0.5b (Qwen2.5-0.5B's exact shapes: hidden 896,
24 layers, 14 heads with 2 KV heads, 151,936 vocabulary rows, 494M parameters; it needs
--tokenizer with a Qwen2.5 tokenizer, and stands in for the real weights where they cannot be
downloaded, to check a pipeline at full size). --layers changes the preset's number of layers,
for a model that costs less where its size does not matter (tests of the plumbing).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("pass --out DIR")
			}
			if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
				return fmt.Errorf("%s is not empty; spa model init will not overwrite a checkpoint", out)
			}
			if strings.HasPrefix(preset, "qwen") && tokDir == "" {
				return fmt.Errorf("--preset %s needs --tokenizer DIR: its vocabulary is Qwen's (tokenizer.json and tokenizer_config.json of a Qwen2.5 checkpoint)", preset)
			}
			if _, err := model.Preset(preset, vocab); err != nil {
				return err
			}
			if layers < 0 {
				return fmt.Errorf("--layers %d: want a positive number of layers, or 0 for the preset's", layers)
			}
			var adjust func(*model.Config)
			if layers > 0 {
				adjust = func(c *model.Config) {
					c.NumHiddenLayers = layers
					c.MaxWindowLayers = min(c.MaxWindowLayers, layers)
				}
			}
			if tokDir != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "initialising the %s preset with the tokenizer of %s...\n", preset, tokDir)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "training the domain tokenizer (%d tokens)...\n", vocab)
			}
			var cfg model.Config
			var params int64
			err := onTorchThread(func() (err error) {
				cfg, params, err = model.Init(out, model.InitOptions{Preset: preset, Tokenizer: domain.Options{VocabSize: vocab, Seeds: corpusSeeds},
					TokenizerDir: tokDir, Seed: seed, DType: dtype, Adjust: adjust})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: Qwen2 %s preset, %d layers, %s parameters, vocabulary %d, %s\n", out, preset, cfg.NumHiddenLayers, humanCount(params), cfg.VocabSize, dtype)
			return nil
		},
	}
	cmd.Flags().StringVar(&preset, "preset", "tiny", strings.Join(model.Presets, ", "))
	cmd.Flags().StringVar(&out, "out", "", "checkpoint directory to create")
	cmd.Flags().StringVar(&tokDir, "tokenizer", "", "a Hugging Face tokenizer directory to use instead of the domain tokenizer")
	cmd.Flags().IntVar(&vocab, "vocab", 1024, "domain tokenizer size, added tokens included")
	cmd.Flags().IntVar(&corpusSeeds, "corpus-seeds", 200, "episodes per environment variant in the tokenizer's training text")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "initialisation seed")
	cmd.Flags().IntVar(&layers, "layers", 0, "hidden layers; 0 keeps the preset's")
	cmd.Flags().StringVar(&dtype, "dtype", "float32", "float32 or bfloat16")
	return cmd
}

// onTorchThread runs torch work on a locked OS thread.
func onTorchThread(fn func() error) error {
	ex := torchrt.NewExecutor()
	defer ex.Close()
	return ex.Do(context.Background(), fn)
}

func newModelInfoCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "info DIR",
		Short: "Print a checkpoint's architecture, parameter count, tokenizer and chat template",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			// ReadCheckpoint checks the weights against config.json, so what is printed is what
			// would load.
			ck, err := model.ReadCheckpoint(dir)
			if err != nil {
				return err
			}
			cfg, params := ck.Config, ck.Params
			var n int64
			for _, p := range params {
				n += int64(len(p.Data))
			}
			info := map[string]any{"config": cfg, "parameters": n, "tensors": len(params)}
			tokInfo, tmplInfo := "none", "none"
			if tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json")); err == nil {
				tokInfo = fmt.Sprintf("byte-level BPE, %d ids (%d added)", tok.VocabSize(), len(tok.Added()))
				info["tokenizer_vocab"] = tok.VocabSize()
			} else if !os.IsNotExist(errors.Unwrap(err)) {
				tokInfo = "unreadable: " + err.Error()
			}
			if t, err := chat.Load(filepath.Join(dir, "tokenizer_config.json")); err == nil {
				tmplInfo = string(t.Family)
				info["chat_template"] = t.Family
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(info)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "architecture\t%v (%s)\n", cfg.Architectures, cfg.ModelType)
			fmt.Fprintf(tw, "parameters\t%s (%d tensors, stored %s)\n", humanCount(n), len(params), cfg.TorchDType)
			fmt.Fprintf(tw, "layers\t%d, hidden %d, MLP %d\n", cfg.NumHiddenLayers, cfg.HiddenSize, cfg.IntermediateSize)
			fmt.Fprintf(tw, "attention\t%d heads of %d, %d KV heads, RoPE theta %g\n", cfg.NumAttentionHeads, cfg.HeadDim(), cfg.NumKeyValueHeads, cfg.RopeTheta)
			fmt.Fprintf(tw, "vocabulary\t%d, tied embeddings %v, max positions %d\n", cfg.VocabSize, cfg.TieWordEmbeddings, cfg.MaxPositionEmbeddings)
			_, critic := params["score.weight"]
			fmt.Fprintf(tw, "value head\t%v\n", critic)
			fmt.Fprintf(tw, "tokenizer\t%s\n", tokInfo)
			fmt.Fprintf(tw, "chat template\t%s\n", tmplInfo)
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
