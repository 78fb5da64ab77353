package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

func TestConnectAuth(t *testing.T) {
	userSrv, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "spa", Password: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	defer userSrv.Shutdown()
	tokenSrv, err := StartEmbedded(EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Token: "t0ken"})
	if err != nil {
		t.Fatal(err)
	}
	defer tokenSrv.Shutdown()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.creds")

	cases := []struct {
		name string
		opts Options
		want string // "" means success
	}{
		{"user ok", Options{URL: userSrv.ClientURL(), User: "spa", Password: "s3cret"}, ""},
		{"wrong password", Options{URL: userSrv.ClientURL(), User: "spa", Password: "nope"}, `rejected user "spa" and password (bus.user, bus.password)`},
		{"no credentials", Options{URL: userSrv.ClientURL()}, "rejected no credentials"},
		{"token ok", Options{URL: tokenSrv.ClientURL(), Token: "t0ken"}, ""},
		{"wrong token", Options{URL: tokenSrv.ClientURL(), Token: "other"}, "rejected token (bus.token)"},
		{"two forms", Options{URL: tokenSrv.ClientURL(), Token: "t0ken", User: "u", Password: "p"}, "one form of credentials"},
		{"missing creds file", Options{URL: tokenSrv.ClientURL(), CredsFile: missing}, "bus.creds_file"},
		{"cert without key", Options{URL: tokenSrv.ClientURL(), TLSCert: missing}, "bus.tls_key"},
		{"nobody there", Options{URL: "nats://" + freeAddr(t), Timeout: time.Second}, "no server answered"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			start := time.Now()
			nc, err := Connect(ctx, tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				if err := CheckRoundTrip(ctx, nc); err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("connected; want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("failing took %s; bad credentials must fail fast", time.Since(start))
			}
		})
	}
}

func TestEmbeddedAuthAppliesInProcess(t *testing.T) {
	ctx := testCtx(t)
	b, err := Open(ctx, Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := CheckRoundTrip(ctx, b.Conn); err != nil {
		t.Fatal(err)
	}
	if _, err := Connect(ctx, Options{URL: b.URL()}); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Errorf("TCP without the token: %v", err)
	}
}

func TestConnectTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, serverCert := makeCA(t, dir)
	srv, err := StartEmbedded(EmbeddedOptions{
		StoreDir: t.TempDir(), Listen: "127.0.0.1:0",
		TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	ctx := testCtx(t)

	nc, err := Connect(ctx, Options{URL: url, TLSCA: caFile})
	if err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if err := CheckRoundTrip(ctx, nc); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	if _, err := Connect(ctx, Options{URL: url}); err == nil || !strings.Contains(err.Error(), "TLS failed") {
		t.Errorf("without the CA: %v", err)
	}
}

// makeCA writes a CA certificate to dir and returns its path and a server certificate for
// 127.0.0.1 signed by it.
func makeCA(t *testing.T, dir string) (string, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "spa test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
}

func TestConnectNKey(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "user.nk"), filepath.Join(dir, "other.nk")
	os.WriteFile(good, seed, 0o600)
	os.WriteFile(bad, otherSeed, 0o600)

	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	defer srv.Shutdown()
	ctx := testCtx(t)
	nc, err := Connect(ctx, Options{URL: srv.ClientURL(), NKeyFile: good})
	if err != nil {
		t.Fatalf("with the right seed: %v", err)
	}
	nc.Close()
	if _, err := Connect(ctx, Options{URL: srv.ClientURL(), NKeyFile: bad}); err == nil || !strings.Contains(err.Error(), "rejected nkey seed "+bad+" (bus.nkey_file)") {
		t.Errorf("with another seed: %v", err)
	}
}
