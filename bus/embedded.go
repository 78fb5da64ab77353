// Package bus connects spa's processes over NATS: an embedded server with JetStream for the
// single-process default, or a URL to an existing server or cluster.
package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// EmbeddedOptions configure an embedded server.
type EmbeddedOptions struct {
	// StoreDir holds JetStream's file store. Required: an embedded server without durable storage
	// would lose trajectories on restart.
	StoreDir string
	// Listen is a host:port for TCP clients ("127.0.0.1:4222"; port 0 picks a free one). Empty
	// means in-process connections only.
	Listen string
	// ReadyTimeout bounds start-up; zero means 10 s.
	ReadyTimeout time.Duration
	// User and Password, or Token, make clients authenticate (at most one of the two forms).
	User, Password, Token string
	// TLS, when set, makes the TCP listener require TLS with this configuration.
	TLS *tls.Config
}

// Embedded is a NATS server with JetStream running inside this process.
type Embedded struct {
	srv  *server.Server
	opts EmbeddedOptions
}

// StartEmbedded starts a server and waits until it accepts connections.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("embedded nats: StoreDir is required")
	}
	// JetStream reports a bad store only by never becoming ready; check it here to fail fast.
	if err := os.MkdirAll(opts.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded nats: store: %w", err)
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 10 * time.Second
	}
	if opts.Token != "" && (opts.User != "" || opts.Password != "") {
		return nil, errors.New("embedded nats: set a token or a user and password, not both")
	}
	if (opts.User == "") != (opts.Password == "") {
		return nil, errors.New("embedded nats: a user needs a password and a password a user")
	}
	sopts := &server.Options{
		ServerName: "spa-embedded",
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		DontListen: opts.Listen == "",
		Username:   opts.User,
		Password:   opts.Password,
		// The server calls a token "authorization".
		Authorization: opts.Token,
	}
	if opts.TLS != nil {
		sopts.TLS, sopts.TLSConfig, sopts.TLSTimeout = true, opts.TLS, 5
	}
	if opts.Listen != "" {
		host, port, err := splitHostPort(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: listen %q: %w", opts.Listen, err)
		}
		sopts.Host, sopts.Port = host, port
		if port == 0 {
			sopts.Port = server.RANDOM_PORT
		}
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(opts.ReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after %s (store %s)", opts.ReadyTimeout, opts.StoreDir)
	}
	return &Embedded{srv: srv, opts: opts}, nil
}

// Connect opens an in-process client connection (no sockets), with the server's own credentials.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{nats.InProcessServer(e.srv), nats.Name("spa")}
	switch {
	case e.opts.Token != "":
		base = append(base, nats.Token(e.opts.Token))
	case e.opts.User != "":
		base = append(base, nats.UserInfo(e.opts.User, e.opts.Password))
	}
	opts = append(base, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the TCP URL for other processes, or "" when the server does not listen.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Version is the embedded server's version.
func (e *Embedded) Version() string { return server.VERSION }

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// CheckRoundTrip proves that core NATS and JetStream work on nc: a request/reply round trip, then
// a message stored in a throwaway file-backed stream and read back. Each check uses subjects and
// a stream of its own: checks on one server (spa doctor beside a run, or two in a row) must not
// meet, and re-creating a stream right after deleting it can fail while the server still removes
// the old one's files ("error creating store for stream", seen in CI).
func CheckRoundTrip(ctx context.Context, nc *nats.Conn) error {
	id := nuid.Next()
	echo := "spa.doctor." + id + ".echo"
	sub, err := nc.Subscribe(echo, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	reply, err := nc.RequestWithContext(ctx, echo, []byte("ping"))
	if err != nil {
		return fmt.Errorf("request/reply: %w", err)
	}
	if string(reply.Data) != "ping" {
		return fmt.Errorf("request/reply: got %q, want %q", reply.Data, "ping")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	stream, subject := "SPA_DOCTOR_"+id, "spa.doctor."+id+".js"
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{subject}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return fmt.Errorf("jetstream: create stream: %w", err)
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	ack, err := js.Publish(ctx, subject, []byte("stored"), jetstream.WithMsgID("doctor-1"))
	if err != nil {
		return fmt.Errorf("jetstream: publish: %w", err)
	}
	msg, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil {
		return fmt.Errorf("jetstream: read back: %w", err)
	}
	if string(msg.Data) != "stored" {
		return fmt.Errorf("jetstream: read back %q, want %q", msg.Data, "stored")
	}
	return nil
}
