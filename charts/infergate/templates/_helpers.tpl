{{/* Names, labels and the switches several templates share. */}}

{{- define "infergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infergate.fullname" -}}
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

{{/* The operator's objects: Deployment, Service, ServiceAccount, roles. */}}
{{- define "infergate.operatorName" -}}
{{- printf "%s-operator" (include "infergate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "infergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "infergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "infergate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "infergate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: infergate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "infergate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "infergate.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "infergate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when the operator campaigns for a Lease: asked for, or needed by more than one replica. */}}
{{- define "infergate.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "infergate.leaseName" -}}
{{- default (include "infergate.operatorName" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* HTTP_ADDR as a Rust SocketAddr parses it: an IPv6 host goes in brackets. */}}
{{- define "infergate.httpAddr" -}}
{{- $host := .Values.http.host }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .Values.http.port) }}
{{- end }}

{{/* The one namespace the operator watches; empty for the whole cluster. */}}
{{- define "infergate.watchNamespace" -}}
{{- if eq .Values.watch.scope "namespace" }}{{ default .Release.Namespace .Values.watch.namespace }}{{ end }}
{{- end }}

{{/*
What the reconcile and the gate call (operator/src/reconcile/mod.rs, gate/pods.rs, kube's
finalizer helper and event recorder), nothing more. Server-side apply of an object that does not
exist yet is authorized as "create" as well as "patch", hence create on every applied kind.
*/}}
{{- define "infergate.rules" -}}
# The controller lists and watches its resources; get: a fresh read before children follow an
# unchanged status; patch: handled control annotations and removing an older version's finalizer.
- apiGroups: ["infergate.dev"]
  resources: ["inferencedeployments"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by server-side apply.
- apiGroups: ["infergate.dev"]
  resources: ["inferencedeployments/status"]
  verbs: ["patch"]
# The built-in autoscaler writes spec.replicas through /scale, as an HPA does.
- apiGroups: ["infergate.dev"]
  resources: ["inferencedeployments/scale"]
  verbs: ["patch"]
# Children carry blockOwnerDeletion owner references to their InferenceDeployment.
- apiGroups: ["infergate.dev"]
  resources: ["inferencedeployments/finalizers"]
  verbs: ["update"]
# One Deployment per revision: watched, applied, scaled, stale revisions deleted; get: the gate
# reads how many pods the measured revision wants.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# <name> and <name>-preview: watched and applied.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
# The gate lists the ready pods of a revision to scrape and probe them by pod IP.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Events on the InferenceDeployment; repeats are patched into a series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
