{{- define "at-forwarder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "at-forwarder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "at-forwarder.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "at-forwarder.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "at-forwarder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "at-forwarder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "at-forwarder.labels" -}}
{{ include "at-forwarder.selectorLabels" . }}
app.kubernetes.io/part-of: activity-tracker
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "at-forwarder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "at-forwarder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "at-forwarder.config" -}}
{{- if .Values.config }}
{{- .Values.config }}
{{- else }}
{{- .Files.Get "files/logging-activity-tracker.conf" }}
{{- end }}
{{- end }}
