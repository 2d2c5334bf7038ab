{{/* Chart name. */}}
{{- define "opsy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name joined with the chart name (once). */}}
{{- define "opsy.fullname" -}}
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

{{/* Selector labels. */}}
{{- define "opsy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "opsy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "opsy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opsy-ami-operator
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "opsy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "opsy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the controller watches with namespaced RBAC: watchNamespaces, or the release namespace. */}}
{{- define "opsy.rbacNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* RBAC rules of this controller: exactly what the binary calls. Named per chart: Helm defines are global across subcharts. */}}
{{- define "packer-build-controller.rules" -}}
- apiGroups: ["ami.refresh.ops"]
  resources: ["packerbuilders"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ami.refresh.ops"]
  resources: ["packerbuilders/status"]
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The Lease name: the value, else the release's full name. Named per chart: Helm defines are global. */}}
{{- define "packer-build-controller.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "opsy.fullname" .) -}}
{{- end }}
