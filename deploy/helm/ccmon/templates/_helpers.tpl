{{/*
Names, labels and the checks every render runs. A wrong combination of values stops the render
with a message naming the value (values.schema.json checks each value on its own).
*/}}

{{- define "ccmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ccmon.fullname" -}}
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

{{- define "ccmon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "ccmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: include "ccmon.selectorLabels" (list . "worker") */}}
{{- define "ccmon.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "ccmon.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "ccmon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ccmon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ccmon.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the credentials: the chart's own or secrets.existingSecret. */}}
{{- define "ccmon.secretName" -}}
{{- default (include "ccmon.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "ccmon.kafkaSasl" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end }}
{{- end }}

{{- define "ccmon.redisPassword" -}}
{{- if or .Values.redis.password .Values.redis.passwordFromSecret }}true{{ end }}
{{- end }}

{{/* Where the credentials and certificates are mounted (read-only). */}}
{{- define "ccmon.secretsDir" -}}/etc/ccmon/secrets{{- end }}
{{- define "ccmon.kafkaTlsDir" -}}/etc/ccmon/kafka-tls{{- end }}
{{- define "ccmon.redisTlsDir" -}}/etc/ccmon/redis-tls{{- end }}
{{- define "ccmon.exporterTlsDir" -}}/etc/ccmon/exporter-tls{{- end }}

{{/*
Cross-value checks, included by every template that depends on them (the first failing one
stops the render).
*/}}
{{- define "ccmon.validate" -}}
{{- $w := .Values.worker }}
{{- if gt (int $w.replicas) (int $w.partitions) }}
{{- fail (printf "worker.replicas: %v workers for %v partitions (worker.partitions): a worker beyond the events topic's partition count gets no partition and sits idle; set worker.replicas <= %v, or add partitions to the topic first" $w.replicas $w.partitions $w.partitions) }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if gt (int .Values.keda.maxReplicaCount) (int $w.partitions) }}
{{- fail (printf "keda.maxReplicaCount: %v workers for %v partitions (worker.partitions): KEDA would start idle workers; set keda.maxReplicaCount <= %v" .Values.keda.maxReplicaCount $w.partitions $w.partitions) }}
{{- end }}
{{- if gt (int .Values.keda.minReplicaCount) (int .Values.keda.maxReplicaCount) }}
{{- fail (printf "keda.minReplicaCount: %v is above keda.maxReplicaCount %v" .Values.keda.minReplicaCount .Values.keda.maxReplicaCount) }}
{{- end }}
{{- end }}
{{- if not .Values.secrets.existingSecret }}
{{- $secret := .Values.secrets.customerKeySecret }}
{{- if not $secret }}
{{- fail "secrets.customerKeySecret: required (at least 32 characters, e.g. openssl rand -hex 32; it keys customer record names in Redis, docs/SECURITY.md), or name a Secret holding the key customer-key-secret in secrets.existingSecret" }}
{{- end }}
{{- if lt (len $secret) 32 }}
{{- fail (printf "secrets.customerKeySecret: must be at least 32 characters, got %d characters (value not shown)" (len $secret)) }}
{{- end }}
{{- if and (include "ccmon.kafkaSasl" .) (not .Values.kafka.sasl.password) }}
{{- fail (printf "kafka.sasl.password: required with kafka.securityProtocol %s (or name a Secret holding the key kafka-password in secrets.existingSecret)" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.redis.passwordFromSecret (not .Values.redis.password) }}
{{- fail "redis.passwordFromSecret: needs secrets.existingSecret (a Secret holding the key redis-password), or set redis.password" }}
{{- end }}
{{- if and .Values.exporter.basicAuth.enabled (not .Values.exporter.basicAuth.password) }}
{{- fail "exporter.basicAuth.password: required with exporter.basicAuth.enabled (or name a Secret holding the keys exporter-basic-auth-user and exporter-basic-auth-password in secrets.existingSecret)" }}
{{- end }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- range $name, $value := dict "secrets.customerKeySecret" .Values.secrets.customerKeySecret "kafka.sasl.password" .Values.kafka.sasl.password "redis.password" .Values.redis.password "exporter.basicAuth.password" .Values.exporter.basicAuth.password }}
{{- if $value }}
{{- fail (printf "%s: set, but secrets.existingSecret (%s) provides the credentials: put it in that Secret and leave %s empty (value not shown)" $name $.Values.secrets.existingSecret $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (include "ccmon.kafkaSasl" .) (not .Values.kafka.sasl.username) }}
{{- fail (printf "kafka.sasl.username: required with kafka.securityProtocol %s" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.kafka.tls.existingSecret (not (has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL"))) }}
{{- fail (printf "kafka.tls.existingSecret: set, but kafka.securityProtocol is %s: TLS needs SSL or SASL_SSL" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.redis.tls.existingSecret (not (hasPrefix "rediss://" .Values.redis.url)) }}
{{- fail (printf "redis.tls.existingSecret: set, but redis.url %q is not a rediss:// (TLS) URL" .Values.redis.url) }}
{{- end }}
{{- if regexMatch "^rediss?://[^/@]*:[^/@]*@" .Values.redis.url }}
{{- fail "redis.url: holds a password (value not shown); put it in redis.password (a Secret) instead" }}
{{- end }}
{{- end }}

{{/* Environment shared by the worker and the exporter. */}}
{{- define "ccmon.commonEnv" -}}
- name: CCMON_REDIS_URL
  value: {{ .Values.redis.url | quote }}
- name: CCMON_REDIS_PREFIX
  value: {{ .Values.redis.prefix | quote }}
- name: CCMON_REDIS_CLUSTER
  value: {{ ternary "yes" "no" .Values.redis.cluster | quote }}
- name: CCMON_CONFIG
  value: /etc/ccmon/config/ccmon.toml
{{- if include "ccmon.redisPassword" . }}
- name: CCMON_REDIS_PASSWORD_FILE
  value: {{ include "ccmon.secretsDir" . }}/redis-password
{{- end }}
{{- if .Values.redis.tls.existingSecret }}
- name: CCMON_REDIS_CA_FILE
  value: {{ include "ccmon.redisTlsDir" . }}/ca.crt
{{- if .Values.redis.tls.clientCertificate }}
- name: CCMON_REDIS_CERT_FILE
  value: {{ include "ccmon.redisTlsDir" . }}/tls.crt
- name: CCMON_REDIS_KEY_FILE
  value: {{ include "ccmon.redisTlsDir" . }}/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* Volumes shared by the worker and the exporter: config, scratch space, Redis TLS. */}}
{{- define "ccmon.commonVolumes" -}}
- name: config
  configMap:
    name: {{ include "ccmon.fullname" . }}-config
# The image's working directory (faust keeps its data directory there) and /tmp: the root
# filesystem is read-only.
- name: workdir
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "ccmon.commonVolumeMounts" -}}
- name: config
  mountPath: /etc/ccmon/config
  readOnly: true
- name: workdir
  mountPath: /var/lib/ccmon
- name: tmp
  mountPath: /tmp
{{- if .Values.redis.tls.existingSecret }}
- name: redis-tls
  mountPath: {{ include "ccmon.redisTlsDir" . }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "ccmon.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}
