{{/*
=====================================================================================
Names and labels.

Every template here takes a context with .Values (this chart's values) and .Release: either this
chart's root context `.` or, from a parent chart, `(dict "Values" .Values.fieldseal "Release" .Release)`.
The chart name is the constant "fieldseal" (not .Chart.Name) so a parent computes the same
resource names as the subchart that renders them.
=====================================================================================
*/}}

{{- define "fieldseal.name" -}}
{{- default "fieldseal" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fieldseal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "fieldseal" .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* helm.sh/chart value; only for this chart's own resources (needs .Chart). */}}
{{- define "fieldseal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fieldseal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fieldseal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "fieldseal.labels" -}}
helm.sh/chart: {{ include "fieldseal.chart" . }}
{{ include "fieldseal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fieldseal
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Full labels when rendered by this chart, selector labels otherwise (parent context). */}}
{{- define "fieldseal.safeLabels" -}}
{{- if and (hasKey . "Chart") .Chart (eq (toString .Chart.Name) "fieldseal") -}}
{{ include "fieldseal.labels" . }}
{{- else -}}
{{ include "fieldseal.selectorLabels" . }}
app.kubernetes.io/part-of: fieldseal
{{- end -}}
{{- end -}}

{{- define "fieldseal.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fieldseal.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "fieldseal.image" -}}
{{- $img := .Values.image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry }}{{ $repo = printf "%s/%s" $img.registry $img.repository }}{{ end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- /* .Chart is absent when a parent chart includes us: then image.tag must be set or the
       parent's appVersion is not ours. Fall back to the chart default baked in below. */ -}}
{{- $tag := $img.tag -}}
{{- if not $tag -}}{{- $tag = include "fieldseal.defaultTag" . -}}{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* The chart's appVersion, also when included from a parent (no .Chart of ours there). */}}
{{- define "fieldseal.defaultTag" -}}
{{- if and (hasKey . "Chart") .Chart (eq (toString .Chart.Name) "fieldseal") -}}
{{- .Chart.AppVersion -}}
{{- else -}}
0.1.0
{{- end -}}
{{- end -}}

{{/* Secret and ConfigMap names. */}}
{{- define "fieldseal.configMapName" -}}
{{- default (include "fieldseal.fullname" .) .Values.config.existingConfigMap -}}
{{- end -}}
{{- define "fieldseal.configMapKey" -}}
{{- if .Values.config.existingConfigMap }}{{ .Values.config.existingConfigMapKey }}{{ else }}fieldseal.yaml{{ end -}}
{{- end -}}
{{- define "fieldseal.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "fieldseal.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}
{{- define "fieldseal.keysSecretName" -}}
{{- default (printf "%s-keys" (include "fieldseal.fullname" .)) .Values.keys.existingSecret -}}
{{- end -}}

{{/*
=====================================================================================
Paths inside the container. The rendered configuration and the volume mounts both use these,
so they cannot drift apart.
=====================================================================================
*/}}
{{- define "fieldseal.paths.config" -}}/etc/fieldseal/config{{- end -}}
{{- define "fieldseal.paths.tls" -}}/etc/fieldseal/tls{{- end -}}
{{- define "fieldseal.paths.clientCA" -}}/etc/fieldseal/client-ca{{- end -}}
{{- define "fieldseal.paths.keys" -}}/etc/fieldseal/keys{{- end -}}
{{- define "fieldseal.paths.kek" -}}/etc/fieldseal/kek{{- end -}}
{{- define "fieldseal.paths.audit" -}}/etc/fieldseal/audit{{- end -}}
{{- define "fieldseal.paths.replay" -}}/etc/fieldseal/replay{{- end -}}
{{- define "fieldseal.paths.auditLog" -}}/var/log/fieldseal{{- end -}}

{{/*
=====================================================================================
Checks. `fieldseal.validate` runs every cross-field rule the JSON schema cannot express and
fails with a message naming the values to change. Every public template calls it.
=====================================================================================
*/}}

{{/* A humantime duration of the forms the schema allows (500ms, 20s, 1m30s, 2h, 90d) → ms. */}}
{{- define "fieldseal.durationMs" -}}
{{- $s := toString . | trim -}}
{{- if not (regexMatch "^([0-9]+(ms|s|m|h|d))+$" $s) -}}
{{- fail (printf "fieldseal: cannot read the duration %q (use e.g. 500ms, 20s, 1m30s)" $s) -}}
{{- end -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 -}}
{{- $total := 0 -}}
{{- range $seg := regexFindAll "[0-9]+(ms|s|m|h|d)" $s -1 -}}
{{- $num := regexFind "^[0-9]+" $seg -}}
{{- $unit := trimPrefix $num $seg -}}
{{- $total = add $total (mul (atoi $num) (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* "true" when the shared replay store (config.replay.store: redis) is configured. */}}
{{- define "fieldseal.replayRedis" -}}
{{- $r := .Values.config.replay | default dict -}}
{{- if eq (toString $r.store) "redis" }}true{{ end -}}
{{- end -}}

{{- define "fieldseal.validate" -}}
{{- $v := .Values -}}
{{- /* Drain budget: preStop sleep + fieldseal's shutdown_grace must end before SIGKILL. */ -}}
{{- $grace := (index ($v.config.timeouts | default dict) "shutdown_grace") | default "25s" -}}
{{- $graceMs := include "fieldseal.durationMs" $grace | atoi -}}
{{- $preStopMs := mul (int $v.lifecycle.preStopSleepSeconds) 1000 -}}
{{- $tgpsMs := mul (int $v.terminationGracePeriodSeconds) 1000 -}}
{{- if ge (add $graceMs $preStopMs) $tgpsMs -}}
{{- fail (printf "fieldseal: lifecycle.preStopSleepSeconds (%ds) + config.timeouts.shutdown_grace (%s) must be less than terminationGracePeriodSeconds (%ds): the kubelet would SIGKILL fieldseal mid-drain. Lower shutdown_grace or raise terminationGracePeriodSeconds." (int $v.lifecycle.preStopSleepSeconds) $grace (int $v.terminationGracePeriodSeconds)) -}}
{{- end -}}
{{- /* Secret file modes: fieldseal refuses key files that other users can read, or that the group can write. */ -}}
{{- $modes := dict "keys.defaultMode" $v.keys.defaultMode "tls.defaultMode" $v.tls.defaultMode -}}
{{- if eq (include "fieldseal.replayRedis" .) "true" }}{{ $_ := set $modes "config.replay.redis.defaultMode" $v.config.replay.redis.defaultMode }}{{ end -}}
{{- range $what, $mode := $modes -}}
{{- if ne (mod (int $mode) 8) 0 -}}
{{- fail (printf "fieldseal: %s %s (octal %o) lets other users read the key files; fieldseal refuses such files. Use 256 (0400) or 288 (0440)." $what (toString $mode) (int $mode)) -}}
{{- end -}}
{{- if eq (mod (div (int $mode) 16) 2) 1 -}}
{{- fail (printf "fieldseal: %s %s (octal %o) lets the group write the key files; fieldseal refuses such files. Use 256 (0400) or 288 (0440)." $what (toString $mode) (int $mode)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.keys.generate.enabled (gt (int $v.replicaCount) 1) (eq $v.mode "deployment") -}}
{{- fail "fieldseal: keys.generate.enabled gives every pod its own random keyring, so a token sealed by one replica cannot be opened by another. It is for development only: set replicaCount: 1, or create the keys Secret (keys.existingSecret)." -}}
{{- end -}}
{{- if and $v.keys.publicKeyPath (not $v.keys.rsa.enabled) -}}
{{- fail "fieldseal: keys.publicKeyPath needs keys.rsa.enabled (the endpoint publishes the RSA public key)." -}}
{{- end -}}
{{- if and $v.config.audit.enabled (not $v.config.audit.existingSecret) -}}
{{- fail "fieldseal: config.audit.enabled needs config.audit.existingSecret (a Secret holding the audit key; `fieldseal audit keygen --out audit.key`)." -}}
{{- end -}}
{{- /* The shared replay store: its Secret and URL (the schema checks them too, this names the fix). */ -}}
{{- if eq (include "fieldseal.replayRedis" .) "true" -}}
{{- $r := $v.config.replay.redis -}}
{{- if not $r.existingSecret -}}
{{- fail "fieldseal: config.replay.store redis needs config.replay.redis.existingSecret: a Secret holding the replay key (32 random bytes: `openssl rand -base64 32`) and the Redis password, e.g. kubectl create secret generic my-app-fieldseal-replay --from-file=replay-key=replay.key --from-file=redis-password=redis.pass" -}}
{{- end -}}
{{- if not (regexMatch "^redis://[^@\\s]+$" (toString $r.url)) -}}
{{- fail (printf "fieldseal: config.replay.redis.url %q must be redis://host:port/db, without credentials (config.replay.redis.username and the Secret carry them); rediss:// is not supported yet." (toString $r.url)) -}}
{{- end -}}
{{- with $r.timeout -}}
{{- $ms := include "fieldseal.durationMs" . | atoi -}}
{{- if or (lt $ms 10) (gt $ms 5000) -}}
{{- fail (printf "fieldseal: config.replay.redis.timeout %s must be between 10ms and 5s." .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and $v.certManager.enabled (not $v.certManager.issuerRef.name) -}}
{{- fail "fieldseal: certManager.enabled needs certManager.issuerRef.name." -}}
{{- end -}}
{{- if and $v.certManager.enabled $v.tls.selfSigned.enabled -}}
{{- fail "fieldseal: certManager.enabled and tls.selfSigned.enabled both want to write the TLS Secret; choose one." -}}
{{- end -}}
{{- /* Prometheus behind the NetworkPolicy: without adminFrom nothing may reach /metrics. */ -}}
{{- if and (eq $v.mode "deployment") $v.metrics.serviceMonitor.enabled $v.networkPolicy.enabled (not $v.networkPolicy.adminFrom) -}}
{{- fail "fieldseal: metrics.serviceMonitor.enabled with networkPolicy.enabled needs networkPolicy.adminFrom: the NetworkPolicy admits no pod to the admin port, so Prometheus could not scrape /metrics. Add your Prometheus pods, e.g. adminFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}, podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}}]." -}}
{{- end -}}
{{- if and $v.config.existingConfigMap (or $v.config.routes $v.config.headers $v.config.fields $v.config.guard $v.config.identity) -}}
{{- fail "fieldseal: config.existingConfigMap is set, so config.routes, config.headers, config.fields, config.guard and config.identity would be ignored; move them into that ConfigMap or unset existingConfigMap." -}}
{{- end -}}
{{- end -}}

{{/*
The ingress rules (a list, for `spec.ingress`) of a NetworkPolicy selecting fieldseal pods:
the https port from networkPolicy.httpsFrom (empty: any source), and the admin port only from
networkPolicy.adminFrom (empty: no rule for it at all, so no pod reaches /healthz, /readyz or
/metrics). Nothing else — the app's own port in particular — is admitted. The kubelet's probes
are not blocked: NetworkPolicy always admits traffic from the pod's own node, and kubectl
exec/port-forward reach the admin port over the pod's loopback, which no policy filters.
Used by templates/networkpolicy.yaml and, in mode sidecarOnly, by your chart's own policy.
*/}}
{{- define "fieldseal.networkPolicyIngress" -}}
{{- include "fieldseal.validate" . -}}
- ports:
    - port: https
      protocol: TCP
  {{- with .Values.networkPolicy.httpsFrom }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- with .Values.networkPolicy.adminFrom }}
- ports:
    - port: admin
      protocol: TCP
  from:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
=====================================================================================
The fieldseal configuration file (contract §4), rendered from values.
=====================================================================================
*/}}
{{- define "fieldseal.configYaml" -}}
{{- $v := .Values -}}
{{- $c := $v.config -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%v" $v.fieldseal.ports.https) -}}
{{- $_ := set $cfg "admin" (printf "0.0.0.0:%v" $v.fieldseal.ports.admin) -}}
{{- $_ := set $cfg "upstream" (default (printf "http://127.0.0.1:%v" $v.app.port) $c.upstream) -}}
{{- if not (kindIs "invalid" $c.workers) }}{{ $_ := set $cfg "workers" $c.workers }}{{ end -}}
{{- $tls := dict "cert" (printf "%s/tls.crt" (include "fieldseal.paths.tls" .)) "key" (printf "%s/tls.key" (include "fieldseal.paths.tls" .)) -}}
{{- if $v.tls.clientCA.enabled -}}
{{- $_ := set $tls "client_ca" (printf "%s/%s" (include "fieldseal.paths.clientCA" .) "ca.crt") -}}
{{- end -}}
{{- $_ := set $cfg "tls" $tls -}}
{{- $keys := dict "keyring" (printf "%s/keyring.json" (include "fieldseal.paths.keys" .)) -}}
{{- if $v.keys.rsa.enabled }}{{ $_ := set $keys "rsa_private_key" (printf "%s/rsa.pem" (include "fieldseal.paths.keys" .)) }}{{ end -}}
{{- /* HPKE keys: X25519 first, then the post-quantum X-Wing key; one path stays a string. */ -}}
{{- $hpke := list -}}
{{- if $v.keys.hpke.enabled }}{{ $hpke = append $hpke (printf "%s/x25519.pem" (include "fieldseal.paths.keys" .)) }}{{ end -}}
{{- if $v.keys.hpkePq.enabled }}{{ $hpke = append $hpke (printf "%s/xwing.pem" (include "fieldseal.paths.keys" .)) }}{{ end -}}
{{- if eq (len $hpke) 1 }}{{ $_ := set $keys "hpke_private_key" (first $hpke) }}{{ else if $hpke }}{{ $_ := set $keys "hpke_private_key" $hpke }}{{ end -}}
{{- if $v.keys.publicKeyPath }}{{ $_ := set $keys "public_key_path" $v.keys.publicKeyPath }}{{ end -}}
{{- if $v.keys.rotation }}{{ $_ := set $keys "rotation" $v.keys.rotation }}{{ end -}}
{{- if $v.keys.wrapping.existingSecret -}}
{{- $file := printf "%s/%s" (include "fieldseal.paths.kek" .) $v.keys.wrapping.type -}}
{{- if eq $v.keys.wrapping.type "kek" }}{{ $_ := set $keys "keyring_kek_file" $file }}{{ else }}{{ $_ := set $keys "keyring_passphrase_file" $file }}{{ end -}}
{{- end -}}
{{- $_ := set $cfg "keys" $keys -}}
{{- with $c.headers }}{{ $_ := set $cfg "headers" . }}{{ end -}}
{{- $timeouts := dict -}}
{{- range $k, $t := ($c.timeouts | default dict) }}{{ if not (kindIs "invalid" $t) }}{{ $_ := set $timeouts $k $t }}{{ end }}{{ end -}}
{{- with $timeouts }}{{ $_ := set $cfg "timeouts" . }}{{ end -}}
{{- $limits := dict -}}
{{- range $k, $l := ($c.limits | default dict) }}{{ if not (kindIs "invalid" $l) }}{{ $_ := set $limits $k $l }}{{ end }}{{ end -}}
{{- with $limits }}{{ $_ := set $cfg "limits" . }}{{ end -}}
{{- $_ := set $cfg "reload" (dict "watch" $c.reload.watch "interval" $c.reload.interval) -}}
{{- if $c.audit.enabled -}}
{{- $sink := $c.audit.sink -}}
{{- if not (or (eq $sink "stdout") (eq $sink "-")) }}{{ $sink = printf "%s/%s" (include "fieldseal.paths.auditLog" .) $sink }}{{ end -}}
{{- $_ := set $cfg "audit" (dict "sink" $sink "key_file" (printf "%s/audit.key" (include "fieldseal.paths.audit" .))) -}}
{{- end -}}
{{- if eq (include "fieldseal.replayRedis" .) "true" -}}
{{- $r := $c.replay.redis -}}
{{- $dir := include "fieldseal.paths.replay" . -}}
{{- $redis := dict "url" $r.url "key_file" (printf "%s/replay.key" $dir) -}}
{{- with $r.username }}{{ $_ := set $redis "username" . }}{{ end -}}
{{- if $r.passwordKey }}{{ $_ := set $redis "password_file" (printf "%s/redis-password" $dir) }}{{ end -}}
{{- with $r.prefix }}{{ $_ := set $redis "prefix" . }}{{ end -}}
{{- with $r.timeout }}{{ $_ := set $redis "timeout" . }}{{ end -}}
{{- $_ := set $cfg "replay" (dict "store" "redis" "redis" $redis) -}}
{{- end -}}
{{- $_ := set $cfg "routes" ($c.routes | default list) -}}
{{- with $c.fields }}{{ $_ := set $cfg "fields" . }}{{ end -}}
{{- with $c.guard }}{{ $_ := set $cfg "guard" . }}{{ end -}}
{{- with $c.identity }}{{ $_ := set $cfg "identity" . }}{{ end -}}
# Rendered by the fieldseal Helm chart from its `config` values. Edit the values, not this file.
{{- range $k := list "listen" "upstream" "admin" "workers" "tls" "keys" "headers" "timeouts" "limits" "reload" "audit" "replay" "routes" "fields" "guard" "identity" }}
{{- if hasKey $cfg $k }}
{{ toYaml (dict $k (get $cfg $k)) }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
=====================================================================================
PUBLIC NAMED TEMPLATES — add fieldseal to your own pod spec.
Context: (dict "Values" .Values.fieldseal "Release" .Release) from a parent chart, or `.` here.
See README.md "Using the named templates" and examples/user-chart.
=====================================================================================
*/}}

{{/*
fieldseal.configMap — the ConfigMap manifest (a whole document). Only needed when your chart
renders it itself; with this chart as a dependency in mode sidecarOnly it is rendered for you.
*/}}
{{- define "fieldseal.configMap" -}}
{{- include "fieldseal.validate" . -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "fieldseal.fullname" . }}
  labels:
    {{- include "fieldseal.safeLabels" . | nindent 4 }}
    app.kubernetes.io/component: config
data:
  fieldseal.yaml: |
    {{- include "fieldseal.configYaml" . | nindent 4 }}
{{- end -}}

{{/*
fieldseal.podAnnotations — checksum annotations for the pod template (a YAML map body):
a change of the rendered configuration (or of a chart-rendered dev TLS Secret) rolls the pods.
Secrets you manage (keys.existingSecret, tls.existingSecret, cert-manager) are NOT checksummed:
fieldseal hot-reloads them in place (config.reload.watch), no rollout needed.
*/}}
{{- define "fieldseal.podAnnotations" -}}
{{- if not .Values.config.existingConfigMap }}
checksum/config: {{ include "fieldseal.configYaml" . | sha256sum }}
{{- end }}
{{- if .Values.tls.selfSigned.enabled }}
checksum/tls-selfsigned: {{ (include "fieldseal.selfSignedCert" . | fromYaml).crt | sha256sum }}
{{- end }}
{{- end -}}

{{/* fieldseal.podSecurityContext — the pod securityContext the sidecar expects (fsGroup). */}}
{{- define "fieldseal.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{/* A probe on the admin port. Args: list ctx probeValues path */}}
{{- define "fieldseal.probe" -}}
{{- $p := index . 1 -}}
httpGet:
  path: {{ index . 2 }}
  port: admin
  scheme: HTTP
{{- range $k := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "successThreshold" "failureThreshold" }}
{{- if hasKey $p $k }}
{{ $k }}: {{ index $p $k }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
fieldseal.sidecar — the fieldseal container, as one list item. Put it under `containers:`, or
under `initContainers:` when nativeSidecar is true (it then carries restartPolicy: Always).
fieldseal.containers / fieldseal.initContainers place it for you.
*/}}
{{- define "fieldseal.sidecar" -}}
{{- include "fieldseal.validate" . -}}
{{- $v := .Values -}}
{{- $fs := $v.fieldseal -}}
- name: {{ $fs.containerName }}
  image: {{ include "fieldseal.image" . | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if $v.nativeSidecar }}
  # Native sidecar (K8s >= 1.29): started before the app, stopped after it.
  restartPolicy: Always
  {{- end }}
  command:
    {{- toYaml $fs.command | nindent 4 }}
  args:
    - run
    - --config
    - {{ printf "%s/%s" (include "fieldseal.paths.config" .) (include "fieldseal.configMapKey" .) | quote }}
    {{- with $fs.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  env:
    - name: FIELDSEAL_LOG_FORMAT
      value: {{ $fs.logFormat | quote }}
    {{- with $fs.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: https
      containerPort: {{ $fs.ports.https }}
      protocol: TCP
    - name: admin
      containerPort: {{ $fs.ports.admin }}
      protocol: TCP
  {{- if $fs.probes.startup.enabled }}
  startupProbe:
    {{- include "fieldseal.probe" (list . $fs.probes.startup "/readyz") | nindent 4 }}
  {{- end }}
  {{- if $fs.probes.readiness.enabled }}
  readinessProbe:
    {{- include "fieldseal.probe" (list . $fs.probes.readiness "/readyz") | nindent 4 }}
  {{- end }}
  {{- if $fs.probes.liveness.enabled }}
  livenessProbe:
    {{- include "fieldseal.probe" (list . $fs.probes.liveness "/healthz") | nindent 4 }}
  {{- end }}
  {{- if gt (int $v.lifecycle.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ int $v.lifecycle.preStopSleepSeconds }}
  {{- end }}
  resources:
    {{- toYaml $fs.resources | nindent 4 }}
  securityContext:
    {{- toYaml $fs.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "fieldseal.volumeMounts" . | nindent 4 }}
{{- end -}}

{{/* The fieldseal container's volume mounts (all read-only except the audit log directory). */}}
{{- define "fieldseal.volumeMounts" -}}
{{- $v := .Values -}}
- name: fieldseal-config
  mountPath: {{ include "fieldseal.paths.config" . }}
  readOnly: true
- name: fieldseal-tls
  mountPath: {{ include "fieldseal.paths.tls" . }}
  readOnly: true
{{- if $v.tls.clientCA.enabled }}
- name: fieldseal-client-ca
  mountPath: {{ include "fieldseal.paths.clientCA" . }}
  readOnly: true
{{- end }}
- name: fieldseal-keys
  mountPath: {{ include "fieldseal.paths.keys" . }}
  readOnly: true
{{- if $v.keys.wrapping.existingSecret }}
- name: fieldseal-kek
  mountPath: {{ include "fieldseal.paths.kek" . }}
  readOnly: true
{{- end }}
{{- if eq (include "fieldseal.replayRedis" .) "true" }}
- name: fieldseal-replay
  mountPath: {{ include "fieldseal.paths.replay" . }}
  readOnly: true
{{- end }}
{{- if $v.config.audit.enabled }}
- name: fieldseal-audit-key
  mountPath: {{ include "fieldseal.paths.audit" . }}
  readOnly: true
{{- if not (or (eq $v.config.audit.sink "stdout") (eq $v.config.audit.sink "-")) }}
- name: fieldseal-audit-log
  mountPath: {{ include "fieldseal.paths.auditLog" . }}
{{- end }}
{{- end }}
{{- with $v.fieldseal.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
fieldseal.volumes — the pod volumes the sidecar mounts, as list items for `volumes:`.
No subPath anywhere: the kubelet's in-place updates of Secrets and ConfigMaps must reach the
files fieldseal watches.
*/}}
{{- define "fieldseal.volumes" -}}
{{- $v := .Values -}}
- name: fieldseal-config
  configMap:
    name: {{ include "fieldseal.configMapName" . }}
    items:
      - key: {{ include "fieldseal.configMapKey" . }}
        path: {{ include "fieldseal.configMapKey" . }}
- name: fieldseal-tls
  secret:
    secretName: {{ include "fieldseal.tlsSecretName" . }}
    defaultMode: {{ int $v.tls.defaultMode }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if $v.tls.clientCA.enabled }}
- name: fieldseal-client-ca
  secret:
    secretName: {{ default (include "fieldseal.tlsSecretName" .) $v.tls.clientCA.existingSecret }}
    defaultMode: {{ int $v.tls.defaultMode }}
    items:
      - key: {{ $v.tls.clientCA.secretKey }}
        path: ca.crt
{{- end }}
{{- if $v.keys.generate.enabled }}
# DEV ONLY (keys.generate.enabled): keys generated at pod start, lost with the pod.
- name: fieldseal-keys
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- else }}
- name: fieldseal-keys
  secret:
    secretName: {{ include "fieldseal.keysSecretName" . }}
    defaultMode: {{ int $v.keys.defaultMode }}
    items:
      - key: {{ $v.keys.keyringKey }}
        path: keyring.json
      {{- if $v.keys.rsa.enabled }}
      - key: {{ $v.keys.rsa.secretKey }}
        path: rsa.pem
      {{- end }}
      {{- if $v.keys.hpke.enabled }}
      - key: {{ $v.keys.hpke.secretKey }}
        path: x25519.pem
      {{- end }}
      {{- if $v.keys.hpkePq.enabled }}
      - key: {{ $v.keys.hpkePq.secretKey }}
        path: xwing.pem
      {{- end }}
{{- end }}
{{- if $v.keys.wrapping.existingSecret }}
- name: fieldseal-kek
  secret:
    secretName: {{ $v.keys.wrapping.existingSecret }}
    defaultMode: {{ int $v.keys.defaultMode }}
    items:
      - key: {{ $v.keys.wrapping.secretKey }}
        path: {{ $v.keys.wrapping.type }}
{{- end }}
{{- if eq (include "fieldseal.replayRedis" .) "true" }}
- name: fieldseal-replay
  secret:
    secretName: {{ $v.config.replay.redis.existingSecret }}
    defaultMode: {{ int $v.config.replay.redis.defaultMode }}
    items:
      - key: {{ $v.config.replay.redis.keyKey }}
        path: replay.key
      {{- with $v.config.replay.redis.passwordKey }}
      - key: {{ . }}
        path: redis-password
      {{- end }}
{{- end }}
{{- if $v.config.audit.enabled }}
- name: fieldseal-audit-key
  secret:
    secretName: {{ $v.config.audit.existingSecret }}
    defaultMode: {{ int $v.keys.defaultMode }}
    items:
      - key: {{ $v.config.audit.secretKey }}
        path: audit.key
{{- if not (or (eq $v.config.audit.sink "stdout") (eq $v.config.audit.sink "-")) }}
- name: fieldseal-audit-log
  {{- toYaml $v.config.audit.volume | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
fieldseal.keygenInitContainers — DEV ONLY (keys.generate.enabled): init containers writing a
fresh keyring (and client keys) into the fieldseal-keys emptyDir. Empty otherwise.
*/}}
{{- define "fieldseal.keygenInitContainers" -}}
{{- $v := .Values -}}
{{- if $v.keys.generate.enabled -}}
{{- $keys := include "fieldseal.paths.keys" . -}}
{{- $cmds := list (list "keygen-keyring" (list "keys" "init" "--out" (printf "%s/keyring.json" $keys))) -}}
{{- if $v.keys.wrapping.existingSecret -}}
{{- $flag := ternary "--kek-file" "--passphrase-file" (eq $v.keys.wrapping.type "kek") -}}
{{- $cmds = list (list "keygen-keyring" (list "keys" "init" "--out" (printf "%s/keyring.json" $keys) "--wrap" $flag (printf "%s/%s" (include "fieldseal.paths.kek" .) $v.keys.wrapping.type))) -}}
{{- end -}}
{{- if and $v.keys.generate.clientKeys $v.keys.rsa.enabled -}}
{{- $cmds = append $cmds (list "keygen-rsa" (list "rsa" "generate" "--out" (printf "%s/rsa.pem" $keys))) -}}
{{- end -}}
{{- if and $v.keys.generate.clientKeys $v.keys.hpke.enabled -}}
{{- $cmds = append $cmds (list "keygen-hpke" (list "hpke" "generate" "--out" (printf "%s/x25519.pem" $keys))) -}}
{{- end -}}
{{- if and $v.keys.generate.clientKeys $v.keys.hpkePq.enabled -}}
{{- $cmds = append $cmds (list "keygen-hpke-pq" (list "hpke" "generate" "--kem" "xwing" "--out" (printf "%s/xwing.pem" $keys))) -}}
{{- end -}}
{{- range $cmds }}
- name: {{ printf "%s-%s" $v.fieldseal.containerName (index . 0) }}
  # DEV ONLY: a fresh key per pod, lost when the pod goes (keys.generate.enabled).
  image: {{ include "fieldseal.image" $ | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  command:
    {{- toYaml $v.fieldseal.command | nindent 4 }}
  args:
    {{- toYaml (index . 1) | nindent 4 }}
  resources:
    {{- toYaml $v.fieldseal.resources | nindent 4 }}
  securityContext:
    {{- toYaml $v.fieldseal.securityContext | nindent 4 }}
  volumeMounts:
    - name: fieldseal-keys
      mountPath: {{ $keys }}
    {{- if $v.keys.wrapping.existingSecret }}
    - name: fieldseal-kek
      mountPath: {{ include "fieldseal.paths.kek" $ }}
      readOnly: true
    {{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* fieldseal.initContainers — list items for `initContainers:` (dev key generation, then the
native sidecar when nativeSidecar is true). May be empty. */}}
{{- define "fieldseal.initContainers" -}}
{{- $out := include "fieldseal.keygenInitContainers" . | trim -}}
{{- if .Values.nativeSidecar -}}
{{- $out = printf "%s\n%s" $out (include "fieldseal.sidecar" .) | trim -}}
{{- end -}}
{{- $out -}}
{{- end -}}

{{/* fieldseal.containers — list items for `containers:` (the sidecar unless nativeSidecar). */}}
{{- define "fieldseal.containers" -}}
{{- if not .Values.nativeSidecar -}}
{{- include "fieldseal.sidecar" . -}}
{{- end -}}
{{- end -}}

{{/* True when the pod has init containers from fieldseal. */}}
{{- define "fieldseal.hasInitContainers" -}}
{{- if or .Values.nativeSidecar .Values.keys.generate.enabled }}true{{ end -}}
{{- end -}}

{{/*
DEV ONLY: the self-signed certificate (tls.selfSigned.enabled) as YAML {crt, key}, generated once
per render and cached so the Secret and the checksum annotation agree; reused from the existing
Secret on upgrade (lookup), so upgrades do not replace it.
*/}}
{{- define "fieldseal.selfSignedCert" -}}
{{- $cache := .Values.tls.selfSigned -}}
{{- if not (hasKey $cache "_generated") -}}
{{- $name := include "fieldseal.tlsSecretName" . -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name -}}
{{- if and $existing $existing.data (hasKey $existing.data "tls.crt") -}}
{{- $_ := set $cache "_generated" (dict "crt" (index $existing.data "tls.crt" | b64dec) "key" (index $existing.data "tls.key" | b64dec)) -}}
{{- else -}}
{{- $svc := include "fieldseal.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- $dns := concat (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) "localhost") .Values.tls.selfSigned.extraDnsNames -}}
{{- $cert := genSelfSignedCert $svc (list "127.0.0.1") $dns (int .Values.tls.selfSigned.days) -}}
{{- $_ := set $cache "_generated" (dict "crt" $cert.Cert "key" $cert.Key) -}}
{{- end -}}
{{- end -}}
{{- toYaml (get $cache "_generated") -}}
{{- end -}}
