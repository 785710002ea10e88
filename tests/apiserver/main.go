// Command apiserver starts an embedded etcd and a real kube-apiserver on
// 127.0.0.1 (free ports), writes a kubeconfig with a static admin token, prints
// "READY <kubeconfig>" and serves until its standard input closes or it gets
// SIGTERM. canopy's integration tests start one per simulated cluster.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiserver:", err)
		os.Exit(1)
	}
}

func main() {
	dir := flag.String("dir", "", "working folder (etcd data, certificates, kubeconfig)")
	token := flag.String("token", "canopy-test-token", "static bearer token of the admin user")
	allAPIs := flag.Bool("all-apis", false, "serve every API group and version this release has, alpha and beta included (for tests that compare canopy's knowledge of built-in kinds with the server's discovery)")
	flag.Parse()
	if *dir == "" {
		must(fmt.Errorf("--dir is required"))
	}
	must(os.MkdirAll(*dir, 0o700))

	// etcd, embedded, on loopback only. Its write-ahead log preallocates
	// 64 MB segments by default; a test server writes a few megabytes, and
	// a suite starts dozens of servers, so 4 MB segments keep the disk free.
	wal.SegmentSizeBytes = 4 * 1000 * 1000
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(*dir, "etcd")
	cfg.LogLevel = "error"
	clientURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort()))
	peerURL, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", freePort()))
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.Name + "=" + peerURL.String()
	etcd, err := embed.StartEtcd(cfg)
	must(err)
	defer etcd.Close()
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		must(fmt.Errorf("etcd did not start in 60s"))
	}

	// Service-account signing key and the static token file.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	keyFile := filepath.Join(*dir, "sa.key")
	must(os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	tokenFile := filepath.Join(*dir, "tokens.csv")
	must(os.WriteFile(tokenFile, []byte(*token+",admin,admin,system:masters\n"), 0o600))

	port := freePort()
	cmd := app.NewAPIServerCommand()
	args := []string{
		"--etcd-servers=" + clientURL.String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(*dir, "certs"),
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + keyFile,
		"--service-account-signing-key-file=" + keyFile,
		"--service-cluster-ip-range=10.96.0.0/24",
		"--enable-priority-and-fairness=false",
		"--v=0",
	}
	if *allAPIs {
		args = append(args, "--runtime-config=api/all=true", "--feature-gates=AllAlpha=true,AllBeta=true")
	}
	cmd.SetArgs(args)
	errc := make(chan error, 1)
	go func() { errc <- cmd.Execute() }()

	// Ready when /readyz answers 200 to the admin token.
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(120 * time.Second)
	for {
		select {
		case err := <-errc:
			must(fmt.Errorf("kube-apiserver exited: %v", err))
		default:
		}
		req, _ := http.NewRequest("GET", server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+*token)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			must(fmt.Errorf("kube-apiserver not ready after 120s"))
		}
		time.Sleep(200 * time.Millisecond)
	}

	kubeconfig := filepath.Join(*dir, "kubeconfig")
	must(os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, server, *token)), 0o600))
	fmt.Println("READY", kubeconfig)

	// Serve until stdin closes (the test process died) or a signal arrives.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() { io.Copy(io.Discard, os.Stdin); stop <- syscall.SIGTERM }()
	<-stop
	// Test data is thrown away: stop etcd at once instead of draining the
	// API server's watches (a graceful close takes seconds).
	etcd.Server.HardStop()
	// The folder is the test's: servers kept for a whole test binary (in a
	// static) are never dropped, so the harness removes it itself.
	os.RemoveAll(*dir)
	os.Exit(0)
}
