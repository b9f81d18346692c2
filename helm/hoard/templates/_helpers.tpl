{{/* Names and labels. */}}
{{- define "hoard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hoard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "hoard.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "hoard.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "hoard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hoard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hoard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "hoard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hoard.secretName" -}}
{{- default (include "hoard.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* Where the pod keeps its state: the cache volume holds the pages and the metastore (runtime mounts). */}}
{{- define "hoard.cacheMountPath" -}}/var/cache/hoard{{- end }}

{{/* A mount's secret option as a key of the chart's Secret. */}}
{{- define "hoard.mountSecretKey" -}}
{{- printf "mount-%d-%s" (int .index) .key }}
{{- end }}

{{/*
The Hoard YAML config. Credentials are not in it: the admin user comes from HOARD_AUTH__ACCESS_KEY /
HOARD_AUTH__SECRET_KEY, mount secrets from HOARD_MOUNTS__<i>__OPTIONS__<KEY>, all from the Secret.
*/}}
{{- define "hoard.config" -}}
{{- $server := dict "port" (int .Values.server.port) "workers" (int .Values.server.workers) }}
{{- with .Values.server.domain }}{{- $_ := set $server "domain" . }}{{- end }}
{{- $cache := dict
      "dir" (printf "%s/pages" (include "hoard.cacheMountPath" .))
      "size" .Values.cache.size
      "reserved" .Values.cache.reserved
      "page_size" .Values.cache.pageSize
      "metadata_ttl" .Values.cache.metadataTtl }}
{{- with .Values.cache.rules }}{{- $_ := set $cache "rules" . }}{{- end }}
{{- $mounts := list }}
{{- range .Values.mounts }}
{{- $mounts = append $mounts (omit . "secretOptions") }}
{{- end }}
{{- $config := dict
      "server" $server
      "auth" (dict "anonymous" .Values.auth.anonymous)
      "cache" $cache
      "metastore" (dict "dir" (printf "%s/meta" (include "hoard.cacheMountPath" .)))
      "mounts" $mounts
      "cluster" .Values.cluster }}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.extraConfig)) }}
{{- end }}
