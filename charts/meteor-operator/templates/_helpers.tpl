{{/* The chart name; also the app.kubernetes.io/name label. */}}
{{- define "meteor-operator.name" -}}
meteor-operator
{{- end }}

{{/*
Name of every object: fullnameOverride, else the release name when it already contains
"meteor-operator", else <release>-meteor-operator. Truncated to 63 characters.
*/}}
{{- define "meteor-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "meteor-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "meteor-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "meteor-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "meteor-operator.labels" -}}
helm.sh/chart: {{ include "meteor-operator.chart" . }}
{{ include "meteor-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods (immutable: never add to these). */}}
{{- define "meteor-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meteor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount. */}}
{{- define "meteor-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meteor-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "meteor-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Fails rendering on value combinations the schema cannot express. */}}
{{- define "meteor-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without it every replica would reconcile" }}
{{- end }}
{{- end }}
