{{/* Names, labels and the pieces of the pod spec both shapes share. */}}

{{- define "buildcache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "buildcache.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "buildcache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "buildcache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .Values.mode }}-mirror
{{- end }}

{{- define "buildcache.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "buildcache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "buildcache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "buildcache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "buildcache.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* validate fails the render on values that cannot work together. */}}
{{- define "buildcache.validate" -}}
{{- $v := .Values }}
{{- if not (has $v.mode (list "cluster" "node")) }}
{{- fail (printf "mode %q: want cluster or node" $v.mode) }}
{{- end }}
{{- if not $v.upstreams }}
{{- fail "upstreams: name at least one registry to mirror" }}
{{- end }}
{{- range $v.upstreams }}
{{- if or (not .name) (not .url) }}
{{- fail "upstreams: every entry needs name and url" }}
{{- end }}
{{- end }}
{{- if not (has $v.cache.near.type (list "emptyDir" "ephemeral" "persistentVolumeClaim" "hostPath")) }}
{{- fail (printf "cache.near.type %q: want emptyDir, ephemeral, persistentVolumeClaim or hostPath" $v.cache.near.type) }}
{{- end }}
{{- if and (eq $v.cache.near.type "persistentVolumeClaim") (not $v.cache.near.persistentVolumeClaim.claimName) }}
{{- fail "cache.near.type persistentVolumeClaim needs cache.near.persistentVolumeClaim.claimName" }}
{{- end }}
{{- if and (eq $v.cache.near.type "hostPath") (ne $v.mode "node") }}
{{- fail "cache.near.type hostPath is for mode node only" }}
{{- end }}
{{- if and $v.cache.far.s3.enabled (not $v.cache.far.s3.bucket) }}
{{- fail "cache.far.s3.enabled needs cache.far.s3.bucket" }}
{{- end }}
{{- if and (eq $v.mode "node") (or $v.tls.secretName $v.auth.htpasswd.secretName $v.auth.token.secretName) }}
{{- fail "tls and auth are for mode cluster: a node mirror serves its node's containerd on 127.0.0.1, which hosts.toml names without credentials" }}
{{- end }}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the metrics port, without authentication)" }}
{{- end }}
{{- end }}

{{/* scheme of the mirror's port: what probes and clients speak. */}}
{{- define "buildcache.scheme" -}}
{{- if .Values.tls.secretName }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* listen is serve's --listen: every address of the pod, or the node's loopback with the host's network. */}}
{{- define "buildcache.listen" -}}
{{- if and (eq .Values.mode "node") .Values.node.hostNetwork }}
{{- printf "127.0.0.1:%d" (int .Values.serve.port) }}
{{- else }}
{{- printf ":%d" (int .Values.serve.port) }}
{{- end }}
{{- end }}

{{/* metricsListen is serve's --metrics-listen: with the host's network, the node's own address. */}}
{{- define "buildcache.metricsListen" -}}
{{- if and (eq .Values.mode "node") .Values.node.hostNetwork }}
{{- printf "$(HOST_IP):%d" (int .Values.metrics.port) }}
{{- else }}
{{- printf ":%d" (int .Values.metrics.port) }}
{{- end }}
{{- end }}

{{/* cacheURL is serve's --cache: the near tier on /cache, behind a tier over S3 when the far tier is on. */}}
{{- define "buildcache.cacheURL" -}}
{{- $near := .Values.cache.near }}
{{- $q := list }}
{{- if $near.maxBytes }}{{ $q = append $q (printf "max_bytes=%s" (urlquery $near.maxBytes)) }}{{ end }}
{{- if $near.minFreeBytes }}{{ $q = append $q (printf "min_free_bytes=%s" (urlquery $near.minFreeBytes)) }}{{ end }}
{{- $nearURL := "file:///cache" }}
{{- if $q }}{{ $nearURL = printf "%s?%s" $nearURL (join "&" $q) }}{{ end }}
{{- $s3 := .Values.cache.far.s3 }}
{{- if $s3.enabled }}
{{- $fq := list }}
{{- if $s3.region }}{{ $fq = append $fq (printf "region=%s" (urlquery $s3.region)) }}{{ end }}
{{- if $s3.endpoint }}{{ $fq = append $fq (printf "endpoint=%s" (urlquery $s3.endpoint)) }}{{ end }}
{{- if $s3.usePathStyle }}{{ $fq = append $fq "use_path_style=true" }}{{ end }}
{{- if $s3.timeout }}{{ $fq = append $fq (printf "timeout=%s" (urlquery $s3.timeout)) }}{{ end }}
{{- $farURL := printf "s3://%s" $s3.bucket }}
{{- if $s3.prefix }}{{ $farURL = printf "%s/%s" $farURL (trimAll "/" $s3.prefix) }}{{ end }}
{{- if $fq }}{{ $farURL = printf "%s?%s" $farURL (join "&" $fq) }}{{ end }}
{{- printf "tier://?near=%s&far=%s" (urlquery $nearURL) (urlquery $farURL) }}
{{- else }}
{{- $nearURL }}
{{- end }}
{{- end }}

{{/* podAnnotations: the user's, and Prometheus's scrape annotations. */}}
{{- define "buildcache.podAnnotations" -}}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- if and .Values.metrics.enabled .Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{- define "buildcache.probe" -}}
httpGet:
  path: {{ .path }}
  port: http
  scheme: {{ include "buildcache.scheme" .root }}
  {{- if and (eq .root.Values.mode "node") .root.Values.node.hostNetwork }}
  host: 127.0.0.1
  {{- end }}
{{ toYaml .timing }}
{{- end }}

{{/* mirrorContainer is the container running `buildcache serve`. */}}
{{- define "buildcache.mirrorContainer" -}}
{{- $v := .Values -}}
name: mirror
image: {{ include "buildcache.image" . }}
imagePullPolicy: {{ $v.image.pullPolicy }}
args:
  - serve
  - --listen={{ include "buildcache.listen" . }}
  - --allow-remote
  {{- range $v.upstreams }}
  - --upstream={{ .name }}={{ .url }}
  {{- end }}
  {{- with $v.defaultUpstream }}
  - --default-upstream={{ . }}
  {{- end }}
  - --cache={{ include "buildcache.cacheURL" . }}
  - --log-format={{ $v.serve.logFormat }}
  - --shutdown-timeout={{ $v.serve.shutdownTimeout }}
  {{- with $v.serve.shutdownDelay }}
  - --shutdown-delay={{ . }}
  {{- end }}
  {{- with $v.serve.maxAge }}
  - --max-age={{ . }}
  {{- end }}
  {{- with $v.serve.staleBudget }}
  - --stale-budget={{ . }}
  {{- end }}
  {{- with $v.serve.notFoundTTL }}
  - --not-found-ttl={{ . }}
  {{- end }}
  {{- with $v.serve.maxUpstreamFetches }}
  - --max-upstream-fetches={{ . }}
  {{- end }}
  {{- if $v.metrics.enabled }}
  - --metrics-listen={{ include "buildcache.metricsListen" . }}
  {{- end }}
  {{- if $v.tls.secretName }}
  - --tls-cert=/etc/buildcache/tls/tls.crt
  - --tls-key=/etc/buildcache/tls/tls.key
  {{- end }}
  {{- if $v.auth.htpasswd.secretName }}
  - --htpasswd=/etc/buildcache/htpasswd/htpasswd
  {{- end }}
  {{- if $v.auth.token.secretName }}
  - --token-file=/etc/buildcache/token/token
  {{- end }}
  {{- with $v.auth.failedLogins }}
  - --failed-logins={{ . }}
  {{- end }}
  {{- with $v.serve.extraArgs }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - name: http
    containerPort: {{ $v.serve.port }}
    protocol: TCP
    {{- if and (eq $v.mode "node") (not $v.node.hostNetwork) }}
    hostPort: {{ $v.serve.port }}
    hostIP: 127.0.0.1
    {{- end }}
  {{- if $v.metrics.enabled }}
  - name: metrics
    containerPort: {{ $v.metrics.port }}
    protocol: TCP
  {{- end }}
{{- with include "buildcache.env" . | trim }}
env:
  {{- . | nindent 2 }}
{{- end }}
startupProbe:
  {{- include "buildcache.probe" (dict "root" . "path" "/readyz" "timing" $v.probes.startup) | nindent 2 }}
readinessProbe:
  {{- include "buildcache.probe" (dict "root" . "path" "/readyz" "timing" $v.probes.readiness) | nindent 2 }}
livenessProbe:
  {{- include "buildcache.probe" (dict "root" . "path" "/healthz" "timing" $v.probes.liveness) | nindent 2 }}
resources:
  {{- toYaml $v.resources | nindent 2 }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: cache
    mountPath: /cache
  - name: tmp
    mountPath: /tmp
  {{- if $v.tls.secretName }}
  - name: tls
    mountPath: /etc/buildcache/tls
    readOnly: true
  {{- end }}
  {{- if $v.auth.htpasswd.secretName }}
  - name: htpasswd
    mountPath: /etc/buildcache/htpasswd
    readOnly: true
  {{- end }}
  {{- if $v.auth.token.secretName }}
  - name: token
    mountPath: /etc/buildcache/token
    readOnly: true
  {{- end }}
  {{- if $v.upstreamAuth.secretName }}
  - name: docker-config
    mountPath: /etc/buildcache/docker
    readOnly: true
  {{- end }}
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* volumes of the mirror's container. */}}
{{- define "buildcache.volumes" -}}
{{- $v := .Values -}}
{{- $near := $v.cache.near -}}
- name: cache
  {{- if eq $near.type "emptyDir" }}
  emptyDir:
    {{- with $near.sizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
  {{- else if eq $near.type "ephemeral" }}
  ephemeral:
    volumeClaimTemplate:
      metadata:
        labels:
          {{- include "buildcache.selectorLabels" . | nindent 10 }}
      spec:
        accessModes:
          {{- toYaml $near.ephemeral.accessModes | nindent 10 }}
        {{- with $near.ephemeral.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $near.ephemeral.size }}
  {{- else if eq $near.type "persistentVolumeClaim" }}
  persistentVolumeClaim:
    claimName: {{ $near.persistentVolumeClaim.claimName }}
  {{- else if eq $near.type "hostPath" }}
  hostPath:
    path: {{ $near.hostPath.path }}
    type: Directory
  {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- if $v.tls.secretName }}
- name: tls
  secret:
    secretName: {{ $v.tls.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if $v.auth.htpasswd.secretName }}
- name: htpasswd
  secret:
    secretName: {{ $v.auth.htpasswd.secretName }}
    items:
      - key: {{ $v.auth.htpasswd.key }}
        path: htpasswd
{{- end }}
{{- if $v.auth.token.secretName }}
- name: token
  secret:
    secretName: {{ $v.auth.token.secretName }}
    items:
      - key: {{ $v.auth.token.key }}
        path: token
{{- end }}
{{- if $v.upstreamAuth.secretName }}
- name: docker-config
  secret:
    secretName: {{ $v.upstreamAuth.secretName }}
    items:
      - key: .dockerconfigjson
        path: config.json
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* podSpecCommon: what both shapes' pod specs hold besides containers and volumes. */}}
{{- define "buildcache.podSpecCommon" -}}
{{- $v := .Values -}}
serviceAccountName: {{ include "buildcache.serviceAccountName" . }}
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* env of the mirror's container. */}}
{{- define "buildcache.env" -}}
{{- $v := .Values }}
{{- if and (eq $v.mode "node") $v.node.hostNetwork $v.metrics.enabled }}
- name: HOST_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
{{- end }}
{{- if $v.upstreamAuth.secretName }}
- name: DOCKER_CONFIG
  value: /etc/buildcache/docker
{{- end }}
{{- with $v.cache.far.s3.credentials }}
{{- if and $v.cache.far.s3.enabled .secretName }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .accessKeyIDKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretAccessKeyKey }}
{{- if .sessionTokenKey }}
- name: AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .sessionTokenKey }}
{{- end }}
{{- end }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
