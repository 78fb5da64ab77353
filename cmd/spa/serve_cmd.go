package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/spa-rl/spa/harness"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
	"github.com/spa-rl/spa/model"
)

func newServeCmd() *cobra.Command {
	var modelDir, listen, name, device string
	cmd := &cobra.Command{
		Use:   "serve --model DIR [--listen ADDR]",
		Short: "Serve a checkpoint with the OpenAI API as vLLM serves it",
		Long: `Serve a Hugging Face checkpoint over HTTP with the OpenAI API as vLLM serves it:
/v1/models, /v1/completions and /v1/chat/completions (streaming, n, logprobs, token-id prompts,
return_token_ids and vLLM's other extensions), with continuous batching on this machine.

The checkpoint is version 0, named <name>-v0; <name> always means the latest version.
POST /update_weights {"weight_dir": DIR, "version": N} loads a new version while serving; requests
already running finish on the weights they started with. /pause and /resume stop and restart
scheduling; /health and /metrics (Prometheus) are for operators.

It binds 127.0.0.1 unless --listen names another address. server.api_key requires a bearer token
on /v1; server.admin_key (default: the API key) guards the weight and pause endpoints. Ctrl-C or
SIGTERM stops it gracefully: it stops accepting, finishes the responses in flight, then exits.`,
		Args: cobra.NoArgs,
	}
	cf := addConfigFlags(cmd)
	cmd.Flags().StringVar(&modelDir, "model", "", "checkpoint directory (server.model_dir)")
	cmd.Flags().StringVar(&listen, "listen", "", "host:port (server.listen, default 127.0.0.1:8000)")
	cmd.Flags().StringVar(&name, "served-model-name", "spa", "name that always means the latest version")
	cmd.Flags().StringVar(&device, "device", "cpu", "cpu, cuda or cuda:N")
	cf.keyFlag("api-key", "server.api_key", "bearer token required on /v1 (clients: OPENAI_API_KEY)")
	cf.keyFlag("admin-key", "server.admin_key", "bearer token required on the weight and pause endpoints (default: the API key)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := cf.load()
		if err != nil {
			return err
		}
		if modelDir == "" {
			modelDir = cfg.Server.ModelDir
		}
		if modelDir == "" {
			return errors.New("pass --model DIR (a checkpoint, e.g. from 'spa model init')")
		}
		if listen == "" {
			listen = cfg.Server.Listen
		}
		dev, err := model.ParseDevice(device)
		if err != nil {
			return err
		}
		ctx, stop := signalContext(cmd.Context())
		defer stop()
		eopts, sopts := harness.ServerOptions(cfg.Server)
		eopts.Name, eopts.Device = name, dev
		srv, err := inference.Open(ctx, modelDir, eopts, sopts)
		if err != nil {
			return err
		}
		defer srv.Close()
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", listen, err)
		}
		hs := api.NewHTTPServer(srv)
		errc := make(chan error, 1)
		go func() { errc <- hs.Serve(ln) }()
		v := srv.Engine().Versions()[0]
		fmt.Fprintf(cmd.OutOrStdout(), "spa serve: %s as %s (and %s) on http://%s/v1, %d sequences at once, max_model_len %d\n",
			modelDir, v.Name, name, ln.Addr(), v.Slots, srv.Engine().MaxModelLen())
		warnExposed(cmd.ErrOrStderr(), "spa serve", listen, cfg.Server.APIKey != "",
			"Set server.api_key and server.admin_key (SPA_SERVER_API_KEY, SPA_SERVER_ADMIN_KEY), or bind 127.0.0.1.")
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		fmt.Fprintln(cmd.OutOrStdout(), "spa serve: stopping")
		shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return hs.Shutdown(shutdown)
	}
	return cmd
}
