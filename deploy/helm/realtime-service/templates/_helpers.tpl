{{/* The chart's name, and the release's full name (the prefix of every object). */}}
{{- define "rs.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rs.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "rs.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "rs.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rs.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "rs.labels" -}}
{{ include "rs.selectorLabels" . }}
app.kubernetes.io/component: centrifugo-proxy
app.kubernetes.io/part-of: realtime
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "rs.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "rs.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "rs.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secrets, existing or the chart's own. */}}
{{- define "rs.proxySecretName" -}}
{{- if .Values.proxySecret.existingSecret -}}
{{- .Values.proxySecret.existingSecret -}}
{{- else -}}
{{- if not .Values.proxySecret.secret -}}
{{- fail "proxySecret: set existingSecret, or secret (at least 16 bytes)" -}}
{{- end -}}
{{- printf "%s-proxy-secret" (include "rs.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "rs.redisSecretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else -}}
{{- if not .Values.redis.url -}}
{{- fail "redis.mode external: set redis.existingSecret, or redis.url" -}}
{{- end -}}
{{- printf "%s-redis" (include "rs.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* A value as an environment variable's text. YAML numbers arrive as float64: whole ones
are written without an exponent (2592000, not 2.592e+06). */}}
{{- define "rs.envText" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The settings ConfigMap's data: `config`, plus what the chart derives from the values. */}}
{{- define "rs.configData" -}}
{{- $data := dict -}}
{{- range $k, $v := .Values.config -}}
{{- $_ := set $data $k (include "rs.envText" $v) -}}
{{- end -}}
{{- $_ := set $data "LISTEN_PORT" (include "rs.envText" .Values.http.port) -}}
{{- $_ := set $data "METRICS_LISTEN_PORT" (include "rs.envText" .Values.metrics.port) -}}
{{- if .Values.grpc.enabled -}}
{{- $_ := set $data "GRPC_PROXY_LISTEN_PORT" (include "rs.envText" .Values.grpc.port) -}}
{{- end -}}
{{- $_ := set $data "CENTRIFUGO_PROXY_SECRET_FILE" "/var/run/realtime/proxy-secret/secret" -}}
{{- $_ := set $data "CENTRIFUGO_PROXY_SECRET_PREVIOUS_FILE" "/var/run/realtime/proxy-secret/previous" -}}
{{- $_ := set $data "FALLBACK_TICKETS_PATH" "/var/run/realtime/fallback" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- $_ := set $data "FALLBACK_LEDGER" "redis" -}}
{{- $_ := set $data "REDIS_KEY_PREFIX" .Values.redis.keyPrefix -}}
{{- $_ := set $data "REDIS_TIMEOUT_MS" (include "rs.envText" .Values.redis.timeoutMs) -}}
{{- $_ := set $data "FALLBACK_LEDGER_TTL_S" (include "rs.envText" .Values.redis.ledgerTtlSeconds) -}}
{{- $_ := set $data "FALLBACK_LEDGER_UNAVAILABLE" .Values.redis.ledgerUnavailable -}}
{{- else -}}
{{- $_ := set $data "FALLBACK_LEDGER" "memory" -}}
{{- end -}}
{{- toYaml $data -}}
{{- end -}}
