package testserver

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3InstallHint says how to get the S3 server the tests use.
const S3InstallHint = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or set BUILDCACHE_S3_BIN"

// S3Server is a running S3-compatible server (versitygw with POSIX
// storage) on 127.0.0.1, with static test credentials.
type S3Server struct {
	Endpoint  string // "http://127.0.0.1:port", for aws-sdk-go-v2's BaseEndpoint
	Region    string // "us-east-1"
	AccessKey string
	SecretKey string

	bin   string
	dir   string // one directory per bucket
	addr  string
	minio bool // MinIO, not versitygw: minio.go

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives cmd.Wait's result
	log    *LockedBuffer
}

// s3Binary finds an S3 server: $BUILDCACHE_S3_BIN, versitygw on PATH, or
// versitygw in $(go env GOPATH)/bin, where go install puts it.
func s3Binary() (string, error) {
	if p := os.Getenv("BUILDCACHE_S3_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", "versitygw")
			if info, err := os.Stat(p); err == nil && !info.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no S3 server found: %s", S3InstallHint)
}

// StartS3 starts versitygw with POSIX storage in a temp dir on a free port
// of 127.0.0.1 and waits until it answers. It is stopped when the test
// ends. Without the binary the test skips (fails under CI).
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin, err := s3Binary()
	if err != nil {
		unavailable(t, err)
	}
	return launchS3(t, bin, false)
}

// launchS3 starts the server bin (MinIO when minio) on a free port of
// 127.0.0.1 with its storage in a temp dir, waits until it answers, and
// stops it when the test ends.
func launchS3(t testing.TB, bin string, minio bool) *S3Server {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &S3Server{
		Region:    "us-east-1",
		AccessKey: "buildcache-test-key",
		SecretKey: "buildcache-test-secret-never-shown",
		bin:       bin,
		dir:       t.TempDir(),
		addr:      fmt.Sprintf("127.0.0.1:%d", port),
		minio:     minio,
	}
	s.Endpoint = "http://" + s.addr
	s.Start(t)
	t.Cleanup(s.Stop)
	return s
}

// Dir is the server's storage: a directory per bucket, a file per object.
func (s *S3Server) Dir() string { return s.dir }

// Start (re)starts the server on the same address and storage, and waits
// until it answers.
func (s *S3Server) Start(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		t.Fatal("testserver: S3 server started twice")
	}
	s.log = &LockedBuffer{}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--region", s.Region, "--quiet", "posix", s.dir)
	if s.minio {
		cmd = s.minioCommand()
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", s.bin, err)
	}
	s.cmd, s.exited = cmd, make(chan error, 1)
	go func(c chan<- error) { c <- cmd.Wait() }(s.exited)

	// Any HTTP answer means it serves; an anonymous request gets a 403.
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case werr := <-s.exited:
			s.cmd = nil
			t.Fatalf("%s exited before answering on %s: %v\n%s", s.bin, s.addr, werr, s.log)
		default:
		}
		if time.Now().After(deadline) {
			s.stopLocked()
			t.Fatalf("S3 server on %s did not become ready: %v\n%s", s.addr, err, s.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: no graceful shutdown, as a crash would);
// Start brings it back with the same content.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *S3Server) stopLocked() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Log is what the server printed since it was last started.
func (s *S3Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Client returns an S3 client for the server: BaseEndpoint, path-style
// addressing, the static test credentials, region us-east-1, and retries
// with short back-offs so that tests of a stopped server do not wait
// seconds. opts adjust it further.
func (s *S3Server) Client(opts ...func(*s3.Options)) *s3.Client {
	o := s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxBackoff = 50 * time.Millisecond
		}),
	}
	return s3.New(o, opts...)
}

var bucketSeq atomic.Uint64

// NewBucket creates a bucket with a fresh name and returns the name. The
// bucket lives as long as the server.
func (s *S3Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test-%d-%d", os.Getpid(), bucketSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("creating bucket %s on %s: %v\n%s", name, s.Endpoint, err, s.Log())
	}
	return name
}

// LockedBuffer is a bytes.Buffer that several goroutines (a server's
// output copiers, a client's progress writer) and a test may use at once.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
