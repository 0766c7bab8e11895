{{/*
Derived names and shared snippets of the northwind-databases chart.
*/}}

{{/* Chart name and version, as the helm.sh/chart label wants it. */}}
{{- define "northwind-databases.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The databases this chart runs, as a list of [key, settings] pairs in a fixed order.
Usage: {{ range $db := include "northwind-databases.instances" . | fromYamlArray }}
*/}}
{{- define "northwind-databases.instances" -}}
- source
- warehouse
{{- if .Values.airflowMetadata.enabled }}
- airflowMetadata
{{- end }}
{{- end -}}

{{/* The component label of a database key: source, warehouse, airflow-metadata. */}}
{{- define "northwind-databases.component" -}}
{{- . | kebabcase -}}
{{- end -}}

{{/*
Selector labels of one database. Args: dict "root" $ "key" <instance key>.
*/}}
{{- define "northwind-databases.selectorLabels" -}}
app.kubernetes.io/name: postgresql
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ include "northwind-databases.component" .key }}
{{- end -}}

{{/*
All labels of one object. Args: dict "root" $ "component" <name> "extra" <map or nil>.
*/}}
{{- define "northwind-databases.labels" -}}
app.kubernetes.io/name: {{ .name | default "postgresql" }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: northwind
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ include "northwind-databases.chart" .root }}
{{- with .root.Values.labels }}
{{ toYaml . }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
A live object as JSON ({} when it does not exist, or under `helm template`). The one place that
calls `lookup`. Args: dict "apiVersion" "kind" "namespace" "name".
*/}}
{{- define "northwind-databases.liveObject" -}}
{{- lookup .apiVersion .kind .namespace .name | default dict | toJson -}}
{{- end -}}

{{/* The data of a live Secret as a map. Args: dict "namespace" "name". */}}
{{- define "northwind-databases.liveSecretData" -}}
{{- $live := include "northwind-databases.liveObject" (dict "apiVersion" "v1" "kind" "Secret" "namespace" .namespace "name" .name) | fromJson -}}
{{- $live.data | default dict | toJson -}}
{{- end -}}

{{/*
A password: the live Secret's (so upgrades keep what initialised the volume) or a new random one.
Args: dict "namespace" <ns> "name" <Secret name>.
*/}}
{{- define "northwind-databases.password" -}}
{{- $data := include "northwind-databases.liveSecretData" . | fromJson -}}
{{- if hasKey $data "password" -}}
{{- index $data "password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/*
Percent-encode one part of a URI (user or password): everything but A-Z a-z 0-9 - _ . ~ is
escaped. urlquery writes a space as "+", which means "+" in a URI's user part, hence the replace
(a literal "+" is already %2B by then).
*/}}
{{- define "northwind-databases.uriEscape" -}}
{{- . | urlquery | replace "+" "%20" -}}
{{- end -}}

{{/*
postgresql:// URI of one login role. Args: dict "user" "password" "host" "port" "database".
*/}}
{{- define "northwind-databases.uri" -}}
{{- printf "postgresql://%s:%s@%s:%v/%s" (include "northwind-databases.uriEscape" .user) (include "northwind-databases.uriEscape" .password) .host .port (include "northwind-databases.uriEscape" .database) -}}
{{- end -}}

{{/* The init SQL of a database key (files/initdb/<component>.sql), shared with the tests. */}}
{{- define "northwind-databases.initSqlPath" -}}
{{- printf "files/initdb/%s.sql" (include "northwind-databases.component" .) -}}
{{- end -}}

{{/* The postgres image string. */}}
{{- define "northwind-databases.postgresImage" -}}
{{- printf "%s:%s" .Values.image.postgres.repository .Values.image.postgres.tag -}}
{{- end -}}

{{/* The Meltano image string of the seeding Job. */}}
{{- define "northwind-databases.seedImage" -}}
{{- printf "%s:%s" .Values.seed.image.repository .Values.seed.image.tag -}}
{{- end -}}

{{/* Container securityContext of the Pod Security "restricted" profile. */}}
{{- define "northwind-databases.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
The label a pod carries to reach a database (source, warehouse), set on step pods by
dags/northwind/pods.py and on the seed Job and `helm test` pods; the NetworkPolicies key on it.
*/}}
{{- define "northwind-databases.clientLabel" -}}
{{- printf "northwind.io/%s-client" (include "northwind-databases.component" .) -}}
{{- end -}}

{{/*
The pods allowed to reach one database, as a podSelector body. Args: dict "root" $ "key" <key>.
The metadata database's clients are the Airflow release's pods (labels of the official chart).
*/}}
{{- define "northwind-databases.clientSelector" -}}
{{- if eq .key "airflowMetadata" -}}
matchLabels:
  tier: airflow
  release: {{ .root.Values.networkPolicy.airflowRelease }}
{{- else -}}
matchLabels:
  {{ include "northwind-databases.clientLabel" .key }}: "true"
{{- end -}}
{{- end -}}

{{/* imagePullSecrets, nodeSelector, tolerations and affinity of a pod spec, from .Values.pods. */}}
{{- define "northwind-databases.podScheduling" -}}
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

{{/*
The login roles of one database as a list of {var, username, secretName, host, namespaces}: the
login role (var app), the warehouse's read-only role (reader) and the source's owner, which the
seed Job loads the tables as (owner). `var` names the init SQL's psql variables (<var>_user,
<var>_password) and the server's env (NORTHWIND_<VAR>_USER, _PASSWORD). The steps' logins (source
and warehouse app, reader) have their Secrets in this namespace ("": the server's init and probe)
and in stepNamespace (the step pods), under the host name the step pods resolve.
Args: dict "root" $ "key" <key>.
*/}}
{{- define "northwind-databases.logins" -}}
{{- $db := index .root.Values .key -}}
{{- $forSteps := ne .key "airflowMetadata" -}}
{{- $namespaces := ternary (list "" .root.Values.stepNamespace) (list "") $forSteps -}}
{{- $host := ternary (printf "%s.%s.svc" $db.name .root.Release.Namespace) $db.name $forSteps -}}
{{- $logins := list (dict "var" "app" "username" $db.auth.username "secretName" $db.auth.secretName "host" $host "namespaces" $namespaces) -}}
{{- if eq .key "warehouse" -}}
{{- $logins = append $logins (dict "var" "reader" "username" $db.auth.readerUsername "secretName" $db.auth.readerSecretName "host" $host "namespaces" $namespaces) -}}
{{- end -}}
{{- if eq .key "source" -}}
{{- $logins = append $logins (dict "var" "owner" "username" $db.auth.ownerUsername "secretName" $db.auth.ownerSecretName "host" $db.name "namespaces" (list "")) -}}
{{- end -}}
{{- toYaml $logins -}}
{{- end -}}

{{/* The TLS Secret (tls.crt, tls.key) of one database's server. Args: the database's values. */}}
{{- define "northwind-databases.tlsSecretName" -}}
{{- printf "%s-tls" .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the server and its clients find the TLS files, and the libpq settings of a client. */}}
{{- define "northwind-databases.caPath" -}}
/etc/northwind/db-ca/ca.crt
{{- end -}}
