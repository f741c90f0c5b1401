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

{{/* MIC's and NMI's object names (Deployment, DaemonSet, ServiceAccounts, ClusterRoles, bindings, MIC's Secret) come
from the chart name, not the release, as the original chart's did: `helm upgrade` from the original then updates
its objects in place, and tooling that looks up aad-pod-identity-mic / aad-pod-identity-nmi keeps working. */}}
{{- define "aad-pod-identity.mic.fullname" -}}
{{- printf "%s-mic" (include "aad-pod-identity.name" .) -}}
{{- end -}}

{{- define "aad-pod-identity.nmi.fullname" -}}
{{- printf "%s-nmi" (include "aad-pod-identity.name" .) -}}
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

{{/* FORCENAMESPACED for MIC and NMI: charts before 4.0 spelled the value forceNameSpaced; either one set to "true"
turns namespaced mode on (the stricter wins, so an old values file never widens matching). */}}
{{- define "aad-pod-identity.forceNamespaced" -}}
{{- if or (eq (toString .Values.forceNamespaced) "true") (eq (toString .Values.forceNameSpaced) "true") -}}
true
{{- else -}}
{{- .Values.forceNamespaced -}}
{{- end -}}
{{- end -}}

{{/* The AzureIdentities to create: azureIdentities, plus the single azureIdentity/azureIdentityBinding of charts 1.x
when its enabled is true (same names and namespace as those charts gave them). */}}
{{- define "aad-pod-identity.azureIdentities" -}}
{{- $ids := deepCopy (default (dict) .Values.azureIdentities) -}}
{{- with .Values.azureIdentity -}}
{{- if .enabled -}}
{{- $binding := default (dict) $.Values.azureIdentityBinding -}}
{{- $_ := set $ids (required "azureIdentity.name is required when azureIdentity.enabled is true" .name) (dict "namespace" .namespace "type" .type "resourceID" .resourceID "clientID" .clientID "binding" (dict "name" $binding.name "selector" $binding.selector)) -}}
{{- end -}}
{{- end -}}
{{- toJson $ids -}}
{{- end -}}

{{/* Namespace and name of the leader election locks: the original's defaults, so an upgrade sees an original MIC's lock. */}}
{{- define "aad-pod-identity.mic.leaderElectionNamespace" -}}
{{- default "default" .Values.mic.leaderElection.namespace -}}
{{- end -}}

{{- define "aad-pod-identity.mic.leaderElectionName" -}}
{{- default "aad-pod-identity-mic" .Values.mic.leaderElection.name -}}
{{- end -}}

{{/* Namespace of the monitoring objects (ServiceMonitors, PrometheusRule, dashboard ConfigMap). */}}
{{- define "aad-pod-identity.monitoring.namespace" -}}
{{- default .Release.Namespace .Values.monitoring.namespace -}}
{{- end -}}

{{/* The `job` label of MIC's / NMI's targets in the alert rules: a ServiceMonitor's job is its Service's name. */}}
{{- define "aad-pod-identity.monitoring.micJob" -}}
{{- default (printf "%s-metrics" (include "aad-pod-identity.mic.fullname" .)) .Values.monitoring.prometheusRule.micJob -}}
{{- end -}}
{{- define "aad-pod-identity.monitoring.nmiJob" -}}
{{- default (printf "%s-metrics" (include "aad-pod-identity.nmi.fullname" .)) .Values.monitoring.prometheusRule.nmiJob -}}
{{- end -}}
