// Package helm holds the tests of the Helm chart in buildcache/: helm
// lint, and the chart rendered with helm template for both shapes
// (cluster, node) and the value sets of testdata/, every object dry-run
// against a real kube-apiserver (so the API's own schemas and admission,
// Pod Security included, validate every field), and the objects checked
// to wire together: selectors and pod labels, Service ports and container
// ports, probes and the port served, Secrets and volumes and what
// references them, node-config and the mirror it waits for.
//
// The tests need helm (go install helm.sh/helm/v4/cmd/helm@v4.3.2;
// scripts/test builds it) and etcd and kube-apiserver
// (internal/testserver.SharedKube); without them they skip, and under CI
// they fail.
package helm
