{{/*
Derived names and shared snippets of the northwind-objectstore chart.
*/}}

{{/* Chart name and version, as the helm.sh/chart label wants it. */}}
{{- define "northwind-objectstore.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name with a suffix, cut to 63 characters. Args: dict "root" $ "suffix" <s>. */}}
{{- define "northwind-objectstore.name" -}}
{{- printf "%s-%s" .root.Release.Name .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of the server pod. */}}
{{- define "northwind-objectstore.selectorLabels" -}}
app.kubernetes.io/name: seaweedfs
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: objectstore
{{- end -}}

{{/* All labels of one object. Args: dict "root" $ "name" <app name> "component" <name>. */}}
{{- define "northwind-objectstore.labels" -}}
app.kubernetes.io/name: {{ .name | default "seaweedfs" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: northwind
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "northwind-objectstore.chart" .root }}
{{- with .root.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Secret the server and the bucket Job read (admin keys, s3.json): the user's or the generated one. */}}
{{- define "northwind-objectstore.secretName" -}}
{{- .Values.auth.existingSecret | default .Values.auth.adminSecretName -}}
{{- end -}}

{{/* The S3 endpoint inside the cluster, HTTPS only (S3_ENDPOINT in cluster.env). */}}
{{- define "northwind-objectstore.endpoint" -}}
{{- printf "https://%s.%s.svc:%v" .Values.name .Release.Namespace .Values.ports.s3 -}}
{{- end -}}

{{/* The server's TLS Secret (tls.crt, tls.key): generated (tls.create) or yours. */}}
{{- define "northwind-objectstore.tlsSecretName" -}}
{{- printf "%s-tls" .Values.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the bucket Job finds the CA certificate (AWS_CA_BUNDLE); the step pods use the same path. */}}
{{- define "northwind-objectstore.caPath" -}}
/etc/northwind/s3-ca/ca.crt
{{- end -}}

{{/* The data of a live Secret as JSON ({} when absent, or under `helm template`). Args: dict "namespace" "name". */}}
{{- define "northwind-objectstore.liveSecretData" -}}
{{- $live := lookup "v1" "Secret" .namespace .name | default dict -}}
{{- $live.data | default dict | toJson -}}
{{- end -}}

{{/* The SeaweedFS image string. */}}
{{- define "northwind-objectstore.serverImage" -}}
{{- printf "%s:%s" .Values.image.seaweedfs.repository .Values.image.seaweedfs.tag -}}
{{- end -}}

{{/* The Meltano image string of the bucket Job. */}}
{{- define "northwind-objectstore.bucketImage" -}}
{{- printf "%s:%s" .Values.bucket.image.repository .Values.bucket.image.tag -}}
{{- end -}}

{{/*
A random string generated once: the live Secret's value when it exists (read with lookup on
upgrade), else a new one. Args: dict "namespace" <ns> "secret" <name> "key" <data key> "length" <n>.
*/}}
{{- define "northwind-objectstore.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .namespace .secret -}}
{{- if and $live $live.data (hasKey $live.data .key) -}}
{{- index $live.data .key | b64dec -}}
{{- else -}}
{{- .prefix | default "" -}}{{- randAlphaNum .length | upper -}}
{{- end -}}
{{- end -}}

{{/* Container securityContext of the Pod Security "restricted" profile. Args: uid. */}}
{{- define "northwind-objectstore.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The label a pod carries to reach the S3 port through the NetworkPolicies: set on the bucket Job
and, with DATA_BACKEND=s3, on the step pods (OBJECTSTORE_CLIENT_LABEL of dags/northwind/pods.py).
*/}}
{{- define "northwind-objectstore.clientLabel" -}}
northwind.io/objectstore-client
{{- end -}}

{{/* imagePullSecrets, nodeSelector, tolerations and affinity of a pod spec, from .Values.pods. */}}
{{- define "northwind-objectstore.podScheduling" -}}
{{- with .Values.pods.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pods.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pods.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.pods.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
