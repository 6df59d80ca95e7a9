{{/* The chart's name: "knd" unless nameOverride. */}}
{{- define "knd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The name of the release's objects (DaemonSet, ServiceAccount, ClusterRole, ...): the
release name when it contains the chart's name ("knd" for `helm install knd`), else
<release>-<name>; fullnameOverride wins.
*/}}
{{- define "knd.fullname" -}}
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

{{- define "knd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "knd.labels" -}}
app.kubernetes.io/name: {{ include "knd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: knd
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "knd.chart" . }}
{{- end }}

{{/* The DaemonSet's selector (immutable: keep it stable across chart versions). */}}
{{- define "knd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "knd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node-agent
{{- end }}

{{- define "knd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "knd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}; the tag defaults to appVersion. */}}
{{- define "knd.image" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (toString (default $root.Chart.AppVersion $image.tag)) }}
{{- end }}
{{- end }}

{{/* Where every container mounts its part of the in-memory bus volume. */}}
{{- define "knd.busDir" -}}
/run/knd/bus
{{- end }}

{{/*
The environment every service shares, in this order; then each adds its own.
Called with (list $ <metricsPort>).
*/}}
{{- define "knd.serviceEnv" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 }}
- name: KND_NODE
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: KND_DRIVER_NAME
  value: {{ $root.Values.driverName | quote }}
- name: KND_STATE_DIR
  value: {{ $root.Values.stateDir | quote }}
- name: KND_BUS_CREDS
  value: {{ include "knd.busDir" $root }}/creds.json
- name: KND_LOG_LEVEL
  value: {{ $root.Values.logLevel | quote }}
{{- if $root.Values.logJson }}
- name: KND_LOG_JSON
  value: "1"
{{- end }}
- name: KND_METRICS_ADDRESS
  value: {{ printf "0.0.0.0:%d" (int $port) | quote }}
{{- end }}

{{/* A service's metrics port and probes (/healthz liveness, /readyz readiness). */}}
{{- define "knd.serviceProbes" -}}
ports:
- name: metrics
  containerPort: {{ int . }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ int . }}}
  initialDelaySeconds: 10
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: {{ int . }}}
  periodSeconds: 5
  failureThreshold: 3
{{- end }}

{{/* The securityContext every container starts from; (list <uid> <capabilities to add>). */}}
{{- define "knd.securityContext" -}}
{{- $uid := index . 0 }}
{{- $add := index . 1 }}
runAsUser: {{ $uid }}
runAsGroup: {{ $uid }}
{{- if ne (int $uid) 0 }}
runAsNonRoot: true
{{- end }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
  {{- if $add }}
  add: {{ toJson $add }}
  {{- end }}
{{- end }}
