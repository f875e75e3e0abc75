// Package fleettest holds the test of a fleet over one bucket with real
// processes (issue 21): versitygw, a docker-registry upstream behind a
// request counter, three `buildcache serve` replicas and two `buildcache
// warm` runners, each with its own near directory, on one bucket, and
// collectors (`buildcache gc`) looping with a small byte budget, while
// one replica is killed in the middle of a pull and the upstream is
// stopped for a while. It prints the figures the closing note of the
// issue gives. BUILDCACHE_S3_SERVER=minio runs it on MinIO instead;
// BUILDCACHE_BIN runs a buildcache binary already built.
package fleettest
