{{/* Names and labels. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: portcullis
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "portcullis.tlsSecretName" -}}
{{- printf "%s-tls" (include "portcullis.fullname" .) }}
{{- end }}

{{/* Namespaces the webhook never sees: kube-system, the release namespace, and the extra ones. */}}
{{- define "portcullis.excludedNamespaces" -}}
{{- $ns := concat (list "kube-system" .Release.Namespace) (.Values.webhook.excludeNamespaces | default list) | uniq }}
{{- toJson $ns }}
{{- end }}

{{/* Is the Trivy Operator scan source enabled in the configuration? ("true" or "") */}}
{{/*
"true" when registry credentials come from pull secrets: `rbac.pullSecrets`, or the server's
`config.evidence.pullSecrets` (which needs the same grants).
*/}}
{{- define "portcullis.pullSecretsEnabled" -}}
{{- $evidence := (.Values.config | default dict).evidence | default dict }}
{{- if or .Values.rbac.pullSecrets $evidence.pullSecrets }}true{{ end }}
{{- end }}

{{/*
"true" when PolicyReports are written: `rbac.policyReports`, or the server's
`config.rejudge.policyReports`.
*/}}
{{- define "portcullis.policyReportsEnabled" -}}
{{- $rejudge := (.Values.config | default dict).rejudge | default dict }}
{{- if or .Values.rbac.policyReports $rejudge.policyReports }}true{{ end }}
{{- end }}

{{/*
"true" when OpenReports (openreports.io Reports) are written: `rbac.openReports`, or the
server's `config.rejudge.openReports`.
*/}}
{{- define "portcullis.openReportsEnabled" -}}
{{- $rejudge := (.Values.config | default dict).rejudge | default dict }}
{{- if or .Values.rbac.openReports $rejudge.openReports }}true{{ end }}
{{- end }}

{{/* "true" when the server re-judges running workloads (`config.rejudge` is set). */}}
{{- define "portcullis.rejudgeEnabled" -}}
{{- if (.Values.config | default dict).rejudge }}true{{ end }}
{{- end }}

{{/*
"true" when re-judging records Events on workloads whose verdict changed: `config.rejudge` is
set and `config.rejudge.events` is not false (the server's default is true).
*/}}
{{- define "portcullis.rejudgeEventsEnabled" -}}
{{- if include "portcullis.rejudgeEnabled" . }}
{{- $rejudge := .Values.config.rejudge }}
{{- if not (and (hasKey $rejudge "events") (eq (toString $rejudge.events) "false")) }}true{{ end }}
{{- end }}
{{- end }}

{{/* The serving certificate's DNS names (the Service's), comma-separated. */}}
{{- define "portcullis.dnsNames" -}}
{{- $fullname := include "portcullis.fullname" . }}
{{- $service := printf "%s.%s.svc" $fullname .Release.Namespace }}
{{- join "," (list $fullname (printf "%s.%s" $fullname .Release.Namespace) $service (printf "%s.cluster.local" $service)) }}
{{- end }}

{{/* "true" when portcullis rotates the self-managed certificate itself. */}}
{{- define "portcullis.rotationEnabled" -}}
{{- if and (eq .Values.certificates.mode "selfManaged") .Values.certificates.selfManaged.rotateAtRuntime }}true{{ end }}
{{- end }}

{{- define "portcullis.trivyOperatorEnabled" -}}
{{- $scans := (.Values.config | default dict).scans | default dict }}
{{- $operator := $scans.trivyOperator | default dict }}
{{- if $operator.enabled }}true{{ end }}
{{- end }}

{{/*
The custom workload kinds, as a JSON list: `config.workloads.custom` and `workloads.custom`
together, so the configuration and the webhook rules always name the same kinds.
*/}}
{{- define "portcullis.customWorkloads" -}}
{{- $configured := ((.Values.config | default dict).workloads | default dict).custom | default list }}
{{- $extra := (.Values.workloads | default dict).custom | default list }}
{{- toJson (concat $configured $extra | uniq) }}
{{- end }}

{{/*
The configuration file: `.Values.config` as given, plus what the chart knows: every namespace the
webhook excludes is also excluded in the configuration, the policies ConfigMap is a Rego path, and
`workloads.custom` joins `workloads.custom` of the configuration.
*/}}
{{- define "portcullis.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- $custom := include "portcullis.customWorkloads" . | fromJsonArray }}
{{- if $custom }}
{{- $workloads := $config.workloads | default dict }}
{{- $_ := set $workloads "custom" $custom }}
{{- $_ := set $config "workloads" $workloads }}
{{- end }}
{{- $exclude := $config.exclude | default dict }}
{{- $namespaces := concat ($exclude.namespaces | default list) (include "portcullis.excludedNamespaces" . | fromJsonArray) | uniq }}
{{- $_ := set $exclude "namespaces" $namespaces }}
{{- $_ := set $config "exclude" $exclude }}
{{- /* The MutatingWebhookConfiguration and the server's switch are one value, so they never disagree. */}}
{{- if include "portcullis.pinningEnabled" . }}
{{- $pinning := $config.pinning | default dict }}
{{- $_ := set $pinning "enabled" true }}
{{- $_ := set $config "pinning" $pinning }}
{{- end }}
{{- if .Values.policies }}
{{- $policies := $config.policies | default dict }}
{{- $rego := $policies.rego | default dict }}
{{- $paths := append ($rego.paths | default list) "/etc/portcullis/policies" | uniq }}
{{- $_ := set $rego "paths" $paths }}
{{- $_ := set $policies "rego" $rego }}
{{- $_ := set $config "policies" $policies }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- /*
Digest pinning is on when the value pinning.enabled or the configuration's own pinning.enabled
says so: either way the server's switch and the MutatingWebhookConfiguration are rendered
together, so they never disagree. "true" or empty.
*/}}
{{- define "portcullis.pinningEnabled" -}}
{{- if or .Values.pinning.enabled ((.Values.config | default dict).pinning | default dict).enabled }}true{{ end }}
{{- end }}
