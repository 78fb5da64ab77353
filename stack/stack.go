// Package stack assembles spa's running parts in one process: a bus (embedded, or a NATS URL)
// with the trajectory stream, the policy KV and a publisher; in-process hosts that serve an
// environment on the bus; and an inference server on a loopback listener. spa run, spa bench
// soak, spa rollout and the tests start what they need from it and close it all in one call.
package stack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spa-rl/spa/bus"
	"github.com/spa-rl/spa/envs"
	"github.com/spa-rl/spa/envs/busenv"
	"github.com/spa-rl/spa/inference"
	"github.com/spa-rl/spa/inference/api"
)

// Options say what to start besides the bus.
type Options struct {
	Bus bus.Options
	// Env, when it names a built-in environment, is served on the bus by Replicas in-process
	// hosts (at least one). Another name is left to hosts elsewhere on the bus; empty starts none.
	Env        string
	Replicas   int
	SessionTTL time.Duration
}

// Stack is what Start and Serve started. Its fields are set for the parts that run.
type Stack struct {
	Bus       *bus.Bus
	Policies  *bus.Policies
	Publisher *bus.Publisher
	Hosts     []*busenv.Host
	// Server and BaseURL (…/v1 on 127.0.0.1) are set by Serve.
	Server  *inference.Server
	BaseURL string

	httpSrv *http.Server
	once    sync.Once
}

// Start opens the bus, makes sure the trajectory stream exists, opens the policy KV and a
// publisher, and starts the environment's hosts. On an error it closes what it started.
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	s = &Stack{}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	if s.Bus, err = bus.Open(ctx, o.Bus); err != nil {
		return s, err
	}
	if _, err = bus.EnsureTrajStream(ctx, s.Bus.JS, bus.StreamOptions{}); err != nil {
		return s, err
	}
	if s.Policies, err = bus.OpenPolicies(ctx, s.Bus); err != nil {
		return s, err
	}
	if s.Publisher, err = bus.NewPublisher(s.Bus.Conn, bus.PublisherOptions{}); err != nil {
		return s, err
	}
	if o.Env == "" {
		return s, nil
	}
	if !slices.Contains(envs.Names(), strings.ToLower(o.Env)) {
		return s, nil // not built in: served on the bus by someone else
	}
	for range max(o.Replicas, 1) {
		h, err := busenv.NewHost(s.Bus.Conn, busenv.HostOptions{Env: o.Env, SessionTTL: o.SessionTTL,
			New: func(v string) (envs.Env, error) { return envs.New(o.Env, v) }})
		if err != nil {
			return s, fmt.Errorf("host %s: %w", o.Env, err)
		}
		s.Hosts = append(s.Hosts, h)
	}
	return s, nil
}

// Serve starts an inference server on the checkpoint in dir and serves its OpenAI API on a
// loopback port (BaseURL).
func (s *Stack) Serve(ctx context.Context, dir string, eo inference.Options, so api.Options) error {
	srv, err := inference.Open(ctx, dir, eo, so)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return err
	}
	s.Server, s.httpSrv = srv, api.NewHTTPServer(srv)
	go func() { _ = s.httpSrv.Serve(l) }()
	s.BaseURL = "http://" + l.Addr().String() + "/v1"
	return nil
}

// Close stops everything that runs, the listener first and the bus last, waiting a bounded time
// for in-flight requests and unacknowledged publishes. Later calls do nothing.
func (s *Stack) Close() {
	if s == nil {
		return
	}
	s.once.Do(s.close)
}

func (s *Stack) close() {
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.httpSrv.Shutdown(ctx)
		cancel()
	}
	if s.Server != nil {
		s.Server.Close()
	}
	if s.Publisher != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = s.Publisher.Close(ctx)
		cancel()
	}
	for _, h := range s.Hosts {
		h.Close()
	}
	if s.Bus != nil {
		s.Bus.Close()
	}
}
