# Cluster targets of the Northwind pipeline: a kind cluster with the Meltano image, our charts and
# the official Airflow chart. Included by the top Makefile, which also includes
# dags/northwind/cluster.env: every shared name below (CLUSTER_NAME, NAMESPACE, IMAGE_*, *_DB_*,
# DATA_PVC, *_RELEASE) comes from there. Needs docker, kind, kubectl and helm; see docs/kubernetes.md.

.PHONY: up down ui password trigger backfill logs cluster-status image e2e

KIND ?= kind
KUBECTL ?= kubectl
HELM ?= helm
DOCKER ?= docker

# The one spelling of the build-time install (images/meltano/Dockerfile runs it verbatim;
# tests/test_dockerfile.py keeps them in step). Run it in MELTANO_PROJECT_DIR.
MELTANO_INSTALL := meltano install

IMAGE := $(IMAGE_REPOSITORY):$(IMAGE_TAG)
# imagePullSecrets, nodeSelector, tolerations, affinity: read by the DAG, passed to both charts.
POD_SCHEDULING := dags/northwind/pod-scheduling.yaml
PIPELINE_RELEASE ?= northwind-pipeline
# Official chart; 1.22.0 is the Airflow 3 line (images pinned in charts/airflow/values.yaml).
AIRFLOW_CHART_REPO := https://airflow.apache.org
AIRFLOW_CHART_VERSION := 1.22.0
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
	--set-string meltano.projectDir=$(MELTANO_PROJECT_DIR) \
	--set-string stepServiceAccount.name=$(STEP_SERVICE_ACCOUNT) \
	--set-string databases.source.host=$(SOURCE_DB_HOST) \
	--set-string databases.source.database=$(SOURCE_DB_NAME) \
	--set-string databases.source.secretName=$(SOURCE_DB_SECRET) \
	--set-string databases.warehouse.host=$(WAREHOUSE_DB_HOST) \
	--set-string databases.warehouse.database=$(WAREHOUSE_DB_NAME) \
	--set-string databases.warehouse.secretName=$(WAREHOUSE_DB_SECRET) \
	--set databases.port=$(DB_PORT) \
	--set-string airflow.release=$(AIRFLOW_RELEASE)

image:
	$(DOCKER) build -f images/meltano/Dockerfile -t $(IMAGE) .

# Safe to rerun: every step is create-if-absent or upgrade.
up: image
	@# The step pods (uid 10001) write into ./data through a hostPath volume: it must be writable.
	mkdir -p data && chmod 0777 data
	@$(KIND) get clusters 2>/dev/null | grep -qx '$(CLUSTER_NAME)' \
		|| $(KIND) create cluster --name $(CLUSTER_NAME) --config kind-config.yaml --wait 180s
	$(KIND) load docker-image $(IMAGE) --name $(CLUSTER_NAME)
	$(KUBECTL) --context $(KUBE_CONTEXT) apply -f k8s/namespace.yaml -f k8s/network-policies.yaml
	$(KUBECTL_NS) apply -f data-pvc.yaml -f k8s/dags-pvc.yaml
	$(HELM_NS) upgrade --install $(DATABASES_RELEASE) charts/northwind-databases \
		-f $(POD_SCHEDULING) $(DATABASES_SETS) --wait --timeout $(HELM_TIMEOUT)
	$(HELM_NS) upgrade --install $(PIPELINE_RELEASE) charts/northwind-pipeline \
		-f $(POD_SCHEDULING) $(PIPELINE_SETS) --wait --timeout $(HELM_TIMEOUT)
	$(HELM) repo add apache-airflow $(AIRFLOW_CHART_REPO) --force-update
	$(HELM_NS) upgrade --install $(AIRFLOW_RELEASE) apache-airflow/airflow \
		--version $(AIRFLOW_CHART_VERSION) -f charts/airflow/values.yaml \
		--wait --timeout $(HELM_TIMEOUT)
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
	@echo "  Files:    data/ of this checkout (the volume $(DATA_PVC) at $(DATA_MOUNT_PATH))"

down:
	$(KIND) delete cluster --name $(CLUSTER_NAME)
	@echo "Cluster deleted. The data tree stays in ./data."

ui:
	@echo "Airflow UI on http://localhost:$(UI_PORT) (Ctrl-C stops the port-forward)"
	$(KUBECTL_NS) port-forward svc/$(AIRFLOW_RELEASE)-api-server $(UI_PORT):8080

# The admin password, only on request: `make up` does not print it (terminal scrollback, CI logs).
password:
	@$(KUBECTL_NS) exec deploy/$(AIRFLOW_RELEASE)-api-server -c api-server -- \
		cat /opt/airflow/simple_auth_manager_passwords.json.generated

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
	$(KUBECTL_NS) logs --prefix --all-containers --tail=-1 \
		-l app.kubernetes.io/part-of=northwind,northwind.io/step=$(STEP),northwind.io/run-date=$(DATE)

cluster-status:
	$(KUBECTL_NS) get pods,jobs,statefulsets,deployments,pvc,svc -o wide
	$(HELM_NS) list
	-$(AIRFLOW_CLI) dags list-runs $(AIRFLOW_DAG_ID)

e2e:
	bash scripts/e2e_kind.sh
