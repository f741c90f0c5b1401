{{/* Chart name, truncated so "-mic"/"-nmi" suffixes still fit in 63 characters. */}}
{{- define "aad-pod-identity.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 59 | trimSuffix "-" -}}
{{- end -}}

{{- define "aad-pod-identity.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 59 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 59 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 59 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aad-pod-identity.mic.fullname" -}}
{{- printf "%s-mic" (include "aad-pod-identity.fullname" .) -}}
{{- end -}}

{{- define "aad-pod-identity.nmi.fullname" -}}
{{- printf "%s-nmi" (include "aad-pod-identity.fullname" .) -}}
{{- end -}}

{{- define "aad-pod-identity.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aad-pod-identity.selectors" -}}
app.kubernetes.io/name: {{ include "aad-pod-identity.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "aad-pod-identity.labels" -}}
{{ include "aad-pod-identity.selectors" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "aad-pod-identity.chart" . }}
{{- end -}}

{{/* Namespace MIC runs in, as NMI must know it to let MIC reach the instance metadata service. */}}
{{- define "aad-pod-identity.micNamespace" -}}
{{- default .Release.Namespace .Values.nmi.micNamespace -}}
{{- end -}}

{{/* The ServiceAccount MIC runs as, by which NMI recognises MIC's pods (the namespace's default without chart RBAC). */}}
{{- define "aad-pod-identity.mic.serviceAccountName" -}}
{{- if .Values.rbac.enabled -}}
{{- include "aad-pod-identity.mic.fullname" . -}}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* Namespace and name of the leader election locks: the original's defaults, so an upgrade sees an original MIC's lock. */}}
{{- define "aad-pod-identity.mic.leaderElectionNamespace" -}}
{{- default "default" .Values.mic.leaderElection.namespace -}}
{{- end -}}

{{- define "aad-pod-identity.mic.leaderElectionName" -}}
{{- default "aad-pod-identity-mic" .Values.mic.leaderElection.name -}}
{{- end -}}
