{{/* Name prefix of every object: the release name, or fullnameOverride. */}}
{{- define "billing.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "billing.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: billing
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Label naming one component: (dict "root" $ "component" "tax") */}}
{{- define "billing.componentLabel" -}}
app.kubernetes.io/name: {{ .component }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "tax") */}}
{{- define "billing.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* Image reference: (dict "root" $ "image" .Values.services.tax.image) */}}
{{- define "billing.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "billing.serviceName" -}}
{{- printf "%s-%s" (include "billing.fullname" .root) .component -}}
{{- end -}}

{{- define "billing.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "billing.fullname" .)) -}}
{{- end -}}

{{- define "billing.messagingSecret" -}}
{{- .Values.messaging.existingSecret | default (printf "%s-messaging" (include "billing.fullname" .)) -}}
{{- end -}}

{{- define "billing.daprConfigName" -}}
{{- printf "%s-dapr" (include "billing.fullname" .) -}}
{{- end -}}

{{/* The application secrets the services read through the Dapr secret store. */}}
{{- define "billing.appSecretNames" -}}
jwt-signing-key webhook-secret-sandbox webhook-secret-stripe stripe-api-key
{{- end -}}

{{/* App ids of the enabled services, as a list. */}}
{{- define "billing.appIds" -}}
{{- $ids := list -}}
{{- range $name, $svc := .Values.services -}}
{{- if $svc.enabled -}}{{- $ids = append $ids $name -}}{{- end -}}
{{- end -}}
{{- toJson $ids -}}
{{- end -}}

{{/* Keep a generated secret value across upgrades: (dict "root" $ "secret" NAME "key" KEY "value" VALUE "length" N) */}}
{{- define "billing.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum (.length | default 48) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a cluster-scoped object: release name and namespace, so that two releases of the
     same name in two namespaces never share one (e.g. "billing-operator-team-a"). */}}
{{- define "billing.clusterScopedName" -}}
{{- printf "%s-%s-%s" (include "billing.fullname" .root) .component .root.Release.Namespace | trunc 253 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret holding the token daprd sends to the app (header dapr-api-token, key `token`). */}}
{{- define "billing.appTokenSecret" -}}
{{- .Values.appToken.existingSecret | default (printf "%s-app-token" (include "billing.fullname" .)) -}}
{{- end -}}

{{/* Whether the services run with Dapr sidecars (runtime dapr) or talk to PostgreSQL,
     RabbitMQ and each other directly (runtime direct). */}}
{{- define "billing.runtime" -}}
{{- if .Values.dapr.enabled -}}dapr{{- else -}}direct{{- end -}}
{{- end -}}


{{/* The application secrets each service reads (least privilege in the direct runtime). */}}
{{- define "billing.secretsOf" -}}
{{- if eq . "payment" -}}
jwt-signing-key webhook-secret-sandbox webhook-secret-stripe stripe-api-key
{{- else -}}
jwt-signing-key
{{- end -}}
{{- end -}}

{{/* DATABASE_URL and AMQP_URL of one service from the chart's Secrets:
     (dict "root" $ "name" "tax" "amqp" true). With Dapr the app itself never uses AMQP_URL
     (its sidecar does), so only the init container that waits for the broker gets it. */}}
{{- define "billing.serverUrlEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "billing.databaseSecret" .root }}
      key: {{ .name }}
{{- if .amqp }}
- name: AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "billing.messagingSecret" .root }}
      key: connection-string
{{- end }}
{{- end -}}
