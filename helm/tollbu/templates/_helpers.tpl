{{/* Chart name. */}}
{{- define "tollbu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "tollbu.fullname" -}}
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

{{/* Namespace of every namespaced object. */}}
{{- define "tollbu.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/* Chart label. */}}
{{- define "tollbu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "tollbu.labels" -}}
helm.sh/chart: {{ include "tollbu.chart" . }}
{{ include "tollbu.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollbu
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the gateway pods. */}}
{{- define "tollbu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollbu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "tollbu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tollbu.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Gateway image reference: digest wins over tag. */}}
{{- define "tollbu.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Test image reference. */}}
{{- define "tollbu.testImage" -}}
{{- if .Values.tests.image.digest }}
{{- printf "%s@%s" .Values.tests.image.repository .Values.tests.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.tests.image.repository .Values.tests.image.tag }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the gateway's server certificate. */}}
{{- define "tollbu.tlsSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-tls" (include "tollbu.fullname" .) }}
{{- else }}
{{- .Values.gateway.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* Secret names of the audit keys. */}}
{{- define "tollbu.signingKeySecret" -}}
{{- default (printf "%s-audit" (include "tollbu.fullname" .)) .Values.audit.signingKey.existingSecret }}
{{- end }}
{{- define "tollbu.pseudonymKeySecret" -}}
{{- default (printf "%s-audit" (include "tollbu.fullname" .)) .Values.audit.pseudonymKey.existingSecret }}
{{- end }}

{{/* Name of the policies ConfigMap. */}}
{{- define "tollbu.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "tollbu.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{/* Whether more than one replica can run (PodDisruptionBudget has an effect). */}}
{{- define "tollbu.multiReplica" -}}
{{- if .Values.autoscaling.enabled }}
{{- if gt (int .Values.autoscaling.minReplicas) 1 }}true{{ end }}
{{- else if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* Whether the ServiceMonitor is rendered. */}}
{{- define "tollbu.serviceMonitor" -}}
{{- if .Values.metrics.serviceMonitor.enabled }}
{{- $api := .Capabilities.APIVersions }}
{{- if or .Values.metrics.serviceMonitor.force ($api.Has "monitoring.coreos.com/v1/ServiceMonitor") ($api.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}
{{- end }}

{{/* tollbu.toml, rendered from .Values.config. Strings are written with toJson (a valid TOML basic string). */}}
{{- define "tollbu.config" -}}
{{- $c := .Values.config -}}
# tollbu.toml rendered by the {{ include "tollbu.chart" . }} Helm chart. Do not edit in the cluster.
# `${POD_NAME}` in `origin` is replaced by the gateway at start (downward API), so that
# every replica of the StatefulSet has its own audit log identity.

[gateway]
{{- if .Values.gateway.plain.enabled }}
listen = {{ printf "%s:%d" .Values.gateway.bindAddress (int .Values.gateway.plain.port) | toJson }}
{{- end }}
{{- if .Values.gateway.tls.enabled }}

[gateway.tls]
listen = {{ printf "%s:%d" .Values.gateway.bindAddress (int .Values.gateway.tls.port) | toJson }}
cert = "/etc/tollbu/tls/tls.crt"
key = "/etc/tollbu/tls/tls.key"
{{- if .Values.gateway.tls.clientCA.enabled }}
client_ca = "/etc/tollbu/client-ca/ca.crt"
{{- end }}
{{- end }}

[admin]
listen = {{ printf "%s:%d" .Values.gateway.bindAddress (int .Values.admin.port) | toJson }}
{{- with $c.limits }}

[limits]
{{- range $key, $value := . }}
{{ $key }} = {{ int64 $value }}
{{- end }}
{{- end }}
{{- range $i, $issuer := $c.issuers }}

[[issuer]]
issuer = {{ $issuer.issuer | toJson }}
jwks_url = {{ $issuer.jwksUrl | toJson }}
{{- with $issuer.algorithms }}
algorithms = {{ toJson . }}
{{- end }}
{{- with $issuer.audience }}
audience = {{ toJson . }}
{{- end }}
{{- if hasKey $issuer "leewaySecs" }}
leeway_secs = {{ int64 $issuer.leewaySecs }}
{{- end }}
{{- if hasKey $issuer "maxTokenAgeSecs" }}
max_token_age_secs = {{ int64 $issuer.maxTokenAgeSecs }}
{{- end }}
{{- if hasKey $issuer "jwksRefreshSecs" }}
jwks_refresh_secs = {{ int64 $issuer.jwksRefreshSecs }}
{{- end }}
{{- if hasKey $issuer "jwksMinRefetchSecs" }}
jwks_min_refetch_secs = {{ int64 $issuer.jwksMinRefetchSecs }}
{{- end }}
{{- if $issuer.caSecret }}
ca = {{ printf "/etc/tollbu/issuers/%d/ca.crt" $i | toJson }}
{{- end }}
{{- end }}
{{- range $c.services }}

[[service]]
id = {{ .id | toJson }}
upstream = {{ .upstream | toJson }}
{{- with .issuers }}
issuers = {{ toJson . }}
{{- end }}
{{- if .tlsSecret }}
upstream_ca = {{ printf "/etc/tollbu/upstreams/%s/ca.crt" .id | toJson }}
{{- if .mtls }}
upstream_client_cert = {{ printf "/etc/tollbu/upstreams/%s/tls.crt" .id | toJson }}
upstream_client_key = {{ printf "/etc/tollbu/upstreams/%s/tls.key" .id | toJson }}
{{- end }}
{{- end }}
{{- end }}

[policies]
dir = "/etc/tollbu/policies"

[audit]
dir = {{ printf "/var/lib/tollbu/audit/%s" $c.audit.generation | toJson }}
origin = {{ printf "%s/${POD_NAME}/%s" $c.audit.originPrefix $c.audit.generation | toJson }}
signing_key = "/etc/tollbu/audit-keys/signing-key.pem"
pseudonym_key = "/etc/tollbu/audit-keys/pseudonym.key"
durability = {{ $c.audit.durability | toJson }}
checkpoint_every = {{ int64 $c.audit.checkpointEvery }}
checkpoint_interval_secs = {{ int64 $c.audit.checkpointIntervalSecs }}
{{- if $c.audit.retentionDays }}
retention_days = {{ int64 $c.audit.retentionDays }}
{{- end }}
{{- with $c.audit.retiredGenerations }}
{{- if has $c.audit.generation . }}
{{- fail (printf "config.audit.retiredGenerations lists %s, the current generation" $c.audit.generation) }}
{{- end }}
retired_dirs = [{{ range $i, $g := . }}{{ if $i }}, {{ end }}{{ printf "/var/lib/tollbu/audit/%s" $g | toJson }}{{ end }}]
{{- end }}
{{- with $c.telemetry }}
{{- if .otlpEndpoint }}

[telemetry]
otlp_endpoint = {{ .otlpEndpoint | toJson }}
service_name = {{ .serviceName | toJson }}
export_interval_ms = {{ int64 .exportIntervalMs }}
{{- end }}
{{- end }}
{{- end }}

{{/* The config actually mounted. */}}
{{- define "tollbu.configText" -}}
{{- if .Values.config.rawToml }}
{{- .Values.config.rawToml }}
{{- else }}
{{- include "tollbu.config" . }}
{{- end }}
{{- end }}
