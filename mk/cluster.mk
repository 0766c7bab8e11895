# Cluster targets of the Northwind pipeline: a kind cluster with the Meltano image, our charts and
# the official Airflow chart. Included by the top Makefile, which also includes
# dags/northwind/cluster.env: every shared name below (CLUSTER_NAME, NAMESPACE, IMAGE_*, *_DB_*,
# DATA_PVC, *_RELEASE) comes from there. Needs docker, kind, kubectl and helm; see docs/kubernetes.md.

.PHONY: up data-folder down ui password trigger backfill logs cluster-status image e2e helm-version kind-version up-options

KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
DOCKER ?= docker

# The one spelling of the install of Meltano's plugins (Makefile, tests/conftest.py): only the
# stock tap has a venv of its own; ours run from the repository's venv. Run it in the project.
MELTANO_INSTALL := meltano install

IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
# imagePullSecrets, nodeSelector, tolerations, affinity: read by the DAG, passed to both charts.
POD_SCHEDULING := dags/northwind/pod-scheduling.yaml
PIPELINE_RELEASE ?= northwind-pipeline
# Official chart; 1.22.0 is the Airflow 3 line (images pinned in charts/airflow/values.yaml).
AIRFLOW_CHART_REPO := https://airflow.apache.org
AIRFLOW_CHART_VERSION := 1.22.0
# Oldest Helm the chart supports (its 1.22.0 release notes: 3.19+; Helm 4 works too).
HELM_MIN_VERSION := 3.19.0
# Oldest kind whose node image enforces NetworkPolicies (kindnet with policies, v0.24) and runs a
# Kubernetes with ValidatingAdmissionPolicy (v1.30+): both hold the pipeline's fences.
KIND_MIN_VERSION := 0.24.0
# Secret of charts/northwind-pipeline with the SimpleAuthManager passwords (key passwords.json).
AIRFLOW_PASSWORDS_SECRET := northwind-airflow-passwords
AIRFLOW_DAG_ID := northwind_daily
UI_PORT ?= 8080
HELM_TIMEOUT ?= 15m

KUBE_CONTEXT := kind-$(CLUSTER_NAME)
KUBECTL_NS = $(KUBECTL) --context $(KUBE_CONTEXT) --namespace $(NAMESPACE)
HELM_NS = $(HELM) --kube-context $(KUBE_CONTEXT) --namespace $(NAMESPACE)
# Airflow CLI inside the scheduler (LocalExecutor: the scheduler is where tasks run).
AIRFLOW_CLI = $(KUBECTL_NS) exec deploy/$(AIRFLOW_RELEASE)-scheduler -c scheduler -- airflow

# Names from cluster.env handed to our charts, so their defaults are never the only copy in use.
DATABASES_SETS = \
	--set-string source.name=$(SOURCE_DB_HOST) \
	--set-string source.database=$(SOURCE_DB_NAME) \
	--set-string source.auth.secretName=$(SOURCE_DB_SECRET) \
	--set-string warehouse.name=$(WAREHOUSE_DB_HOST) \
	--set-string warehouse.database=$(WAREHOUSE_DB_NAME) \
	--set-string warehouse.auth.secretName=$(WAREHOUSE_DB_SECRET) \
	--set-string warehouse.auth.readerSecretName=$(WAREHOUSE_READER_SECRET) \
	--set-string stepNamespace=$(STEP_NAMESPACE) \
	--set-string airflowMetadata.auth.secretName=$(AIRFLOW_DB_SECRET) \
	--set-string networkPolicy.airflowRelease=$(AIRFLOW_RELEASE) \
	--set ports.postgres=$(DB_PORT) \
	--set-string seed.image.repository=$(IMAGE_REPOSITORY) \
	--set-string seed.image.tag=$(IMAGE_TAG)
PIPELINE_SETS = \
	--set-string image.repository=$(IMAGE_REPOSITORY) \
	--set-string image.tag=$(IMAGE_TAG) \
	--set-string data.claimName=$(DATA_PVC) \
	--set-string data.mountPath=$(DATA_MOUNT_PATH) \
	--set data.gid=$(DATA_GID) \
	--set-string meltano.projectDir=$(MELTANO_PROJECT_DIR) \
	--set-string stepServiceAccount.name=$(STEP_SERVICE_ACCOUNT) \
	--set-string databases.source.host=$(SOURCE_DB_HOST) \
	--set-string databases.source.database=$(SOURCE_DB_NAME) \
	--set-string databases.source.secretName=$(SOURCE_DB_SECRET) \
	--set-string databases.warehouse.host=$(WAREHOUSE_DB_HOST) \
	--set-string databases.warehouse.database=$(WAREHOUSE_DB_NAME) \
	--set-string databases.warehouse.secretName=$(WAREHOUSE_DB_SECRET) \
	--set-string databases.warehouse.readerSecretName=$(WAREHOUSE_READER_SECRET) \
	--set-string stepNamespace=$(STEP_NAMESPACE) \
	--set databases.port=$(DB_PORT) \
	--set-string airflow.release=$(AIRFLOW_RELEASE) \
	--set-string admissionPolicy.workerPods.metadataSecretName=$(AIRFLOW_DB_SECRET) \
	--set-string data.backend=$(DATA_BACKEND) \
	--set-string data.s3.bucket=$(S3_BUCKET) \
	--set-string data.s3.prefix=$(S3_PREFIX) \
	--set-string data.s3.region=$(S3_REGION) \
	--set-string data.s3.endpoint=$(S3_ENDPOINT) \
	--set-string data.s3.caConfigMapName=$(S3_CA_CONFIGMAP) \
	--set-string data.s3.secretName=$(S3_SECRET)

# --- options of `make up`: NODES, DATA_BACKEND (default: cluster.env), EXECUTOR ----------------
# NODES=3: one control-plane and two workers (kind-config-3nodes.yaml), else kind-config.yaml.
NODES ?= 1
KIND_CONFIG := $(if $(filter 3,$(NODES)),kind-config-3nodes.yaml,kind-config.yaml)
# EXECUTOR=KubernetesExecutor layers charts/airflow/values-kubernetes-executor.yaml.
EXECUTOR ?= LocalExecutor
# The in-cluster S3 store (charts/northwind-objectstore), installed when DATA_BACKEND=s3 and
# OBJECTSTORE_ENABLED=true; its names come from cluster.env like everything else.
OBJECTSTORE_SETS = \
	--set-string stepNamespace=$(STEP_NAMESPACE) \
	--set-string name=$(OBJECTSTORE_HOST) \
	--set ports.s3=$(OBJECTSTORE_PORT) \
	--set-string bucket.name=$(S3_BUCKET) \
	--set-string region=$(S3_REGION) \
	--set-string auth.secretName=$(S3_SECRET) \
	--set-string tls.caConfigMapName=$(S3_CA_CONFIGMAP) \
	--set-string bucket.image.repository=$(IMAGE_REPOSITORY) \
	--set-string bucket.image.tag=$(IMAGE_TAG)
# Values files layered on charts/airflow/values.yaml by the options.
AIRFLOW_EXTRA_VALUES = $(if $(filter s3,$(DATA_BACKEND)),-f charts/airflow/values-s3.yaml) \
	$(if $(filter KubernetesExecutor,$(EXECUTOR)),-f charts/airflow/values-kubernetes-executor.yaml)
# KubernetesExecutor: the worker pods' account starts the step pods too.
LAUNCHER_ACCOUNTS = $(if $(filter KubernetesExecutor,$(EXECUTOR)),--set 'podLauncher.extraServiceAccounts={$(AIRFLOW_RELEASE)-worker}' \
	--set podLauncher.kubernetesExecutor=true)

# The Kubernetes API's addresses (the `kubernetes` Service's cluster IP and endpoints), looked up
# once the cluster exists: the only addresses the launching pods' NetworkPolicy lets them reach.
KUBE_API_ADDRESSES = $$($(KUBECTL) --context $(KUBE_CONTEXT) -n default get service kubernetes -o jsonpath='{.spec.clusterIP}'),$$($(KUBECTL) --context $(KUBE_CONTEXT) -n default get endpointslices -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[*].endpoints[*].addresses[*]}' | tr ' ' ',')

# One clear line for a mistyped option, before anything is created.
up-options:
	@case '$(NODES)' in 1|3) ;; *) echo "NODES=$(NODES): use 1 or 3" >&2; exit 1;; esac
	@case '$(DATA_BACKEND)' in filesystem|s3) ;; *) echo "DATA_BACKEND=$(DATA_BACKEND): use filesystem or s3" >&2; exit 1;; esac
	@case '$(EXECUTOR)' in LocalExecutor|KubernetesExecutor) ;; *) echo "EXECUTOR=$(EXECUTOR): use LocalExecutor or KubernetesExecutor" >&2; exit 1;; esac
	@if [ '$(filter s3,$(DATA_BACKEND))$(filter true,$(OBJECTSTORE_ENABLED))' = s3true ] && [ -z '$(strip $(S3_SECRET))' ]; then \
		echo "S3_SECRET=: the in-cluster object store needs its Secret's name (empty only with OBJECTSTORE_ENABLED=false)" >&2; exit 1; fi
	@if [ '$(filter s3,$(DATA_BACKEND))$(filter true,$(OBJECTSTORE_ENABLED))' = s3true ] && [ -z '$(strip $(S3_CA_CONFIGMAP))' ]; then \
		echo "S3_CA_CONFIGMAP=: the in-cluster object store's certificate needs its CA's ConfigMap name (empty only with OBJECTSTORE_ENABLED=false)" >&2; exit 1; fi

# One clear line instead of a chart error deep inside `make up` when helm is too old.
helm-version:
	@version=$$($(HELM) version --template '{{.Version}}' 2>/dev/null | sed 's/^v//; s/[-+].*//'); \
	oldest=$$(printf '%s\n%s\n' '$(HELM_MIN_VERSION)' "$$version" | sort -V | head -n 1); \
	if [ -z "$$version" ] || [ "$$oldest" != '$(HELM_MIN_VERSION)' ]; then \
		echo "make up needs helm $(HELM_MIN_VERSION) or newer (Airflow chart $(AIRFLOW_CHART_VERSION)); found: $${version:-no helm}" >&2; \
		exit 1; \
	fi

# The same for kind: an older one would run the charts with every NetworkPolicy ignored.
kind-version:
	@version=$$($(KIND) version 2>/dev/null | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p'); \
	oldest=$$(printf '%s\n%s\n' '$(KIND_MIN_VERSION)' "$$version" | sort -V | head -n 1); \
	if [ -z "$$version" ] || [ "$$oldest" != '$(KIND_MIN_VERSION)' ]; then \
		echo "make up needs kind $(KIND_MIN_VERSION) or newer (NetworkPolicies, admission policies); found: $${version:-no kind}" >&2; \
		exit 1; \
	fi

image:
	$(DOCKER) build -f images/meltano/Dockerfile -t $(IMAGE) .

# The data tree's host folder: kind mounts it into the node (kind-config.yaml extraMounts), the
# step pods get it as a hostPath volume, whose files the kubelet never chowns to the pods' fsGroup.
# So it gets group DATA_GID (the step pods' fsGroup, cluster.env) and mode 2770: setgid, so every
# entry below takes that group; the library creates folders 0770 and files 0660. The step pods
# (uid 10001) and `make run` (your user: a member of DATA_GID) share it; nobody else can enter.
# What an older version left (world-writable, or your files in another group) is put right when
# it is yours, named when it is not.
DATA_DIR ?= data
data-folder:
	@mkdir -p -m 0770 '$(DATA_DIR)'
	@chgrp '$(DATA_GID)' '$(DATA_DIR)' 2>/dev/null || { echo "$(DATA_DIR): cannot give it group $(DATA_GID) (DATA_GID of dags/northwind/cluster.env): join that group (sudo groupadd -g $(DATA_GID) northwind-data; sudo usermod -aG northwind-data $$(id -un); log in again) or set DATA_GID=$$(id -g) there" >&2; exit 1; }
	@chmod 2770 '$(DATA_DIR)'
	@find '$(DATA_DIR)' -mindepth 1 -user "$$(id -u)" \( ! -group '$(DATA_GID)' -o -perm /o=rwx -o ! -perm -g=rw \) \
		-exec chgrp '$(DATA_GID)' {} + -exec chmod g+rwX,o= {} +
	@find '$(DATA_DIR)' -mindepth 1 -type d -user "$$(id -u)" ! -perm -2000 -exec chmod g+s {} +
	@left=$$(find '$(DATA_DIR)' \( -perm /o=rwx -o ! -group '$(DATA_GID)' \) -print -quit); if [ -n "$$left" ]; then \
		echo "$(DATA_DIR): $$left (and maybe more) is open to everyone or outside group $(DATA_GID), and not yours to change: sudo chgrp -R $(DATA_GID) $(DATA_DIR) && sudo chmod -R g+rwX,o= $(DATA_DIR)" >&2; exit 1; fi

# Safe to rerun: every step is create-if-absent or upgrade.
up: up-options helm-version kind-version image $(if $(filter filesystem,$(DATA_BACKEND)),data-folder)
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(CLUSTER_NAME)' \
		|| $(KIND) create cluster --name $(CLUSTER_NAME) --config $(KIND_CONFIG) --wait 180s
	$(KIND) load docker-image $(IMAGE) --name $(CLUSTER_NAME)
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -f k8s/namespace.yaml -f k8s/network-policies.yaml
	@# Each manifest names its namespace: the data claim is the step pods' (STEP_NAMESPACE).
	$(KUBECTL) --context $(KUBE_CONTEXT) apply $(if $(filter filesystem,$(DATA_BACKEND)),-f data-pvc.yaml) -f k8s/dags-pvc.yaml
	$(if $(and $(filter s3,$(DATA_BACKEND)),$(filter true,$(OBJECTSTORE_ENABLED))),$(HELM_NS) upgrade --install \
		$(OBJECTSTORE_RELEASE) charts/northwind-objectstore -f $(POD_SCHEDULING) $(OBJECTSTORE_SETS) --wait --timeout $(HELM_TIMEOUT))
	$(HELM_NS) upgrade --install $(DATABASES_RELEASE) charts/northwind-databases \
		-f $(POD_SCHEDULING) $(DATABASES_SETS) --wait --timeout $(HELM_TIMEOUT)
	$(HELM_NS) upgrade --install $(PIPELINE_RELEASE) charts/northwind-pipeline \
		-f $(POD_SCHEDULING) $(PIPELINE_SETS) $(LAUNCHER_ACCOUNTS) \
		--set "networkPolicy.kubeApi.addresses={$(KUBE_API_ADDRESSES)}" --wait --timeout $(HELM_TIMEOUT)
	$(HELM) repo add apache-airflow $(AIRFLOW_CHART_REPO) --force-update
	$(HELM_NS) upgrade --install $(AIRFLOW_RELEASE) apache-airflow/airflow \
		--version $(AIRFLOW_CHART_VERSION) -f charts/airflow/values.yaml \
		$(AIRFLOW_EXTRA_VALUES) --wait --timeout $(HELM_TIMEOUT)
	$(KUBECTL_NS) rollout status deploy/$(AIRFLOW_RELEASE)-scheduler --timeout=300s
	$(KUBECTL_NS) rollout status deploy/$(AIRFLOW_RELEASE)-api-server --timeout=300s
	@echo
	@echo "Northwind pipeline is up in kind cluster '$(CLUSTER_NAME)', namespace '$(NAMESPACE)'."
	@echo "  UI:       make ui   then open http://localhost:$(UI_PORT)"
	@echo "  Login:    user admin; print the password with: make password"
	@echo
	@echo "  Next:     make trigger DATE=2024-01-02"
	@echo "            make backfill FROM=2024-01-01 TO=2024-01-07"
	@echo "            make logs STEP=extract-postgres DATE=2024-01-02"
	@echo "            make cluster-status"
	@echo "  Files:    $(if $(filter s3,$(DATA_BACKEND)),s3://$(S3_BUCKET)/$(S3_PREFIX) (see docs/kubernetes.md),data/ of this checkout (the volume $(DATA_PVC) at $(DATA_MOUNT_PATH)))"
	@echo "  Nodes:    $(NODES) ($(KIND_CONFIG)); executor $(EXECUTOR); kubectl get pods -o wide"

down:
	$(KIND) delete cluster --name $(CLUSTER_NAME)
	@echo "Cluster deleted. A data tree on the file system stays in ./data; one in the in-cluster object store went with the cluster; a bucket elsewhere is untouched."

ui:
	@echo "Airflow UI on http://localhost:$(UI_PORT) (Ctrl-C stops the port-forward)"
	$(KUBECTL_NS) port-forward svc/$(AIRFLOW_RELEASE)-api-server $(UI_PORT):8080

# The admin password, only on request: `make up` does not print it (terminal scrollback, CI logs).
password:
	@$(KUBECTL_NS) get secret $(AIRFLOW_PASSWORDS_SECRET) -o jsonpath='{.data.passwords\.json}' | base64 -d
	@echo

trigger:
	$(if $(DATE),,$(error DATE=YYYY-MM-DD is required (make trigger DATE=2024-01-02)))
	$(AIRFLOW_CLI) dags unpause $(AIRFLOW_DAG_ID)
	$(AIRFLOW_CLI) dags trigger $(AIRFLOW_DAG_ID) --logical-date $(DATE)T00:00:00+00:00

backfill:
	$(if $(and $(FROM),$(TO)),,$(error FROM=YYYY-MM-DD and TO=YYYY-MM-DD are required))
	$(AIRFLOW_CLI) dags unpause $(AIRFLOW_DAG_ID)
	$(AIRFLOW_CLI) backfill create --dag-id $(AIRFLOW_DAG_ID) --from-date $(FROM) --to-date $(TO)

logs:
	$(if $(and $(STEP),$(DATE)),,$(error STEP=<step> and DATE=YYYY-MM-DD are required (make logs STEP=extract-postgres DATE=2024-01-02)))
	$(KUBECTL) --context $(KUBE_CONTEXT) --namespace $(STEP_NAMESPACE) logs --prefix --all-containers --tail=-1 \
		-l app.kubernetes.io/part-of=northwind,northwind.io/step=$(STEP),northwind.io/run-date=$(DATE)

cluster-status:
	$(KUBECTL_NS) get pods,jobs,statefulsets,deployments,pvc,svc -o wide
	$(KUBECTL) --context $(KUBE_CONTEXT) --namespace $(STEP_NAMESPACE) get pods,pvc -o wide
	$(HELM_NS) list
	-$(AIRFLOW_CLI) dags list-runs $(AIRFLOW_DAG_ID)

e2e:
	bash scripts/e2e_kind.sh

# The container end-to-end: the image built from images/meltano/Dockerfile on a local Debian base,
# the DAG's four step pods run by `podman kube play` against PostgreSQL containers (as root, with
# podman, runc and debootstrap; .ci/run installs them in CI). No cluster needed.
.PHONY: e2e-containers
CONTAINERS_CONF := $(CURDIR)/.ci/containers.conf
e2e-containers: install  ## A day in the real image and step pods under podman (root; slow)
	CONTAINERS_CONF=$(CONTAINERS_CONF) $(UV) run --frozen pytest -s tests/test_e2e_containers.py $(PYTEST_ARGS)
