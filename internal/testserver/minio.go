package testserver

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// MinIOInstallHint says how to get MinIO, which no test needs but the
// fleet test runs on by hand (BUILDCACHE_S3_SERVER=minio).
const MinIOInstallHint = "nice -n 19 go install github.com/minio/minio@latest, or set BUILDCACHE_MINIO_BIN"

// StartS3Server starts the S3 server $BUILDCACHE_S3_SERVER names:
// "minio" for MinIO, anything else (the default) for versitygw. Tests
// that are to be run on both by hand use it.
func StartS3Server(t testing.TB) *S3Server {
	t.Helper()
	if os.Getenv("BUILDCACHE_S3_SERVER") == "minio" {
		return StartMinIO(t)
	}
	return StartS3(t)
}

// StartMinIO starts MinIO with its storage in a temp dir on a free port
// of 127.0.0.1 (its console on another) and waits until it answers. It
// is stopped when the test ends. Dir is MinIO's own format, not a file
// per object.
func StartMinIO(t testing.TB) *S3Server {
	t.Helper()
	bin := os.Getenv("BUILDCACHE_MINIO_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("minio"); err != nil {
			if gobin := goBin(); gobin != "" {
				bin = gobin + "/minio"
			}
		}
	}
	if _, err := os.Stat(bin); bin == "" || err != nil {
		unavailable(t, fmt.Errorf("no MinIO found: %s", MinIOInstallHint))
	}
	return launchS3(t, bin, true)
}

func (s *S3Server) minioCommand() *exec.Cmd {
	console, err := freePort()
	if err != nil {
		console = 0
	}
	cmd := exec.Command(s.bin, "server", "--address", s.addr, "--console-address", fmt.Sprintf("127.0.0.1:%d", console), "--quiet", s.dir)
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_REGION="+s.Region)
	return cmd
}

// goBin is $(go env GOPATH)/bin, or "".
func goBin() string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	return string(out[:len(out)-1]) + "/bin"
}

// Kind is "minio" or "versitygw".
func (s *S3Server) Kind() string {
	if s.minio {
		return "minio"
	}
	return "versitygw"
}
