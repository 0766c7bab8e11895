{{/*
Derived names and shared snippets of the northwind-pipeline chart.
*/}}

{{/* Chart name and version, as the helm.sh/chart label wants it. */}}
{{- define "northwind-pipeline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name with a suffix, cut to 63 characters. */}}
{{- define "northwind-pipeline.name" -}}
{{- printf "%s-%s" .root.Release.Name .suffix | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* All labels of one object. Args: dict "root" $ "component" <name>. */}}
{{- define "northwind-pipeline.labels" -}}
app.kubernetes.io/name: northwind-pipeline
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: northwind
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "northwind-pipeline.chart" .root }}
{{- with .root.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The Meltano image string. */}}
{{- define "northwind-pipeline.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/*
The Airflow ServiceAccounts that start step pods: with LocalExecutor every task runs in the
scheduler; the triggerer runs none (the step tasks are not deferrable). podLauncher.extraServiceAccounts
adds others, e.g. the KubernetesExecutor worker account.
*/}}
{{- define "northwind-pipeline.launcherAccounts" -}}
- {{ printf "%s-scheduler" .Values.airflow.release }}
{{- range .Values.podLauncher.extraServiceAccounts }}
- {{ . }}
{{- end }}
{{- end -}}

{{/* NORTHWIND_DATA_ROOT of the step pods: the mount path, or s3://bucket/prefix. */}}
{{- define "northwind-pipeline.dataRoot" -}}
{{- if eq .Values.data.backend "s3" -}}
{{- printf "s3://%s/%s" .Values.data.s3.bucket (trimAll "/" .Values.data.s3.prefix) | trimSuffix "/" -}}
{{- else -}}
{{- .Values.data.mountPath -}}
{{- end -}}
{{- end -}}

{{/* How the steps sign their S3 requests: the keys' Secret, or none (the pods' own identity). */}}
{{- define "northwind-pipeline.s3Keys" -}}
{{- with .Values.data.s3.secretName }}keys: Secret {{ . }}{{ else }}no keys: the pods' own identity{{ end -}}
{{- end -}}

{{/*
A random string generated once: the live Secret's value when it exists (read with lookup on
upgrade), else a new one. Args: dict "root" $ "secret" <name> "key" <data key> "length" <n>.
*/}}
{{- define "northwind-pipeline.keptRandom" -}}
{{- $live := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $live $live.data (hasKey $live.data .key) -}}
{{- index $live.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum .length -}}
{{- end -}}
{{- end -}}

{{/* Container securityContext of the Pod Security "restricted" profile. */}}
{{- define "northwind-pipeline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The labels the official Airflow chart puts on every pod of the release. */}}
{{- define "northwind-pipeline.airflowSelector" -}}
tier: airflow
release: {{ .Values.airflow.release }}
{{- end -}}

{{/* imagePullSecrets, nodeSelector, tolerations and affinity of a pod spec, from .Values.pods. */}}
{{- define "northwind-pipeline.podScheduling" -}}
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

{{/* The step pods' namespace (STEP_NAMESPACE in cluster.env): steps, their Secrets, the launcher Role. */}}
{{- define "northwind-pipeline.stepNamespace" -}}
{{- .Values.stepNamespace -}}
{{- end -}}

{{/*
A Service of this release's namespace as the step pods resolve it: they run in stepNamespace.
Args: the Service name, via dict "root" $ "service" <name>.
*/}}
{{- define "northwind-pipeline.serviceHost" -}}
{{- printf "%s.%s.svc" .service .root.Release.Namespace -}}
{{- end -}}

{{/*
The databases of each pod kind the step namespace admits (dags/northwind/pods.py STEP_DATABASES
for the four steps; the `helm test` pod opens both). Its Secrets and client labels follow.
*/}}
{{- define "northwind-pipeline.stepDatabases" -}}
extract-postgres: [source]
extract-csv: []
load-warehouse: [warehouse]
publish-report: [report]
connection-test: [source, warehouse]
{{- end -}}

{{/* The Secret of a database key of stepDatabases (report: the warehouse's read-only role). */}}
{{- define "northwind-pipeline.dbSecret" -}}
{{- $db := index .root.Values.databases (ternary "warehouse" .db (eq .db "report")) -}}
{{- ternary $db.readerSecretName $db.secretName (eq .db "report") -}}
{{- end -}}

{{/* The client label of a database key of stepDatabases (the report reaches the warehouse). */}}
{{- define "northwind-pipeline.dbClientLabel" -}}
{{- printf "northwind.io/%s-client" (ternary "warehouse" . (eq . "report")) -}}
{{- end -}}

{{/* The ServiceAccounts that start step pods, as the API server names them in requests. */}}
{{- define "northwind-pipeline.launcherUsernames" -}}
{{- range include "northwind-pipeline.launcherAccounts" . | fromYamlArray }}
- {{ printf "system:serviceaccount:%s:%s" $.Release.Namespace . }}
{{- end }}
{{- end -}}

{{/* Where step-like pods find the databases' CA certificate (dags/northwind/pods.py DB_CA_PATH). */}}
{{- define "northwind-pipeline.caPath" -}}
/etc/northwind/db-ca/ca.crt
{{- end -}}

{{/* The password file of a database's login in step-like pods (dags/northwind/pods.py). Args: source|warehouse. */}}
{{- define "northwind-pipeline.passwordFile" -}}
{{- printf "/etc/northwind/secrets/%s/password" . -}}
{{- end -}}

{{/*
The S3 keys of a pod as a file (key credentials of data.s3.secretName, an AWS shared credentials
file), named by AWS_SHARED_CREDENTIALS_FILE; equal to dags/northwind/pods.py S3_CREDENTIALS_FILE.
*/}}
{{- define "northwind-pipeline.s3CredentialsFile" -}}
/etc/northwind/secrets/s3/credentials
{{- end -}}

{{/* Where step-like pods find the object store's CA certificate (dags/northwind/pods.py S3_CA_PATH). */}}
{{- define "northwind-pipeline.s3CaPath" -}}
/etc/northwind/s3-ca/ca.crt
{{- end -}}
