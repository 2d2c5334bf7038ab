{{/* Chart name. */}}
{{- define "packer-build-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name joined with the chart name (once). */}}
{{- define "packer-build-controller.fullname" -}}
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
{{- define "packer-build-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "packer-build-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "packer-build-controller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "packer-build-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: opsy-ami-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The container image: global.imageRegistry, else image.registry, replaces the registry host of image.repository
(its first segment when that has a dot or colon or is localhost); image.digest, when set, wins over the tag. */}}
{{- define "packer-build-controller.image" -}}
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
{{- define "packer-build-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "packer-build-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the controller watches with namespaced RBAC: watchNamespaces, or the release namespace. */}}
{{- define "packer-build-controller.rbacNamespaces" -}}
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
{{- /* Retention never deregisters an AMI an AMIRefresher targets or runs: it lists them before deleting anything. */}}
- apiGroups: ["ami.refresh.ops"]
  resources: ["amirefreshers"]
  verbs: ["list"]
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
{{- .Values.leaderElection.leaseName | default (include "packer-build-controller.fullname" .) -}}
{{- end }}

{{/* Environment of this controller's own settings. */}}
{{- define "packer-build-controller.settingsEnv" -}}
- name: GIT_SYNC_IMAGE
  value: {{ .Values.settings.gitSyncImage | quote }}
- name: BASE_AMI_CACHE_TTL
  value: {{ .Values.settings.baseAmiCacheTtl | quote }}
- name: BUILD_RETRY_BASE_DELAY
  value: {{ .Values.settings.buildRetryBaseDelay | quote }}
{{- with .Values.settings.buildPodDefaults }}
- name: BUILD_POD_DEFAULTS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.settings.resyncInterval }}
- name: RESYNC_INTERVAL
  value: {{ . | quote }}
{{- end }}
{{- end }}
