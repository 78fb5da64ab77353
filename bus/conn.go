package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options say how to reach NATS. An empty URL means an embedded server; the auth fields then
// configure what that server requires, so in-process and TCP clients use the same settings.
type Options struct {
	// URL is one server or a comma-separated cluster list ("nats://a:4222,nats://b:4222").
	URL string
	// Name identifies this client in the server's monitoring ("spa-rollout").
	Name string
	// Auth, at most one form: User+Password, Token, CredsFile (a .creds JWT+seed file) or NKeyFile
	// (an NKey seed). TLS: TLSCA verifies the server; TLSCert+TLSKey present a client certificate.
	User, Password, Token, CredsFile, NKeyFile string
	TLSCA, TLSCert, TLSKey                     string
	// Timeout bounds connecting and each request made by this package; zero means 10 s.
	Timeout time.Duration

	// StoreDir, Listen: the embedded server's JetStream store and optional TCP address. Used only
	// when URL is empty.
	StoreDir, Listen string
}

func (o Options) timeout() time.Duration {
	if o.Timeout <= 0 {
		return 10 * time.Second
	}
	return o.Timeout
}

// authMethod names the credentials in use, for error messages that tell the user what to fix.
func (o Options) authMethod() string {
	switch {
	case o.CredsFile != "":
		return "creds file " + o.CredsFile + " (bus.creds_file)"
	case o.NKeyFile != "":
		return "nkey seed " + o.NKeyFile + " (bus.nkey_file)"
	case o.Token != "":
		return "token (bus.token)"
	case o.User != "":
		return fmt.Sprintf("user %q and password (bus.user, bus.password)", o.User)
	}
	return "no credentials (set bus.user and bus.password, bus.token, bus.creds_file or bus.nkey_file)"
}

func (o Options) check() error {
	forms := 0
	for _, set := range []bool{o.User != "" || o.Password != "", o.Token != "", o.CredsFile != "", o.NKeyFile != ""} {
		if set {
			forms++
		}
	}
	if forms > 1 {
		return errors.New("bus: set one form of credentials: user+password, token, creds file or nkey file")
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("bus: a TLS client certificate needs both bus.tls_cert and bus.tls_key")
	}
	for _, f := range []struct{ key, path string }{
		{"bus.creds_file", o.CredsFile}, {"bus.nkey_file", o.NKeyFile}, {"bus.tls_ca", o.TLSCA},
		{"bus.tls_cert", o.TLSCert}, {"bus.tls_key", o.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("bus: %s: %w", f.key, err)
		}
	}
	return nil
}

// natsOptions translates the options; reconnects are unlimited because a restarted server must
// not end a run, and the publisher and requests carry their own deadlines.
func (o Options) natsOptions() ([]nats.Option, error) {
	name := o.Name
	if name == "" {
		name = "spa"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(o.timeout()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
	}
	switch {
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.NKeyFile != "":
		nk, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("bus: nkey seed %s: %w", o.NKeyFile, err)
		}
		opts = append(opts, nk)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// Connect dials the NATS server or cluster at opts.URL. Errors name the URL and, for rejected
// credentials, the credentials that were tried.
func Connect(ctx context.Context, opts Options) (*nats.Conn, error) {
	if strings.TrimSpace(opts.URL) == "" {
		return nil, errors.New("bus: no URL to connect to")
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	nopts, err := opts.natsOptions()
	if err != nil {
		return nil, err
	}
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(opts.URL, nopts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, explainConnectError(opts, r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("connect to nats %s: %w", opts.URL, ctx.Err())
	}
}

func explainConnectError(opts Options, err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), strings.Contains(strings.ToLower(msg), "authorization violation"):
		return fmt.Errorf("connect to nats %s: the server rejected %s: %w", opts.URL, opts.authMethod(), err)
	case strings.Contains(msg, "x509") || strings.Contains(msg, "tls:"):
		return fmt.Errorf("connect to nats %s: TLS failed (check bus.tls_ca, bus.tls_cert, bus.tls_key and the URL's host name): %w", opts.URL, err)
	case strings.Contains(msg, "secure connection") || errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Errorf("connect to nats %s: the server requires TLS (set bus.tls_ca, or use a tls:// URL): %w", opts.URL, err)
	case errors.Is(err, nats.ErrNoServers):
		return fmt.Errorf("connect to nats %s: no server answered (is it running, and is the address right?): %w", opts.URL, err)
	}
	return fmt.Errorf("connect to nats %s: %w", opts.URL, err)
}

// Bus is a connection to NATS with JetStream, and the embedded server behind it when there is one.
type Bus struct {
	Conn *nats.Conn
	JS   jetstream.JetStream
	// Embedded is the in-process server, or nil when connected to an external one.
	Embedded *Embedded
	timeout  time.Duration
}

// Open connects to opts.URL, or starts an embedded server in opts.StoreDir when URL is empty.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	b := &Bus{timeout: opts.timeout()}
	var err error
	if strings.TrimSpace(opts.URL) == "" {
		if opts.CredsFile != "" || opts.NKeyFile != "" || opts.TLSCA != "" || opts.TLSCert != "" {
			return nil, errors.New("bus: the embedded server supports user/password and token auth only; use an external server for creds, nkeys or TLS")
		}
		if opts.StoreDir == "" {
			return nil, errors.New("bus: no URL and no store directory for an embedded server")
		}
		b.Embedded, err = StartEmbedded(EmbeddedOptions{
			StoreDir: opts.StoreDir, Listen: opts.Listen, ReadyTimeout: opts.timeout(),
			User: opts.User, Password: opts.Password, Token: opts.Token,
		})
		if err != nil {
			return nil, err
		}
		nopts, _ := Options{Name: opts.Name, Timeout: opts.Timeout}.natsOptions()
		b.Conn, err = b.Embedded.Connect(nopts...)
		if err != nil {
			b.Embedded.Shutdown()
			return nil, err
		}
	} else if b.Conn, err = Connect(ctx, opts); err != nil {
		return nil, err
	}
	b.JS, err = jetstream.New(b.Conn, jetstream.WithDefaultTimeout(b.timeout))
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: JetStream is not available on %s (start the server with -js, or use spa bus): %w", opts.URL, err)
	}
	return b, nil
}

// FromConn wraps an open connection; Close will close it.
func FromConn(ctx context.Context, nc *nats.Conn) (*Bus, error) {
	b := &Bus{Conn: nc, timeout: 10 * time.Second}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(b.timeout))
	if err != nil {
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	if _, err := js.AccountInfo(ctx); err != nil {
		return nil, fmt.Errorf("bus: JetStream is not available on %s: %w", nc.ConnectedUrlRedacted(), err)
	}
	b.JS = js
	return b, nil
}

// URL is the address other processes use to reach this bus, or "" for an in-process-only server.
func (b *Bus) URL() string {
	if b.Embedded != nil {
		return b.Embedded.ClientURL()
	}
	return b.Conn.ConnectedUrlRedacted()
}

// Timeout is the per-request deadline callers should use for bus operations.
func (b *Bus) Timeout() time.Duration { return b.timeout }

// Close drains the connection and stops the embedded server, if any.
func (b *Bus) Close() {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		// Drain is asynchronous; wait (bounded) so that a following Shutdown loses nothing.
		deadline := time.Now().Add(b.timeout)
		for !b.Conn.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		b.Conn.Close()
	}
	if b.Embedded != nil {
		b.Embedded.Shutdown()
	}
}

// DefaultStoreDir is the embedded server's store inside a run directory.
func DefaultStoreDir(runDir string) string { return filepath.Join(runDir, "nats") }
