{{/* Names and labels. */}}

{{- define "kubetune.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "kubetune" for a release of that name, else RELEASE-kubetune. */}}
{{- define "kubetune.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubetune.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubetune
{{- end }}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "kubetune.fullname" .) }}
{{- else }}
{{- .Values.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/*
The operator's config file: kubetune.config.OperatorConfig in YAML (camelCase keys). Empty
optional values are left out, so the operator's own defaults apply.
*/}}
{{- define "kubetune.operatorConfig" -}}
{{- $config := dict
    "images" .Values.trainer.images
    "shmSize" .Values.trainer.shmSize
    "scratchSize" .Values.trainer.scratchSize
    "terminationGraceSeconds" .Values.trainer.terminationGraceSeconds
    "defaultResources" .Values.defaultResources
    "progressIntervalSeconds" .Values.progressIntervalSeconds
    "hubRecheckSeconds" .Values.hubRecheckSeconds
    "presignedUrls" .Values.presignedUrls
    "trainingBackend" .Values.trainingBackend
    "trainingRuntime" .Values.trainingRuntime.name }}
{{- with .Values.trainer.serviceAccountName }}
{{- $_ := set $config "trainerServiceAccount" . }}
{{- end }}
{{- if .Values.defaultOutput.uri }}
{{- $output := dict "uri" .Values.defaultOutput.uri }}
{{- with .Values.defaultOutput.secretName }}
{{- $_ := set $output "secretRef" (dict "name" .) }}
{{- end }}
{{- $_ := set $config "defaultOutput" $output }}
{{- else if .Values.defaultOutput.secretName }}
{{- fail "defaultOutput.secretName is set but defaultOutput.uri is empty: set both, or neither" }}
{{- end }}
{{- with .Values.instanceProfiles }}
{{- $_ := set $config "instanceProfiles" . }}
{{- end }}
{{- with .Values.defaultQueueName }}
{{- $_ := set $config "defaultQueueName" . }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* Which training job kinds the operator may create: "TrainJob", "PyTorchJob" or both. */}}
{{- define "kubetune.backend.trainjob" -}}
{{- if has .Values.trainingBackend (list "auto" "trainjob") }}true{{ end }}
{{- end }}
{{- define "kubetune.backend.pytorchjob" -}}
{{- if has .Values.trainingBackend (list "auto" "pytorchjob") }}true{{ end }}
{{- end }}
