{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "sensor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, with the chart's unless it contains it. */}}
{{- define "sensor.fullname" -}}
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

{{- define "sensor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sensor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sensor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sensor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image: repository is required, a digest wins over the tag. */}}
{{- define "sensor.image" -}}
{{- $repo := required "image.repository is required: the sensor has no public image; build it with `cargo xtask image`, push it, and pass --set image.repository=REGISTRY/sensor" .Values.image.repository }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "sensor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sensor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret mounted at /etc/sensor/secrets, or "" for none. */}}
{{- define "sensor.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else if .Values.secrets.create }}
{{- printf "%s-secrets" (include "sensor.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sensor.secretsDir" -}}/etc/sensor/secrets{{- end }}
{{- define "sensor.configDir" -}}/etc/sensor/config{{- end }}
{{- define "sensor.stateDir" -}}/var/lib/sensor{{- end }}

{{/* "true" when a file sink is configured (the events directory is mounted). */}}
{{- define "sensor.hasFileSink" -}}
{{- range .Values.config.sinks }}
{{- if eq (toString .type) "file" }}true{{ end }}
{{- end }}
{{- end }}

{{/*
A value as TOML: strings, numbers and booleans as JSON (a JSON string is a
valid TOML basic string), lists as arrays, maps as inline tables.
*/}}
{{- define "sensor.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "map" $v -}}
{ {{- $first := true -}}
{{- range $k, $x := $v -}}
{{- if not $first }},{{ end }} {{ toJson (toString $k) }} = {{ include "sensor.tomlValue" $x }}
{{- $first = false -}}
{{- end }} }
{{- else if kindIs "slice" $v -}}
[{{- range $i, $x := $v -}}{{ if $i }}, {{ end }}{{ include "sensor.tomlValue" $x }}{{- end -}}]
{{- else if kindIs "invalid" $v -}}
{{- fail "sensor.toml: a null value has no TOML form; remove the key instead" -}}
{{- else -}}
{{- toJson $v -}}
{{- end -}}
{{- end }}

{{/* sensor.toml */}}
{{- define "sensor.toml" -}}
# Rendered by the sensor Helm chart from .Values.config; README
# "Configuration" describes every key.
host_root = {{ toJson .Values.hostRoot.mountPath }}
{{- $secret := include "sensor.secretName" . }}
{{- if $secret }}
fingerprint_key_file = {{ printf "%s/fingerprint.key" (include "sensor.secretsDir" .) | toJson }}
integrity_key_file = {{ printf "%s/integrity.key" (include "sensor.secretsDir" .) | toJson }}
{{- else }}
# No Secret: each node creates keys of its own in the state directory.
fingerprint_key_file = {{ printf "%s/fingerprint.key" (include "sensor.stateDir" .) | toJson }}
integrity_key_file = {{ printf "%s/integrity.key" (include "sensor.stateDir" .) | toJson }}
{{- end }}
spool_dir = {{ printf "%s/spool" (include "sensor.stateDir" .) | toJson }}
{{- if .Values.metrics.enabled }}
metrics_address = {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | toJson }}
{{- end }}
{{- with .Values.config.hostName }}
host_name = {{ toJson . }}
{{- end }}
{{- if .Values.policy }}
policy_file = {{ printf "%s/policy.toml" (include "sensor.configDir" .) | toJson }}
{{- end }}
{{- with .Values.config.events }}
events = {{ include "sensor.tomlValue" . }}
{{- end }}
health_interval_secs = {{ int64 .Values.config.healthIntervalSecs }}
ring_buffer_bytes = {{ int64 .Values.config.ringBufferBytes }}
spiffe_trust_domain = {{ toJson .Values.config.spiffeTrustDomain }}
credential_share_window_secs = {{ int64 .Values.config.credentialShareWindowSecs }}
{{- with .Values.config.extraConfig }}

# config.extraConfig
{{ . | trim }}
{{- end }}
{{- $eventsDir := trimSuffix "/" .Values.eventsDir.mountPath }}
{{- range $i, $sink := required "config.sinks must list at least one sink" .Values.config.sinks }}
{{- if not (kindIs "map" $sink) }}
{{- fail (printf "config.sinks[%d] must be a map of sink keys" $i) }}
{{- end }}
{{- $name := required (printf "config.sinks[%d].name is required" $i) $sink.name }}
{{- $type := toString (required (printf "config.sinks[%d] (%s): type is required" $i $name) $sink.type) }}
{{- if not (regexMatch "^(stdout|file|syslog|http)$" $type) }}
{{- fail (printf "config.sinks[%d] (%s): type %q must be stdout, file, syslog or http" $i $name $type) }}
{{- end }}
{{- if eq $type "file" }}
{{- $path := toString (required (printf "config.sinks[%d] (%s): a file sink needs a path" $i $name) $sink.path) }}
{{- if not (or (hasPrefix (printf "%s/" $eventsDir) $path) (hasPrefix (printf "%s/" (include "sensor.stateDir" $)) $path)) }}
{{- fail (printf "config.sinks[%d] (%s): path %s must be below eventsDir.mountPath (%s/) or %s/, the pod's only writable directories" $i $name $path $eventsDir (include "sensor.stateDir" $)) }}
{{- end }}
{{- end }}

[[sinks]]
{{- range $k, $v := $sink }}
{{- if not (regexMatch "^[a-z_]+$" $k) }}
{{- fail (printf "config.sinks[%d] (%s): key %q is not a sensor sink key (snake_case, as in the README)" $i $name $k) }}
{{- end }}
{{ $k }} = {{ include "sensor.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
