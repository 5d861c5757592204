{{- define "costwarden-webhook.fullname" -}}
{{- printf "%s-costwarden-webhook" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "costwarden-webhook.labels" -}}
app.kubernetes.io/name: costwarden-webhook
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: costwarden
app.kubernetes.io/component: webhook
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "costwarden-webhook.selector" -}}
app.kubernetes.io/name: costwarden-webhook
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "costwarden-webhook.tlsSecret" -}}
{{ include "costwarden-webhook.fullname" . }}-tls
{{- end -}}

{{- define "costwarden-webhook.policyConfigMap" -}}
{{- if .Values.existingPolicyConfigMap -}}
{{ .Values.existingPolicyConfigMap }}
{{- else -}}
{{ include "costwarden-webhook.fullname" . }}-policies
{{- end -}}
{{- end -}}

{{- define "costwarden-webhook.clientConfig" -}}
service:
  name: {{ include "costwarden-webhook.fullname" .root }}
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- if and (not .root.Values.tls.certManager) .root.Values.tls.caBundle }}
caBundle: {{ .root.Values.tls.caBundle | b64enc }}
{{- end }}
{{- end -}}

{{- define "costwarden-webhook.common" -}}
admissionReviewVersions: [v1]
matchPolicy: Equivalent
sideEffects: None
timeoutSeconds: {{ .Values.webhook.timeoutSeconds }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- range (append .Values.webhook.excludeNamespaces .Release.Namespace | uniq | sortAlpha) }}
        - {{ . | quote }}
        {{- end }}
    {{- with .Values.webhook.onlyNamespaces }}
    - key: kubernetes.io/metadata.name
      operator: In
      values:
        {{- toYaml . | nindent 8 }}
    {{- end }}
{{- end -}}

{{- define "costwarden-webhook.caAnnotation" -}}
{{- if .Values.tls.certManager -}}
annotations:
  cert-manager.io/inject-ca-from: {{ .Release.Namespace }}/{{ include "costwarden-webhook.fullname" . }}
{{- end -}}
{{- end -}}
