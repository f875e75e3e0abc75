package helm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/buildcache/buildcache/internal/testserver"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testserver.StopSharedKube()
	os.Exit(code)
}

// chart is the chart under test, relative to this package.
const chart = "buildcache"

// kubeVersion is what helm template renders for: the kube-apiserver the
// dry-runs go to (internal/testserver, scripts/test).
const kubeVersion = "v1.36.3"

// helmBinary finds helm: $BUILDCACHE_HELM_BIN, PATH, or
// $(go env GOPATH)/bin where scripts/test builds it. Without it the test
// skips, or fails under CI.
func helmBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BUILDCACHE_HELM_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "helm")
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
				return p
			}
		}
	}
	msg := "no helm found: go install helm.sh/helm/v4/cmd/helm@v4.3.2 (scripts/test builds it), or set BUILDCACHE_HELM_BIN"
	if os.Getenv("CI") != "" {
		t.Fatal("CI: " + msg)
	}
	t.Skip("skipping: " + msg)
	return ""
}

// runHelm runs helm with its state in temp dirs (nothing read from or
// written to the user's helm config), returning stdout, and stderr in
// the error.
func runHelm(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := helmBinary(t)
	home := t.TempDir()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "kubeconfig"), // none: template and lint need no cluster
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// secret is a Secret a value set names, created in its namespace before
// the dry-run, so that every reference the chart makes can be checked
// against what exists.
type secret struct {
	name string
	typ  string // corev1.SecretType
	keys []string
}

// valueSet is one install of the chart the tests render and dry-run.
type valueSet struct {
	name    string // the subtest; testdata/<file>
	file    string // "": the chart's defaults
	mode    string // cluster or node
	kinds   []string
	secrets []secret
	image   string
	near    string // the near tier's URL, decoded
	far     string // the far tier's URL, decoded; "": no tier
	// node mode
	hostsDir    string // on the node
	hostNetwork bool
}

var valueSets = []valueSet{
	{
		name:  "cluster-defaults",
		mode:  "cluster",
		kinds: []string{"Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"},
		image: "ghcr.io/buildcache/buildcache:0.1.0",
		near:  "file:///cache?max_bytes=16GiB",
	},
	{
		name:  "cluster-s3",
		file:  "testdata/cluster-s3.yaml",
		mode:  "cluster",
		kinds: []string{"Deployment", "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor"},
		secrets: []secret{
			{"regcred", "kubernetes.io/dockerconfigjson", []string{".dockerconfigjson"}},
			{"upstream-creds", "kubernetes.io/dockerconfigjson", []string{".dockerconfigjson"}},
			{"s3-creds", "Opaque", []string{"access-key", "secret-key", "session-token"}},
			{"mirror-tls", "kubernetes.io/tls", []string{"tls.crt", "tls.key"}},
			{"mirror-htpasswd", "Opaque", []string{"htpasswd"}},
			{"mirror-token", "Opaque", []string{"ci-token"}},
		},
		image: "registry.example/buildcache@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		near:  "file:///cache?max_bytes=40GiB&min_free_bytes=2GiB",
		far:   "s3://build-cache/mirror/prod?region=eu-west-1&endpoint=https%3A%2F%2Fminio.storage.svc%3A9000&use_path_style=true&timeout=15s",
	},
	{
		name:    "cluster-pvc",
		file:    "testdata/cluster-pvc.yaml",
		mode:    "cluster",
		kinds:   []string{"Deployment", "Service"},
		secrets: []secret{{"mirror-token", "Opaque", []string{"token"}}},
		image:   "ghcr.io/buildcache/buildcache:v0.1.0-rc.1",
		near:    "file:///cache",
	},
	{
		name:        "node-defaults",
		file:        "testdata/node.yaml",
		mode:        "node",
		kinds:       []string{"DaemonSet", "ServiceAccount"},
		image:       "ghcr.io/buildcache/buildcache:0.1.0",
		near:        "file:///cache?max_bytes=16GiB",
		hostsDir:    "/etc/containerd/certs.d",
		hostNetwork: true,
	},
	{
		name:     "node-hostport",
		file:     "testdata/node-hostport.yaml",
		mode:     "node",
		kinds:    []string{"DaemonSet", "Service", "ServiceAccount", "ServiceMonitor"},
		image:    "ghcr.io/buildcache/buildcache:0.1.0",
		near:     "file:///cache?max_bytes=30GiB",
		hostsDir: "/etc/containerd/certs.d",
	},
	{
		name:        "node-s3",
		file:        "testdata/node-s3.yaml",
		mode:        "node",
		kinds:       []string{"DaemonSet", "ServiceAccount"},
		image:       "ghcr.io/buildcache/buildcache:0.1.0",
		near:        "file:///cache?max_bytes=16GiB",
		far:         "s3://fleet-cache?region=us-east-2",
		hostsDir:    "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
		hostNetwork: true,
	},
}

// render runs helm template for vs in namespace ns and decodes every
// object.
func render(t *testing.T, vs valueSet, ns string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	args := []string{"template", "rel", chart, "--namespace", ns, "--kube-version", kubeVersion}
	if vs.file != "" {
		args = append(args, "-f", vs.file)
	}
	out, err := runHelm(t, append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, out)
}

func decode(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decoding helm template's output: %v\n%s", err, manifest)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

// TestHelmLint lints the chart with its defaults and with every value
// set, warnings counting as failures.
func TestHelmLint(t *testing.T) {
	for _, vs := range valueSets {
		args := []string{"lint", "--strict", chart, "--kube-version", kubeVersion}
		if vs.file != "" {
			args = append(args, "-f", vs.file)
		}
		out, err := runHelm(t, args...)
		if err != nil {
			t.Errorf("%s: %v", vs.name, err)
			continue
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("%s: helm lint:\n%s", vs.name, out)
		}
	}
}

// TestChartRefusesBadValues: values that cannot work fail the render
// with a message naming them, rather than producing objects that fail
// on a node.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"mode=both"}, `mode "both": want cluster or node`},
		{[]string{"upstreams=null"}, "upstreams: name at least one registry"},
		{[]string{"cache.near.type=disk"}, `cache.near.type "disk"`},
		{[]string{"cache.near.type=persistentVolumeClaim"}, "needs cache.near.persistentVolumeClaim.claimName"},
		{[]string{"cache.near.type=hostPath"}, "hostPath is for mode node only"},
		{[]string{"cache.far.s3.enabled=true"}, "needs cache.far.s3.bucket"},
		{[]string{"mode=node", "tls.secretName=x"}, "tls and auth are for mode cluster"},
		{[]string{"mode=node", "auth.token.secretName=x"}, "tls and auth are for mode cluster"},
		{[]string{"metrics.enabled=false", "metrics.serviceMonitor.enabled=true"}, "needs metrics.enabled"},
	} {
		args := []string{"template", "rel", chart, "--kube-version", kubeVersion}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, err := runHelm(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %v: %v, want an error with %q", tc.set, err, tc.want)
		}
	}
}

// cluster is the shared kube-apiserver with clients for the dry-runs.
type cluster struct {
	dyn      dynamic.Interface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	warnings *warnings
}

// warnings collects the Warning headers of the API server's answers:
// Pod Security's warn level, deprecated APIs, fields it dropped.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// take returns the warnings since the last take.
func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	k := testserver.SharedKube(t)
	w := &warnings{}
	cfg := &rest.Config{
		WarningHandler:  w,
		Host:            k.URL,
		BearerToken:     k.Token(testserver.KubeAdmin),
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200,
		Burst:           400,
		Timeout:         30 * time.Second,
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)), warnings: w}
}

func (c *cluster) resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, *meta.RESTMapping, error) {
	gvk := obj.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), m, nil
	}
	return c.dyn.Resource(m.Resource), m, nil
}

// create creates obj for real (namespaces, Secrets, the CRD).
func (c *cluster) create(t *testing.T, obj *unstructured.Unstructured) {
	t.Helper()
	r, _, err := c.resource(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(context.Background(), obj, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
		t.Fatalf("creating %s %s: %v", obj.GetKind(), obj.GetName(), err)
	}
}

// dryRun sends obj to the API server twice, storing nothing: as a create
// with strict field validation (an unknown or duplicate field is an
// error, not a warning), and as a server-side apply, which is how helm 4
// installs. Both run the API's validation and admission (Pod Security
// of the namespace included).
func (c *cluster) dryRun(ctx context.Context, obj *unstructured.Unstructured) error {
	r, m, err := c.resource(obj)
	if err != nil {
		return err
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace && obj.GetNamespace() != "" {
		return fmt.Errorf("%s %s is cluster-scoped: the chart should not make one", obj.GetKind(), obj.GetName())
	}
	if _, err := r.Create(ctx, obj, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
		return fmt.Errorf("dry-run create: %w", err)
	}
	if _, err := r.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "helm", Force: true}); err != nil {
		return fmt.Errorf("dry-run server-side apply: %w", err)
	}
	return nil
}

// installServiceMonitorCRD installs a minimal ServiceMonitor CRD: the
// Prometheus Operator's group, version and kind, with a structural
// schema of the fields the chart sets and no others, so that strict
// validation refuses a field the real CRD does not have under those
// names. (The Operator's full CRD is not vendored here.)
func installServiceMonitorCRD(t *testing.T, c *cluster) {
	t.Helper()
	b, err := os.ReadFile("testdata/servicemonitor-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs := decode(t, string(b))
	ctx := context.Background()
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	if _, err := c.dyn.Resource(gvr).Get(ctx, objs[0].GetName(), metav1.GetOptions{}); err == nil {
		return // a test before this one installed it
	}
	c.create(t, objs[0])
	deadline := time.Now().Add(30 * time.Second)
	for {
		crd, err := c.dyn.Resource(gvr).Get(ctx, objs[0].GetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		established := slices.ContainsFunc(conds, func(c any) bool {
			m, _ := c.(map[string]any)
			return m["type"] == "Established" && m["status"] == "True"
		})
		if established {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ServiceMonitor CRD is not established after 30s: %v", conds)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.mapper.Reset()
}

// TestChartDryRun renders every value set and sends every object to the
// real kube-apiserver as a server-side dry-run, and then a Pod made from
// each workload's pod template, as its controller would make it: the Pod
// is what Pod Security enforces (restricted for the cluster mirror,
// privileged for the node mirror's host network and hostPath) and what
// the ServiceAccount and Priority admission check. The namespace holds
// the Secrets the values name. Any warning of the API server fails the
// test (restricted's warn level covers the workloads themselves). Then
// it checks that the objects wire together (wiring_test.go).
func TestChartDryRun(t *testing.T) {
	helmBinary(t)
	c := newCluster(t)
	installServiceMonitorCRD(t, c)
	for _, vs := range valueSets {
		t.Run(vs.name, func(t *testing.T) {
			ns := "chart-" + vs.name
			labels := map[string]any{"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"}
			if vs.mode == "node" {
				labels = map[string]any{"pod-security.kubernetes.io/enforce": "privileged"}
			}
			c.create(t, namespace(ns, labels))
			for _, s := range vs.secrets {
				data := map[string]any{}
				for _, k := range s.keys {
					v := "dGVzdA==" // "test"
					if k == ".dockerconfigjson" {
						v = "eyJhdXRocyI6e319" // {"auths":{}}
					}
					data[k] = v
				}
				c.create(t, &unstructured.Unstructured{Object: map[string]any{
					"apiVersion": "v1", "kind": "Secret",
					"metadata": map[string]any{"name": s.name, "namespace": ns},
					"type":     s.typ, "data": data,
				}})
			}
			objs := render(t, vs, ns)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c.warnings.take()
			var kinds []string
			var pods []*unstructured.Unstructured
			sa := "default"
			for _, obj := range objs {
				kinds = append(kinds, obj.GetKind())
				if obj.GetNamespace() == "" {
					obj.SetNamespace(ns)
				}
				if err := c.dryRun(ctx, obj); err != nil {
					t.Errorf("%s %s: %v", obj.GetKind(), obj.GetName(), err)
				}
				if w := c.warnings.take(); len(w) > 0 {
					t.Errorf("%s %s: the API server warns: %q", obj.GetKind(), obj.GetName(), w)
				}
				switch obj.GetKind() {
				case "ServiceAccount":
					sa = obj.GetName()
				case "Deployment", "DaemonSet":
					pods = append(pods, podFromTemplate(t, obj))
				}
			}
			// The Pods' ServiceAccount must exist for them to be admitted;
			// there is no controller-manager to make "default".
			c.create(t, &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "v1", "kind": "ServiceAccount",
				"metadata": map[string]any{"name": sa, "namespace": ns},
			}})
			for _, pod := range pods {
				if err := c.dryRun(ctx, pod); err != nil {
					t.Errorf("the Pod of %s: %v", pod.GetName(), err)
				}
				if w := c.warnings.take(); len(w) > 0 {
					t.Errorf("the Pod of %s: the API server warns: %q", pod.GetName(), w)
				}
			}
			slices.Sort(kinds)
			if !slices.Equal(kinds, vs.kinds) {
				t.Errorf("objects %v, want %v", kinds, vs.kinds)
			}
			checkWiring(t, vs, objs)
		})
	}
}

func namespace(name string, labels map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": name, "labels": labels},
	}}
}

// podFromTemplate is the Pod a Deployment's or DaemonSet's controller
// would make of its template.
func podFromTemplate(t *testing.T, workload *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	tmpl, ok, err := unstructured.NestedMap(workload.Object, "spec", "template")
	if err != nil || !ok {
		t.Fatalf("%s %s has no pod template: %v", workload.GetKind(), workload.GetName(), err)
	}
	md, _ := tmpl["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
	}
	md["name"] = workload.GetName() + "-pod"
	md["namespace"] = workload.GetNamespace()
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl["spec"],
	}}
}

// TestDryRunCatchesMistakes is the dry-run's control: objects the API
// server must refuse are refused, so that a pass of TestChartDryRun
// means the fields were checked.
func TestDryRunCatchesMistakes(t *testing.T) {
	helmBinary(t)
	c := newCluster(t)
	installServiceMonitorCRD(t, c)
	ns := "chart-mistakes"
	c.create(t, namespace(ns, map[string]any{"pod-security.kubernetes.io/enforce": "restricted"}))
	c.create(t, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "ServiceAccount",
		"metadata": map[string]any{"name": "rel-buildcache", "namespace": ns},
	}})
	ctx := context.Background()
	find := func(objs []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
		for _, o := range objs {
			if o.GetKind() == kind {
				o.SetNamespace(ns)
				return o
			}
		}
		t.Fatalf("no %s rendered", kind)
		return nil
	}
	cluster, node, withMonitor := valueSets[0], valueSets[3], valueSets[1]
	for _, tc := range []struct {
		name   string
		vs     valueSet
		kind   string
		mutate func(o *unstructured.Unstructured) *unstructured.Unstructured
		want   string
	}{
		{"unknown field", cluster, "Deployment", func(o *unstructured.Unstructured) *unstructured.Unstructured {
			unstructured.SetNestedField(o.Object, "x", "spec", "template", "spec", "hostname2")
			return o
		}, "unknown field"},
		{"negative replicas", cluster, "Deployment", func(o *unstructured.Unstructured) *unstructured.Unstructured {
			unstructured.SetNestedField(o.Object, int64(-1), "spec", "replicas")
			return o
		}, "spec.replicas"},
		{"selector not matching the pod", cluster, "Deployment", func(o *unstructured.Unstructured) *unstructured.Unstructured {
			unstructured.SetNestedField(o.Object, "other", "spec", "selector", "matchLabels", "app.kubernetes.io/instance")
			return o
		}, "does not match template"},
		{"a node mirror's Pod in a restricted namespace", node, "DaemonSet", func(o *unstructured.Unstructured) *unstructured.Unstructured {
			return podFromTemplate(t, o)
		}, "violates PodSecurity"},
		{"a field the ServiceMonitor CRD lacks", withMonitor, "ServiceMonitor", func(o *unstructured.Unstructured) *unstructured.Unstructured {
			unstructured.SetNestedField(o.Object, "x", "spec", "endpoint")
			return o
		}, "unknown field"},
	} {
		obj := tc.mutate(find(render(t, tc.vs, ns), tc.kind))
		err := c.dryRun(ctx, obj)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
