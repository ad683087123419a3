#!/usr/bin/env bash
# `make run`: the whole pipeline on this machine. Starts the local Kafka broker (unless
# KAFKA_BOOTSTRAP_SERVERS names one), creates the topics, starts ingest, enrich and sink as one process
# each, and on Ctrl-C or SIGTERM stops them (they drain) and then the broker it started. No orphans.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
BIN="$REPO/.venv/bin"
mkdir -p .data

# A .env file in the repo root is read by the services too; the real environment always wins.
if [[ -z "${WHEREBY_WEBHOOK_SECRET:-}" ]] && ! grep -qs '^WHEREBY_WEBHOOK_SECRET=' .env; then
  [[ -s .data/dev-webhook-secret ]] || "$BIN/python" -c 'import secrets; print(secrets.token_hex(16))' >.data/dev-webhook-secret
  export WHEREBY_WEBHOOK_SECRET="$(cat .data/dev-webhook-secret)"
  echo "WHEREBY_WEBHOOK_SECRET is not set: using the DEVELOPMENT-ONLY secret $WHEREBY_WEBHOOK_SECRET"
  echo "  (kept in .data/dev-webhook-secret; set the real secret from Whereby's dashboard in production)"
fi

started_broker=0
pids=()
stop_all() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    echo "stopping the stages (they drain in-flight work first)..."
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if ((started_broker)); then bash deploy/kafka/kafka.sh stop; fi
}
trap stop_all INT TERM EXIT

if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
  bash deploy/kafka/kafka.sh status >/dev/null 2>&1 || started_broker=1
  bash deploy/kafka/kafka.sh start
fi
"$BIN/whereby-pipeline" topics

mkdir -p .data/logs
for stage in sink enrich ingest; do
  "$BIN/whereby-pipeline" "$stage" 2> >(tee -a ".data/logs/$stage.log" >&2) &
  pids+=($!)
done

port() { local v="${1}_PORT"; echo "${!v:-$2}"; }
cat <<MSG

Whereby pipeline is starting (logs in .data/logs/):
  ingest  http://127.0.0.1:$(port INGEST 8080)/webhooks/whereby   (health: /healthz /readyz, metrics: /metrics)
  enrich  http://127.0.0.1:$(port ENRICH 8081)/metrics
  sink    http://127.0.0.1:$(port SINK 8082)/metrics   ClickHouse: ${CLICKHOUSE_URL:-chdb://$REPO/.data/clickhouse}
Try:  .venv/bin/whereby-pipeline sign --curl tests/fixtures/joined.json | sh
Press Ctrl-C to stop everything.
MSG

# If any stage exits, stop the rest: a half-running pipeline is worse than a stopped one.
wait -n "${pids[@]}" || true
echo "a stage exited; stopping the pipeline"
