{{/* Chart name, overridable. */}}
{{- define "esb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every resource name: the release name, plus the chart name unless it is already in it. */}}
{{- define "esb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: (dict "root" $ "component" "agent"). */}}
{{- define "esb.componentName" -}}
{{- printf "%s-%s" (include "esb.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "esb.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "esb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esb
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "agent"). */}}
{{- define "esb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "esb.componentLabels" -}}
{{ include "esb.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Label selector (string form) of the agent pods, given to the gateway and controller as AGENT_SELECTOR. */}}
{{- define "esb.agentSelector" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s,app.kubernetes.io/component=agent" (include "esb.name" .) .Release.Name -}}
{{- end -}}

{{/* Image reference of one component: (dict "root" $ "component" "agent"). */}}
{{- define "esb.image" -}}
{{- $values := index .root.Values .component -}}
{{- $tag := $values.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) $values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* ServiceAccount name of one component: (dict "root" $ "component" "agent"). */}}
{{- define "esb.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "esb.componentName" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Namespace that bare function names resolve in. */}}
{{- define "esb.gatewayNamespace" -}}
{{- default .Release.Namespace .Values.gateway.defaultNamespace -}}
{{- end -}}

{{/* In-cluster URL of the gateway Service. */}}
{{- define "esb.gatewayURL" -}}
{{- printf "http://%s.%s.svc:%v" (include "esb.componentName" (dict "root" . "component" "gateway")) .Release.Namespace .Values.gateway.service.port -}}
{{- end -}}

{{/* imagePullSecrets block; empty when there are none. */}}
{{- define "esb.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
The controller's and the gateway's identity towards the agents: a projected
ServiceAccount token for the audience "esb-agent" (not usable against the
Kubernetes API), rotated by the kubelet; the agents check it with a TokenReview.
*/}}
{{- define "esb.agentTokenEnv" -}}
- name: AGENT_TOKEN_FILE
  value: /var/run/secrets/esb.dev/agent-token/token
{{- end }}

{{- define "esb.agentTokenMount" -}}
- name: agent-token
  mountPath: /var/run/secrets/esb.dev/agent-token
  readOnly: true
{{- end }}

{{- define "esb.agentTokenVolume" -}}
- name: agent-token
  projected:
    sources:
      - serviceAccountToken:
          audience: esb-agent
          expirationSeconds: 3600
          path: token
{{- end }}

{{/* Kubernetes user name of a component's ServiceAccount; needs "root" and "component". */}}
{{- define "esb.serviceAccountUser" -}}
system:serviceaccount:{{ .root.Release.Namespace }}:{{ include "esb.serviceAccountName" . }}
{{- end }}

{{/* True ("true") when the chart deploys NATS itself: events.store nats without events.nats.url. */}}
{{- define "esb.deployNats" -}}
{{- if and (eq .Values.events.store "nats") (not .Values.events.nats.url) -}}true{{- end -}}
{{- end -}}

{{/*
URL of the NATS the gateways keep Event invocations in. The deployed one is
reached through the Service's environment variable, which the kubelet expands
($(VAR)) as it does KUBERNETES_SERVICE_HOST: this works without cluster DNS too
(the Service is installed before the gateways).
*/}}
{{- define "esb.natsURL" -}}
{{- if .Values.events.nats.url -}}
{{- .Values.events.nats.url -}}
{{- else -}}
{{- $svc := include "esb.componentName" (dict "root" . "component" "nats") | upper | replace "-" "_" -}}
{{- printf "nats://$(%s_SERVICE_HOST):4222" $svc -}}
{{- end -}}
{{- end -}}

{{/* Secret holding the NATS token (key token); empty when there is none (an external NATS without one). */}}
{{- define "esb.natsSecretName" -}}
{{- if .Values.events.nats.existingSecret -}}
{{- .Values.events.nats.existingSecret -}}
{{- else if include "esb.deployNats" . -}}
{{- printf "%s-token" (include "esb.componentName" (dict "root" . "component" "nats")) -}}
{{- end -}}
{{- end -}}

{{/* Image reference of the NATS server. */}}
{{- define "esb.natsImage" -}}
{{- $image := .Values.events.nats.image -}}
{{- $tag := $image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) $image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when the chart deploys VictoriaLogs itself: logs enabled without logs.victoriaLogs.url. */}}
{{- define "esb.deployVictoriaLogs" -}}
{{- if and .Values.logs.enabled (not .Values.logs.victoriaLogs.url) -}}true{{- end -}}
{{- end -}}

{{/* Base URL of the VictoriaLogs the agents ship to (the deployed one through its Service's variable, as NATS). */}}
{{- define "esb.victoriaLogsURL" -}}
{{- if .Values.logs.victoriaLogs.url -}}
{{- .Values.logs.victoriaLogs.url -}}
{{- else -}}
{{- $svc := include "esb.componentName" (dict "root" . "component" "victoria-logs") | upper | replace "-" "_" -}}
{{- printf "http://$(%s_SERVICE_HOST):9428" $svc -}}
{{- end -}}
{{- end -}}

{{/* Secret holding VictoriaLogs' Basic credentials (keys username, password); empty when there is none. */}}
{{- define "esb.victoriaLogsSecretName" -}}
{{- if .Values.logs.victoriaLogs.existingSecret -}}
{{- .Values.logs.victoriaLogs.existingSecret -}}
{{- else if include "esb.deployVictoriaLogs" . -}}
{{- printf "%s-auth" (include "esb.componentName" (dict "root" . "component" "victoria-logs")) -}}
{{- end -}}
{{- end -}}

{{/* Image reference of VictoriaLogs. */}}
{{- define "esb.victoriaLogsImage" -}}
{{- $image := .Values.logs.victoriaLogs.image -}}
{{- $tag := $image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) $image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The agent's AGENT_LOGS_* variables (none when logs are off). */}}
{{- define "esb.agentLogsEnv" -}}
{{- if .Values.logs.enabled -}}
# Worker output goes to VictoriaLogs, with its Basic credentials.
- name: AGENT_LOGS_URL
  value: {{ include "esb.victoriaLogsURL" . | quote }}
- name: AGENT_LOGS_BUFFER_LINES
  value: {{ .Values.logs.bufferLines | quote }}
{{- with include "esb.victoriaLogsSecretName" . }}
- name: AGENT_LOGS_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: username
- name: AGENT_LOGS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: password
{{- end }}
{{- end }}
{{- end -}}
