{{/* The chart name, for labels. */}}
{{- define "versori-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, plus the chart name unless it is already
in it. At most 63 characters (some objects are DNS labels). */}}
{{- define "versori-operator.fullname" -}}
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

{{/* Name of cluster-scoped objects: they include the release namespace, so that the same release
name in two namespaces (one operator per team, say) does not collide. */}}
{{- define "versori-operator.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "versori-operator.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{- define "versori-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "versori-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "versori-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "versori-operator.labels" -}}
helm.sh/chart: {{ include "versori-operator.chart" . }}
{{ include "versori-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: versori
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "versori-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "versori-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when the operator runs with leader election: asked for, or needed by replicas > 1. */}}
{{- define "versori-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ else }}false{{ end }}
{{- end }}

{{- define "versori-operator.leaseName" -}}
{{- default (include "versori-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The Secret holding the Versori API token, and its key; empty when there is none. */}}
{{- define "versori-operator.tokenSecretName" -}}
{{- if .Values.versori.existingSecret }}
{{- .Values.versori.existingSecret }}
{{- else if .Values.versori.token }}
{{- printf "%s-api-token" (include "versori-operator.fullname" .) }}
{{- end }}
{{- end }}

{{- define "versori-operator.tokenSecretKey" -}}
{{- if .Values.versori.existingSecret }}{{ .Values.versori.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "versori-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* RBAC rules for the namespaces the operator watches (used by the ClusterRole in cluster-wide
mode and by one Role per watched namespace otherwise). Each verb is one the code uses:
- the three kinds: get/list/watch (controllers and cross-references), patch (finalizers via JSON
  patch, the create-attempt annotation via merge patch);
- their /status: patch (server-side apply);
- VersoriConfigs: get/list/watch (their controller, and the configs resources name); their
  /status: patch (a merge patch of the last check). The operator writes nothing else of them;
- Secrets: list/watch (metadata-only watch for rotation) and get (reading one referenced key);
- events.k8s.io Events: create, patch (kube's event Recorder). */}}
{{- define "versori-operator.watchRules" -}}
- apiGroups: ["versori.com"]
  resources: ["systems", "projectsystems", "connections"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["versori.com"]
  resources: ["systems/status", "projectsystems/status", "connections/status"]
  verbs: ["patch"]
- apiGroups: ["versori.com"]
  resources: ["versoriconfigs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["versori.com"]
  resources: ["versoriconfigs/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Name of the OAuth 2.0 callback Service and Ingress (at most 63 characters). */}}
{{- define "versori-operator.oauth2CallbackName" -}}
{{- printf "%s-oauth2-callback" (include "versori-operator.fullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{/* The redirect URL the provider must accept: what the operator derives from publicUrl. */}}
{{- define "versori-operator.oauth2RedirectUrl" -}}
{{- printf "%s/oauth2/callback" (.Values.oauth2Callback.publicUrl | trim | trimSuffix "/") }}
{{- end }}

{{/* The Ingress host of the callback: ingress.host, or else the host of publicUrl (without its
port; empty, meaning every host, when publicUrl names an IP address). */}}
{{- define "versori-operator.oauth2CallbackHost" -}}
{{- if .Values.oauth2Callback.ingress.host }}
{{- .Values.oauth2Callback.ingress.host }}
{{- else }}
{{- $host := (urlParse (trim .Values.oauth2Callback.publicUrl)).host }}
{{- $host = regexReplaceAll ":[0-9]*$" $host "" | trimSuffix "." | lower }}
{{- if not (or (hasPrefix "[" $host) (regexMatch "^[0-9.]+$" $host)) }}
{{- $host }}
{{- end }}
{{- end }}
{{- end }}

{{/* OAUTH2_AUTHORIZATION_TTL: a duration string as given, or a number of seconds as "<n>s". */}}
{{- define "versori-operator.oauth2AuthorizationTtl" -}}
{{- $ttl := .Values.oauth2Callback.authorizationTtl }}
{{- if kindIs "string" $ttl }}{{ $ttl }}{{ else }}{{ printf "%ds" (int64 $ttl) }}{{ end }}
{{- end }}

{{/* The Secret holding the credential hash key. */}}
{{- define "versori-operator.hashKeySecretName" -}}
{{- default (printf "%s-credential-hash-key" (include "versori-operator.fullname" .) | trunc 253) .Values.credentials.hashKeySecret }}
{{- end }}
