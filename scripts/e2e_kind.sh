#!/usr/bin/env bash
# End-to-end check of the Northwind pipeline on a kind cluster, for a machine with Docker, kind,
# kubectl and helm: make up -> trigger one day -> wait for the run -> check the evidence file on
# the host and the warehouse row counts -> report. Run from anywhere:
#   bash scripts/e2e_kind.sh                 # full run (E2E_DATE defaults to 1996-07-04)
#   E2E_SKIP_UP=1 bash scripts/e2e_kind.sh   # the cluster is already up (make up)
# Exits non-zero with the reason on the first failed check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Shared names: the same file the Makefile and the DAG read.
set -a
# shellcheck disable=SC1091
source dags/northwind/cluster.env
set +a

DATE="${E2E_DATE:-1996-07-04}"
TIMEOUT_SECONDS="${E2E_TIMEOUT_SECONDS:-1800}"
DAG_ID=northwind_daily
KCTL=(kubectl --context "kind-${CLUSTER_NAME}" --namespace "${NAMESPACE}")
AIRFLOW=("${KCTL[@]}" exec "deploy/${AIRFLOW_RELEASE}-scheduler" -c scheduler -- airflow)

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nE2E FAILED: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm make; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done

if [[ -z "${E2E_SKIP_UP:-}" ]]; then
  say "make up"
  make up
fi

say "helm test ${PIPELINE_RELEASE:-northwind-pipeline} (databases and data volume from a step pod)"
helm --kube-context "kind-${CLUSTER_NAME}" --namespace "${NAMESPACE}" \
  test "${PIPELINE_RELEASE:-northwind-pipeline}" --logs || fail "connection test failed"

say "wait for DAG ${DAG_ID} to be parsed"
for _ in $(seq 60); do
  "${AIRFLOW[@]}" dags list -o plain 2>/dev/null | grep -q "^${DAG_ID}\b" && break
  sleep 5
done
"${AIRFLOW[@]}" dags list -o plain | grep -q "^${DAG_ID}\b" || fail "DAG ${DAG_ID} not loaded"

say "trigger ${DATE}"
make trigger DATE="${DATE}"

say "wait for the run of ${DATE} (timeout ${TIMEOUT_SECONDS}s)"
deadline=$((SECONDS + TIMEOUT_SECONDS))
state=""
while ((SECONDS < deadline)); do
  state="$("${AIRFLOW[@]}" dags list-runs "${DAG_ID}" -o json 2>/dev/null \
    | python3 -c "import json,sys; d=sys.argv[1]; runs=[r for r in json.load(sys.stdin) if r['logical_date'].startswith(d)]; print(runs[0]['state'] if runs else 'none')" "${DATE}" || true)"
  echo "  run state: ${state}"
  [[ "$state" == "success" || "$state" == "failed" ]] && break
  sleep 20
done
[[ "$state" == "success" ]] || {
  make logs STEP=load-warehouse DATE="${DATE}" || true
  fail "run of ${DATE} ended as '${state}'"
}

say "evidence file on the host"
# The current attempt of the evidence, as its commit names it.
attempt="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["attempt"])' \
  "data/_commits/${DATE}/publish-report.json")" || fail "publish-report has no commit for ${DATE}"
evidence="data/reports/${DATE}/${attempt}/orders_with_details.csv"
[[ -s "$evidence" ]] || fail "$evidence is missing or empty"
rows=$(($(wc -l <"$evidence") - 1))
echo "  $evidence: ${rows} rows"
((rows > 0)) || fail "$evidence has no data rows"
ls "data/postgres/orders/" >/dev/null 2>&1 || fail "data/postgres/orders/ is missing"

# The socket asks for a password too (the chart's pg_hba.conf); the superuser's is a file.
say "warehouse row counts"
"${KCTL[@]}" exec "statefulset/${WAREHOUSE_DB_HOST}" -c postgres -- sh -c \
  'PGPASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")" psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -At -c "SELECT schemaname || '"'"'.'"'"' || relname, n_live_tup FROM pg_stat_user_tables ORDER BY 1"' \
  | tee /tmp/northwind-e2e-counts.txt
[[ -s /tmp/northwind-e2e-counts.txt ]] || fail "the warehouse has no tables"

say "E2E PASSED for ${DATE}: evidence ${evidence} (${rows} rows), warehouse tables above"
