{{/* Chart name. */}}
{{- define "ami-refresh-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name joined with the chart name (once). */}}
{{- define "ami-refresh-controller.fullname" -}}
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
{{- define "ami-refresh-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ami-refresh-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "ami-refresh-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ami-refresh-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opsy-ami-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container image: global.imageRegistry, else image.registry, replaces the registry host of image.repository
(its first segment when that has a dot or colon or is localhost); image.digest, when set, wins over the tag. */}}
{{- define "ami-refresh-controller.image" -}}
{{- $repo := .Values.image.repository -}}
{{- $registry := ((.Values.global).imageRegistry) | default .Values.image.registry -}}
{{- if $registry -}}
{{- $parts := splitList "/" $repo -}}
{{- $first := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) -}}
{{- $repo = join "/" (rest $parts) -}}
{{- end -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo -}}
{{- end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "ami-refresh-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ami-refresh-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the controller watches with namespaced RBAC: watchNamespaces, or the release namespace. */}}
{{- define "ami-refresh-controller.rbacNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/* RBAC rules of this controller: exactly what the binary calls. Named per chart: Helm defines are global across subcharts. */}}
{{- define "ami-refresh-controller.rules" -}}
- apiGroups: ["ami.refresh.ops"]
  resources: ["amirefreshers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ami.refresh.ops"]
  resources: ["amirefreshers/status"]
  verbs: ["patch"]
- apiGroups: ["ami.refresh.ops"]
  resources: ["packerbuilders"]
  verbs: {{ if .Values.settings.watchPackerBuilders }}["get", "list", "watch"]{{ else }}["get"]{{ end }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The Lease name: the value, else the release's full name. Named per chart: Helm defines are global. */}}
{{- define "ami-refresh-controller.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "ami-refresh-controller.fullname" .) -}}
{{- end }}

{{/* Environment of this controller's own settings. */}}
{{- define "ami-refresh-controller.settingsEnv" -}}
- name: POLL_INTERVAL
  value: {{ .Values.settings.pollInterval | quote }}
- name: RESYNC_INTERVAL
  value: {{ .Values.settings.resyncInterval | quote }}
- name: WATCH_PACKER_BUILDERS
  value: {{ .Values.settings.watchPackerBuilders | quote }}
- name: LAUNCH_TEMPLATE_VERSIONS_KEPT
  value: {{ .Values.settings.launchTemplateVersionsKept | quote }}
{{- end }}
