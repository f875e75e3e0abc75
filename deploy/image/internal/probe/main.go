// Command probe is what the image test (deploy/image) runs inside the
// buildcache image under runc, where there is no shell and no curl: it
// starts the image's entry point as `serve` on a loopback port, waits for
// the "listening" record, asks /healthz, /readyz and /v2/ (plain
// net/http), then stops the server with SIGTERM and checks that it exits
// cleanly. It prints one line per check and exits 1 on the first failure.
//
//	probe /usr/bin/buildcache serve --listen 127.0.0.1:0 --upstream … --cache file:///cache
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Println("probe: FAIL:", err)
		os.Exit(1)
	}
	fmt.Println("probe: ok")
}

// listening matches serve's first log record, text or JSON.
var listening = regexp.MustCompile(`msg="?listening"?.*?addr"?[=:]"?([0-9.]+:[0-9]+)`)

func run(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: probe BINARY serve ARGS…")
	}
	fmt.Printf("probe: uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	n, err := caCerts("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return err
	}
	fmt.Printf("probe: CA bundle: %d certificates\n", n)

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout = os.Stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Println("serve:", line)
			if m := listening.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	var a string
	select {
	case a = <-addr:
	case err := <-exited:
		return fmt.Errorf("serve exited before listening: %v", err)
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		return fmt.Errorf("serve did not say it was listening within 2 minutes")
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	for _, path := range []string{"/healthz", "/readyz", "/v2/"} {
		resp, err := hc.Get("http://" + a + path)
		if err != nil {
			cmd.Process.Kill()
			return fmt.Errorf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		fmt.Printf("probe: GET %s: %d %q\n", path, resp.StatusCode, strings.TrimSpace(string(body)))
		if resp.StatusCode != http.StatusOK {
			cmd.Process.Kill()
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("serve after SIGTERM: %v", err)
		}
		fmt.Println("probe: serve exited 0 after SIGTERM")
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		return fmt.Errorf("serve still running a minute after SIGTERM")
	}
	return nil
}

// caCerts counts the certificates of the PEM bundle at path that parse,
// the path where Go's crypto/x509 looks first on Linux.
func caCerts(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("CA bundle: %v", err)
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("CA bundle %s holds no certificate", path)
	}
	return n, nil
}
