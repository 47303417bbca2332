{{/* Names, labels and the certificate plumbing shared by the templates. */}}

{{- define "podgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "podgate.fullname" -}}
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

{{- define "podgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "podgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "podgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "podgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "podgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "podgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the server reads its certificate from (mounted, so rotation needs no restart). */}}
{{- define "podgate.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.name is required with certs.mode=secret" .Values.certs.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "podgate.fullname" .) }}
{{- end }}
{{- end }}

{{/* Where the ServiceMonitor finds the CA to verify podgate's certificate with: "configMap" (the
     ConfigMap <fullname>-ca-bundle that holds the webhooks' caBundle: the generated CA, or
     certs.secret.caBundle), "secret" (ca.crt of the serving Secret, which cert-manager fills from
     the issuer, as cainjector does for the webhooks), or "" (serviceMonitor.tlsConfig is given,
     or metrics are scraped over plain HTTP on the health port). */}}
{{- define "podgate.serviceMonitorCA" -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.server.clientCA.secretName) (not .Values.serviceMonitor.tlsConfig) }}
{{- if eq .Values.certs.mode "certManager" }}secret{{ else }}configMap{{ end }}
{{- end }}
{{- end }}

{{/* The DNS names the API server uses for the Service. */}}
{{- define "podgate.dnsNames" -}}
{{- $svc := include "podgate.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* No default repository: the validating webhook fails closed from the moment it exists, so
     a Deployment whose image cannot be pulled would block Pods cluster-wide. Better to fail here. */}}
{{- define "podgate.image" -}}
{{- $repository := required "image.repository is required: there is no published podgate image. Build one from the repository's Dockerfile, push it where the cluster can pull it, and set image.repository (see the chart's README)" .Values.image.repository }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Seconds from SIGTERM to a stopped server: the readiness drain, then gunicorn's graceful stop,
     each the value set or podgate serve's default (5, 20); plus 5 for the workers' last reports
     and the master's exit. The kubelet kills the container after terminationGracePeriodSeconds,
     so the Pod gets this. */}}
{{- define "podgate.terminationGracePeriodSeconds" -}}
{{- $drain := 5 }}
{{- if not (kindIs "invalid" .Values.server.drainSeconds) }}{{ $drain = .Values.server.drainSeconds }}{{ end }}
{{- $graceful := 20 }}
{{- if not (kindIs "invalid" .Values.server.gracefulTimeoutSeconds) }}{{ $graceful = .Values.server.gracefulTimeoutSeconds }}{{ end }}
{{- add (ceil $drain | int) (int $graceful) 5 }}
{{- end }}

{{/* The audit CronJob's Pods: not the server's selector labels (Service, PDB, NetworkPolicy). */}}
{{- define "podgate.auditLabels" -}}
app.kubernetes.io/name: {{ include "podgate.name" . }}-audit
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: audit
{{- end }}
