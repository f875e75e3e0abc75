package helm

import (
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// objects are the rendered objects, typed.
type objects struct {
	deployment *appsv1.Deployment
	daemonSet  *appsv1.DaemonSet
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	accounts   []*corev1.ServiceAccount
	monitors   []*unstructured.Unstructured
}

func typed(t *testing.T, objs []*unstructured.Unstructured) objects {
	t.Helper()
	var o objects
	conv := func(u *unstructured.Unstructured, into any) {
		// strict: a field the Go types do not know fails here too
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for _, u := range objs {
		switch u.GetKind() {
		case "Deployment":
			o.deployment = &appsv1.Deployment{}
			conv(u, o.deployment)
		case "DaemonSet":
			o.daemonSet = &appsv1.DaemonSet{}
			conv(u, o.daemonSet)
		case "Service":
			s := &corev1.Service{}
			conv(u, s)
			o.services = append(o.services, s)
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			conv(u, p)
			o.pdbs = append(o.pdbs, p)
		case "ServiceAccount":
			a := &corev1.ServiceAccount{}
			conv(u, a)
			o.accounts = append(o.accounts, a)
		case "ServiceMonitor":
			o.monitors = append(o.monitors, u)
		default:
			t.Errorf("unexpected %s %s", u.GetKind(), u.GetName())
		}
	}
	return o
}

// flagValues parses args of the form --name=value and --name.
func flagValues(args []string) map[string][]string {
	m := map[string][]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		m[k] = append(m[k], v)
	}
	return m
}

func one(t *testing.T, f map[string][]string, name string) string {
	t.Helper()
	if len(f[name]) != 1 {
		t.Fatalf("--%s given %d times: %q", name, len(f[name]), f[name])
	}
	return f[name][0]
}

// allContainers are a pod's init containers (the native sidecar
// included) and containers.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

func container(spec *corev1.PodSpec, name string) *corev1.Container {
	for _, c := range allContainers(spec) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// targetPort resolves a Service's or probe's port (a name or a number) to
// a port some container of the pod declares, or 0.
func targetPort(spec *corev1.PodSpec, p intstr.IntOrString) int32 {
	for _, c := range allContainers(spec) {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return cp.ContainerPort
			}
		}
	}
	return 0
}

func containerPort(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	return nil
}

// addrPort splits a --listen value: ":5000", "127.0.0.1:5000",
// "$(HOST_IP):9090".
func addrPort(t *testing.T, addr string) (string, int32) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	p, err := strconv.Atoi(addr[i+1:])
	if i < 0 || err != nil {
		t.Fatalf("address %q: no port", addr)
	}
	return addr[:i], int32(p)
}

func selects(t *testing.T, what string, sel *metav1.LabelSelector, podLabels map[string]string) {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if s.Empty() || !s.Matches(labels.Set(podLabels)) {
		t.Errorf("%s selector %s does not select the pods (labels %v)", what, s, podLabels)
	}
}

// checkWiring checks that the rendered objects work together, as a
// kubelet and the controllers would need them to: what the dry-run's
// schemas cannot see.
func checkWiring(t *testing.T, vs valueSet, objs []*unstructured.Unstructured) {
	o := typed(t, objs)
	var tmpl *corev1.PodTemplateSpec
	switch vs.mode {
	case "cluster":
		if o.deployment == nil || o.daemonSet != nil {
			t.Fatalf("cluster mode: want a Deployment and no DaemonSet")
		}
		tmpl = &o.deployment.Spec.Template
		selects(t, "Deployment", o.deployment.Spec.Selector, tmpl.Labels)
	case "node":
		if o.daemonSet == nil || o.deployment != nil {
			t.Fatalf("node mode: want a DaemonSet and no Deployment")
		}
		tmpl = &o.daemonSet.Spec.Template
		selects(t, "DaemonSet", o.daemonSet.Spec.Selector, tmpl.Labels)
	}
	spec := &tmpl.Spec

	mirror := container(spec, "mirror")
	if mirror == nil {
		t.Fatal("no container named mirror")
	}
	if len(mirror.Args) == 0 || mirror.Args[0] != "serve" {
		t.Fatalf("mirror runs %q, want buildcache serve", mirror.Args)
	}
	f := flagValues(mirror.Args)
	listenHost, listenPort := addrPort(t, one(t, f, "listen"))
	http := containerPort(mirror, "http")
	if http == nil || http.ContainerPort != listenPort {
		t.Errorf("container port http %v, want the --listen port %d", http, listenPort)
	}
	if listenHost != "" && listenHost != "127.0.0.1" {
		t.Errorf("--listen host %q", listenHost)
	}
	if _, ok := f["allow-remote"]; !ok && listenHost != "127.0.0.1" {
		t.Errorf("--listen %s without --allow-remote: serve refuses it", one(t, f, "listen"))
	}
	_, tls := f["tls-cert"]

	// Probes: on the port served, /readyz for readiness and startup,
	// /healthz for liveness, HTTPS when serving TLS.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", mirror.StartupProbe, "/readyz"},
		{"readiness", mirror.ReadinessProbe, "/readyz"},
		{"liveness", mirror.LivenessProbe, "/healthz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("mirror has no %s probe over HTTP", p.name)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s probe path %s, want %s", p.name, g.Path, p.path)
		}
		if targetPort(spec, g.Port) != listenPort {
			t.Errorf("%s probe port %s is not the served port %d", p.name, g.Port.String(), listenPort)
		}
		if want := map[bool]corev1.URIScheme{true: corev1.URISchemeHTTPS, false: corev1.URISchemeHTTP}[tls]; g.Scheme != want {
			t.Errorf("%s probe scheme %s, want %s", p.name, g.Scheme, want)
		}
		// With the host's network the kubelet probes the pod's (the
		// node's) address, and the mirror listens on loopback only.
		if listenHost == "127.0.0.1" && g.Host != "127.0.0.1" {
			t.Errorf("%s probe host %q: the mirror listens on 127.0.0.1 only", p.name, g.Host)
		}
	}

	// The shutdown fits the grace period.
	var shutdown time.Duration
	for _, name := range []string{"shutdown-timeout", "shutdown-delay"} {
		if v := f[name]; len(v) == 1 {
			d, err := time.ParseDuration(v[0])
			if err != nil {
				t.Errorf("--%s %q: %v", name, v[0], err)
			}
			shutdown += d
		}
	}
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %v is not above --shutdown-delay + --shutdown-timeout (%s)", g, shutdown)
	}

	checkCache(t, vs, spec, mirror, one(t, f, "cache"))
	checkMetrics(t, tmpl, mirror, f, o)
	checkReferences(t, vs, spec, mirror, f)
	checkSecurity(t, vs, spec)

	// Services: each selects the pods, each port reaches a container port.
	for _, s := range o.services {
		selects(t, "Service "+s.Name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, tmpl.Labels)
		for _, p := range s.Spec.Ports {
			want := map[string]int32{"http": listenPort}[p.Name]
			if p.Name == "metrics" {
				_, want = addrPort(t, one(t, f, "metrics-listen"))
			}
			if got := targetPort(spec, p.TargetPort); got == 0 || got != want {
				t.Errorf("Service %s port %s: targetPort %s reaches container port %d, want %d", s.Name, p.Name, p.TargetPort.String(), got, want)
			}
		}
	}
	for _, p := range o.pdbs {
		if vs.mode != "cluster" {
			t.Errorf("a PodDisruptionBudget for a DaemonSet")
		}
		selects(t, "PodDisruptionBudget", p.Spec.Selector, tmpl.Labels)
	}
	if vs.mode == "cluster" && (len(o.services) != 1 || !slices.ContainsFunc(o.services[0].Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "http" })) {
		t.Errorf("cluster mode: want one Service with an http port")
	}
	if len(o.accounts) > 0 && spec.ServiceAccountName != o.accounts[0].Name {
		t.Errorf("pods run as ServiceAccount %q, the chart made %q", spec.ServiceAccountName, o.accounts[0].Name)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("the pods mount a ServiceAccount token; the mirror does not talk to the API server")
	}
	for _, c := range allContainers(spec) {
		if c.Image != vs.image {
			t.Errorf("container %s runs %s, want %s", c.Name, c.Image, vs.image)
		}
	}

	if vs.mode == "node" {
		checkNode(t, vs, spec, mirror, f, listenHost, listenPort)
	}
}

// checkCache: --cache is the near tier on the volume mounted at /cache,
// behind a tier over S3 when the values name one, with only parameters
// buildcache.Open takes (open.go).
func checkCache(t *testing.T, vs valueSet, spec *corev1.PodSpec, mirror *corev1.Container, cache string) {
	allowed := map[string][]string{
		"file": {"max_bytes", "min_free_bytes", "ttl"},
		"s3":   {"region", "endpoint", "use_path_style", "blobs_prefix", "manifests_prefix", "touch_refresh", "timeout"},
		"tier": {"near", "far", "async_far"},
	}
	parse := func(s string) (*url.URL, url.Values) {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("cache URL %q: %v", s, err)
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			t.Fatalf("cache URL %q: query: %v", s, err)
		}
		for k, v := range q {
			if !slices.Contains(allowed[u.Scheme], k) || len(v) != 1 {
				t.Errorf("cache URL %q: parameter %s=%q: buildcache.Open refuses it", s, k, v)
			}
		}
		return u, q
	}
	same := func(what, got, want string) {
		gu, gq := parse(got)
		wu, wq := parse(want)
		gu.RawQuery, wu.RawQuery = "", ""
		if gu.String() != wu.String() || gq.Encode() != wq.Encode() {
			t.Errorf("%s %q, want %q", what, got, want)
		}
	}
	near := cache
	if vs.far != "" {
		u, q := parse(cache)
		if u.Scheme != "tier" {
			t.Fatalf("--cache %q: want a tier over S3", cache)
		}
		near = q.Get("near")
		same("far tier", q.Get("far"), vs.far)
	}
	same("near tier", near, vs.near)
	nu, _ := parse(near)
	if nu.Scheme != "file" {
		t.Fatalf("near tier %q is not a directory", near)
	}
	var vol string
	for _, m := range mirror.VolumeMounts {
		if m.MountPath == nu.Path {
			vol = m.Name
		}
	}
	if vol == "" {
		t.Errorf("the near tier %s is not a mounted volume: it would be the read-only root", nu.Path)
	}
	for _, v := range spec.Volumes {
		if v.Name == vol && v.Secret != nil {
			t.Errorf("the near tier is on a Secret volume")
		}
	}
}

// checkMetrics: --metrics-listen is the container's metrics port, the one
// the Prometheus annotations and any ServiceMonitor name.
func checkMetrics(t *testing.T, tmpl *corev1.PodTemplateSpec, mirror *corev1.Container, f map[string][]string, o objects) {
	ann := tmpl.Annotations
	if len(f["metrics-listen"]) == 0 {
		if containerPort(mirror, "metrics") != nil || ann["prometheus.io/scrape"] != "" || len(o.monitors) > 0 {
			t.Errorf("no --metrics-listen, but a metrics port, scrape annotations or a ServiceMonitor")
		}
		return
	}
	host, port := addrPort(t, one(t, f, "metrics-listen"))
	if p := containerPort(mirror, "metrics"); p == nil || p.ContainerPort != port {
		t.Errorf("container port metrics %v, want --metrics-listen's %d", p, port)
	}
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(int(port)) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("Prometheus annotations %v, want port %d", ann, port)
	}
	if strings.Contains(host, "$(HOST_IP)") && !slices.ContainsFunc(mirror.Env, func(e corev1.EnvVar) bool {
		return e.Name == "HOST_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.hostIP"
	}) {
		t.Errorf("--metrics-listen %s without a HOST_IP from status.hostIP", host)
	}
	if host != "" && !strings.Contains(host, "$(HOST_IP)") {
		t.Errorf("--metrics-listen host %q: Prometheus could not reach it", host)
	}
	for _, m := range o.monitors {
		sel, _, _ := unstructured.NestedStringMap(m.Object, "spec", "selector", "matchLabels")
		eps, _, _ := unstructured.NestedSlice(m.Object, "spec", "endpoints")
		var svc *corev1.Service
		for _, s := range o.services {
			if labels.SelectorFromSet(sel).Matches(labels.Set(s.Labels)) {
				svc = s
			}
		}
		if svc == nil {
			t.Errorf("ServiceMonitor %s selects no Service (%v)", m.GetName(), sel)
			continue
		}
		for _, e := range eps {
			name, _ := e.(map[string]any)["port"].(string)
			i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == name })
			if i < 0 || svc.Spec.Ports[i].TargetPort.String() != "metrics" {
				t.Errorf("ServiceMonitor %s scrapes port %q of Service %s, not its metrics port", m.GetName(), name, svc.Name)
			}
		}
		ns, _, _ := unstructured.NestedStringSlice(m.Object, "spec", "namespaceSelector", "matchNames")
		if !slices.Contains(ns, m.GetNamespace()) {
			t.Errorf("ServiceMonitor %s looks in %v, not its own namespace %s", m.GetName(), ns, m.GetNamespace())
		}
	}
}

// checkReferences: every volume mount names a volume and every volume is
// mounted; every Secret referenced is one the values named, with the key
// referenced; every file a flag names is a key of the right Secret.
func checkReferences(t *testing.T, vs valueSet, spec *corev1.PodSpec, mirror *corev1.Container, f map[string][]string) {
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if volumes[v.Name] != nil {
			t.Errorf("volume %s twice", v.Name)
		}
		volumes[v.Name] = v
	}
	mounted := map[string]bool{}
	for _, c := range allContainers(spec) {
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				t.Errorf("container %s mounts volume %s, which the pod does not have", c.Name, m.Name)
			}
			mounted[m.Name] = true
		}
	}
	for name := range volumes {
		if !mounted[name] {
			t.Errorf("volume %s is mounted by no container", name)
		}
	}
	secrets := map[string]secret{}
	for _, s := range vs.secrets {
		secrets[s.name] = s
	}
	used := map[string]bool{}
	ref := func(what, name, key string) secret {
		s, ok := secrets[name]
		used[name] = true
		if !ok {
			t.Errorf("%s references Secret %s, which the values do not name", what, name)
		} else if key != "" && !slices.Contains(s.keys, key) {
			t.Errorf("%s references key %s of Secret %s, which has %v", what, key, name, s.keys)
		}
		return s
	}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if len(v.Secret.Items) == 0 {
			ref("volume "+v.Name, v.Secret.SecretName, "")
		}
		for _, it := range v.Secret.Items {
			ref("volume "+v.Name, v.Secret.SecretName, it.Key)
		}
	}
	for _, c := range allContainers(spec) {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref("env "+e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				ref("envFrom", e.SecretRef.Name, "")
			}
		}
	}
	for _, s := range spec.ImagePullSecrets {
		if ref("imagePullSecrets", s.Name, "").typ != string(corev1.SecretTypeDockerConfigJson) {
			t.Errorf("image pull Secret %s is not a %s", s.Name, corev1.SecretTypeDockerConfigJson)
		}
	}
	for name := range secrets {
		if !used[name] {
			t.Errorf("the values name Secret %s but nothing uses it", name)
		}
	}

	// file resolves a path in the mirror's container to the Secret and
	// key it reads.
	file := func(p string) (secret, string) {
		for _, m := range mirror.VolumeMounts {
			rel, ok := strings.CutPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
			v := volumes[m.Name]
			if !ok || v == nil || v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return secrets[v.Secret.SecretName], it.Key
				}
			}
			if len(v.Secret.Items) == 0 {
				return secrets[v.Secret.SecretName], rel
			}
		}
		t.Errorf("%s is in no Secret mounted in the mirror", p)
		return secret{}, ""
	}
	for _, fl := range []string{"tls-cert", "tls-key", "htpasswd", "token-file"} {
		for _, p := range f[fl] {
			s, key := file(p)
			if (fl == "tls-cert" || fl == "tls-key") && (s.typ != string(corev1.SecretTypeTLS) || key != map[string]string{"tls-cert": "tls.crt", "tls-key": "tls.key"}[fl]) {
				t.Errorf("--%s reads key %s of Secret %s (%s)", fl, key, s.name, s.typ)
			}
		}
	}
	if _, cert := f["tls-cert"]; cert != (len(f["tls-key"]) == 1) {
		t.Errorf("--tls-cert and --tls-key go together: %q %q", f["tls-cert"], f["tls-key"])
	}
	for _, e := range mirror.Env {
		if e.Name == "DOCKER_CONFIG" {
			if s, key := file(path.Join(e.Value, "config.json")); s.typ != string(corev1.SecretTypeDockerConfigJson) || key != corev1.DockerConfigJsonKey {
				t.Errorf("DOCKER_CONFIG/config.json is key %s of Secret %s (%s)", key, s.name, s.typ)
			}
		}
	}
	aws := slices.IndexFunc(mirror.Env, func(e corev1.EnvVar) bool { return e.Name == "AWS_ACCESS_KEY_ID" }) >= 0
	if aws != (slices.IndexFunc(mirror.Env, func(e corev1.EnvVar) bool { return e.Name == "AWS_SECRET_ACCESS_KEY" }) >= 0) {
		t.Errorf("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY go together")
	}
	if aws && vs.far == "" {
		t.Errorf("AWS credentials without a far tier on S3")
	}
}

// checkSecurity: non-root, read-only root, no privilege escalation, no
// capability, in every container; only node-config runs as root, and it
// alone mounts containerd's hosts directory.
func checkSecurity(t *testing.T, vs valueSet, spec *corev1.PodSpec) {
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context: want seccomp RuntimeDefault")
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, c := range allContainers(spec) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no security context", c.Name)
			continue
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s may escalate privileges", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s has a writable root file system", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s capabilities %+v: want ALL dropped, none added", c.Name, sc.Capabilities)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", c.Name)
		}
		root := sc.RunAsUser != nil && *sc.RunAsUser == 0
		if root != (c.Name == "node-config") {
			t.Errorf("container %s runs as root: %v", c.Name, root)
		}
		for _, m := range c.VolumeMounts {
			hp, ok := hostPaths[m.Name]
			switch {
			case !ok:
			case c.Name == "node-config" && hp == vs.hostsDir && !m.ReadOnly:
			case c.Name == "mirror" && m.MountPath == "/cache":
			default:
				t.Errorf("container %s mounts the node's %s at %s", c.Name, hp, m.MountPath)
			}
		}
	}
}

// checkNode: the node mirror's lifecycle and its node-config step.
func checkNode(t *testing.T, vs valueSet, spec *corev1.PodSpec, mirror *corev1.Container, f map[string][]string, listenHost string, listenPort int32) {
	// The mirror is a native sidecar: started first, node-config only
	// once its startup probe (/readyz) passed; stopped last.
	if !slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == "mirror" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}) {
		t.Errorf("the mirror is not an init container with restartPolicy Always (a native sidecar)")
	}
	if mirror.StartupProbe == nil || mirror.StartupProbe.HTTPGet == nil || mirror.StartupProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("the mirror's startup probe does not wait for /readyz: node-config would start first")
	}
	if spec.HostNetwork != vs.hostNetwork {
		t.Errorf("hostNetwork %v, want %v", spec.HostNetwork, vs.hostNetwork)
	}
	http := containerPort(mirror, "http")
	if vs.hostNetwork {
		if listenHost != "127.0.0.1" {
			t.Errorf("with the host's network the mirror listens on %q, not the node's loopback", listenHost)
		}
		if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("dnsPolicy %s with the host's network", spec.DNSPolicy)
		}
	} else if http == nil || http.HostPort != listenPort || http.HostIP != "127.0.0.1" {
		t.Errorf("port http %+v: want hostPort %d on 127.0.0.1", http, listenPort)
	}
	var nc *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "node-config" {
			nc = &spec.Containers[i]
		}
	}
	if nc == nil || len(spec.Containers) != 1 {
		t.Fatalf("want node-config as the one container, have %d", len(spec.Containers))
	}
	if len(nc.Args) == 0 || nc.Args[0] != "node-config" {
		t.Fatalf("node-config runs %q", nc.Args)
	}
	nf := flagValues(nc.Args)
	if got, want := one(t, nf, "mirror"), "http://127.0.0.1:"+strconv.Itoa(int(listenPort)); got != want {
		t.Errorf("node-config --mirror %s, want %s (where containerd on the node reaches the mirror)", got, want)
	}
	if _, ok := nf["until-signal"]; !ok {
		t.Errorf("node-config without --until-signal exits after writing: it would be restarted, and never remove its files")
	}
	up, reg := slices.Clone(f["upstream"]), slices.Clone(nf["registry"])
	slices.Sort(up)
	slices.Sort(reg)
	if !slices.Equal(up, reg) || len(reg) == 0 {
		t.Errorf("node-config --registry %q, mirror --upstream %q: containerd would send a registry to a mirror that does not serve it, or skip one it does", reg, up)
	}
	hostsDir := one(t, nf, "hosts-dir")
	found := false
	for _, m := range nc.VolumeMounts {
		if m.MountPath == hostsDir {
			for _, v := range spec.Volumes {
				if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == vs.hostsDir {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("node-config --hosts-dir %s is not the node's %s", hostsDir, vs.hostsDir)
	}
}
