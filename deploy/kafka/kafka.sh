#!/usr/bin/env bash
# Run real Apache Kafka 4.4.0 (KRaft, combined broker+controller nodes) without Docker: one node, or a
# cluster of several nodes on loopback.
# Usage: kafka.sh fetch | start|stop|status|kill [NODE] | bootstrap | cluster [start|stop|status|kill [NODE]]
#   NODE (1..size) acts on one node of a cluster; without it, on every node. `cluster` is the same verbs
#   with KAFKA_CLUSTER_SIZE defaulting to 3. `bootstrap` prints the bootstrap servers list.
# Env: KAFKA_BOOTSTRAP_SERVERS (use that broker instead; start does nothing), KAFKA_CLUSTER_SIZE (default 1),
#      KAFKA_DATA_DIR, KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_CACHE_DIR, KAFKA_START_TIMEOUT_S,
#      KAFKA_HEAP_OPTS. Several brokers or clusters can run at once, each with its own KAFKA_DATA_DIR and
#      KAFKA_PORT.
# A cluster of N nodes uses ports KAFKA_PORT .. KAFKA_PORT+N-1 (clients), KAFKA_CONTROLLER_PORT (default
# KAFKA_PORT+100) .. +N-1 (controllers), data in KAFKA_DATA_DIR/node-<i> (default .data/kafka-cluster), and
# creates topics with replication factor min(N, 3) and min.insync.replicas 2 (from 3 nodes) by default.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"                        # from the script's location, not cwd
CACHE="${KAFKA_CACHE_DIR:-$REPO/.cache/kafka/4.4.0/libs}"
TIMEOUT="${KAFKA_START_TIMEOUT_S:-60}"

die() { echo "kafka: $*" >&2; exit 1; }
usage() {
  echo "usage: $(basename "$0") fetch | start|stop|status|kill [NODE] | bootstrap | cluster [start|stop|status|kill [NODE]]" >&2
  exit 2
}
need() { command -v "$1" >/dev/null || die "'$1' not found on PATH; install $2"; }
# First exception message on stdin, without class name or stack frames, for one-line errors.
cause() { grep -m1 -E '^(Exception in thread "[^"]*" )?[A-Za-z0-9_.$]+(Exception|Error)(: |$)' \
  | sed -E 's/^(Exception in thread "[^"]*" )?[A-Za-z0-9_.$]+: //' | cut -c1-300 || true; }
is_count() { [[ "$1" =~ ^[1-9][0-9]?$ ]]; }

# ------------------------------------------------------------------ arguments
VERB="${1:-}"; NODE_ARG="${2:-}"
SIZE_DEFAULT=1
if [[ "$VERB" == cluster ]]; then
  SIZE_DEFAULT=3; VERB="${2:-start}"; NODE_ARG="${3:-}"
  (($# <= 3)) || usage
else
  (($# <= 2)) || usage
fi
case "$VERB" in fetch|bootstrap) [[ -z "$NODE_ARG" ]] || usage ;; start|stop|status|kill) ;; *) usage ;; esac
SIZE="${KAFKA_CLUSTER_SIZE:-$SIZE_DEFAULT}"
is_count "$SIZE" || die "KAFKA_CLUSTER_SIZE must be a whole number from 1 to 99, got '$SIZE'"
if [[ -n "$NODE_ARG" ]]; then
  [[ "$NODE_ARG" =~ ^[0-9]+$ ]] && ((NODE_ARG >= 1 && NODE_ARG <= SIZE)) \
    || die "node must be between 1 and $SIZE (KAFKA_CLUSTER_SIZE), got '$NODE_ARG'"
fi

PORT="${KAFKA_PORT:-9092}"
if ((SIZE == 1)); then
  DATA="${KAFKA_DATA_DIR:-$REPO/.data/kafka}"
  CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
  HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
else
  # A controller port right after the client port would collide with the next node's client port.
  DATA="${KAFKA_DATA_DIR:-$REPO/.data/kafka-cluster}"
  CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 100))}"
  HEAP="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"  # several JVMs share a development machine
fi
# Replication: a record acknowledged with acks=all is on every in-sync replica; with 3 nodes a topic
# keeps accepting writes with one node down (min.insync.replicas=2) and loses nothing acknowledged.
RF=$((SIZE < 3 ? SIZE : 3))
MIN_ISR=$((SIZE >= 3 ? 2 : 1))
NODES=(); if [[ -n "$NODE_ARG" ]]; then NODES=("$NODE_ARG"); else for ((i = 1; i <= SIZE; i++)); do NODES+=("$i"); done; fi

bootstrap_list() {
  local out="" i; for ((i = 1; i <= SIZE; i++)); do out+="${out:+,}127.0.0.1:$((PORT + i - 1))"; done
  echo "$out"
}

# Sets the per-node globals: node id, data dir, ports and files of node $1.
select_node() {
  NODE="$1"
  if ((SIZE == 1)); then NDATA="$DATA"; else NDATA="$DATA/node-$NODE"; fi
  NPORT=$((PORT + NODE - 1)); NCPORT=$((CPORT + NODE - 1))
  PIDFILE="$NDATA/kafka.pid"; PROPS="$NDATA/server.properties"
  LOG="$NDATA/logs/server.log"
  OUT="$NDATA/logs/stdout.log"   # JVM stdout/stderr: catches failures that happen before log4j is up
  # JVM command prefix (main class and args follow). The classpath wildcard is expanded by java, not bash.
  # shellcheck disable=SC2206  # HEAP is a list of JVM flags
  JAVA=(java $HEAP -XX:+UseG1GC -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$HERE/log4j2.properties" "-Dkafka.logs.dir=$NDATA/logs" -cp "$CACHE/*")
}

# The marker holds the pom's checksum, so editing pom.xml invalidates the cache automatically.
cached() { [[ -f "$CACHE/.complete" && "$(cat "$CACHE/.complete")" == "$(sha256sum <"$HERE/pom.xml")" ]]; }

fetch() {
  cached && return 0
  need java "a JDK >= 17"; need mvn "Maven 3 (e.g. apt-get install maven)"
  mkdir -p "$(dirname "$CACHE")"
  local mlog; mlog="$(dirname "$CACHE")/fetch.log"
  # Locked, and into a temp dir renamed at the end, so concurrent or interrupted fetches never leave
  # a half-filled cache. The subshell releases the lock (fd 9) so the broker never inherits it.
  ( flock 9; cached && exit 0
    rm -rf "$CACHE.tmp" "$CACHE"
    mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$CACHE.tmp" -DincludeScope=runtime >"$mlog" 2>&1 \
      || die "maven could not fetch the Kafka jars (Maven Central unreachable?): $(grep -m1 -E 'ERROR|Error' \
           "$mlog" | sed -E 's/\x1b\[[0-9;]*m//g; s/^\[ERROR\] //' | cut -c1-160); see $mlog"
    sha256sum <"$HERE/pom.xml" >"$CACHE.tmp/.complete"; mv "$CACHE.tmp" "$CACHE"
  ) 9>"$(dirname "$CACHE")/.fetch.lock" || exit 1
}

# Is PID our broker? Matching the cmdline guards against pid reuse, and is false for a zombie (its
# cmdline is empty), so waits below end even where nothing reaps the orphaned broker.
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "kafka.Kafka $PROPS"; }
running_pid() {  # live pid of the selected node's broker, or nothing
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null)" || return 0
  if [[ -n "$pid" ]] && ours "$pid"; then echo "$pid"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  # Static controller.quorum.voters (not the dynamic --standalone bootstrap): the voter endpoints are then
  # not baked into the metadata log, so the same data dir can be restarted on different ports.
  # Internal topics get 1 partition instead of 50: on dev nodes 50 only cost start-up time
  # (every partition is loaded on each start) and delay the first consumer-group join.
  local voters="" i
  for ((i = 1; i <= SIZE; i++)); do voters+="${voters:+,}$i@127.0.0.1:$((CPORT + i - 1))"; done
  cat >"$PROPS" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$NPORT,CONTROLLER://127.0.0.1:$NCPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$NPORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$NDATA/data
num.partitions=3
default.replication.factor=$RF
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$RF
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=$RF
transaction.state.log.min.isr=$MIN_ISR
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=$RF
share.coordinator.state.topic.min.isr=$MIN_ISR
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

cluster_id() {  # one id for every node of a cluster, made once
  local file="$DATA/cluster.id"
  if [[ ! -s "$file" ]]; then
    local id; id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    echo "${id/#-/A}" >"$file"
  fi
  cat "$file"
}

declare -A LINES T0 LAUNCHED
# Launch the selected node if it is not running; readiness is waited for separately (wait_ready), since
# the nodes of a cluster only become ready together, once a quorum of controllers is up.
launch() {
  mkdir -p "$NDATA/logs" "$NDATA/data"
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    port_open "$NPORT" || die "node $NODE pid $pid (data $NDATA) runs but 127.0.0.1:$NPORT is closed; see $LOG"
    echo "kafka: node $NODE already running on 127.0.0.1:$NPORT (pid $pid)"; LAUNCHED[$NODE]=0; return 0
  fi
  for p in "$NPORT" "$NCPORT"; do
    ! port_open "$p" || die "127.0.0.1:$p is in use, not by a broker from $NDATA; set KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS"
  done
  write_config
  if [[ ! -f "$NDATA/data/meta.properties" ]]; then   # format once
    "${JAVA[@]}" kafka.tools.StorageTool format -t "$(cluster_id)" -c "$PROPS" >"$OUT" 2>&1 \
      || die "formatting storage of node $NODE failed: $(cause <"$OUT"); see $OUT"
  fi
  T0[$NODE]="$(date +%s%N)"; LINES[$NODE]="$( (wc -l <"$LOG") 2>/dev/null || echo 0)"
  # setsid: own session and process group, so Ctrl-C or a hangup in the caller's terminal never reaches
  # the broker (it lives until `stop`). The inner bash writes its pid, then execs java keeping that pid.
  rm -f "$PIDFILE"
  # shellcheck disable=SC2016
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "${JAVA[@]}" kafka.Kafka "$PROPS" \
    >"$OUT" 2>&1 </dev/null 8>&- &
  LAUNCHED[$NODE]=$!
}

# Ready = alive, port accepting, and "Kafka Server started" logged by this run (the port alone can
# answer before the broker is unfenced). The pid file appears a moment after launch, hence the launcher's pid.
wait_ready() {
  local launcher="${LAUNCHED[$NODE]}" lines="${LINES[$NODE]:-0}" pid deadline=$((SECONDS + TIMEOUT))
  [[ "$launcher" != 0 ]] || return 0
  while sleep 0.2; do
    pid="$(running_pid)"
    if [[ -z "$pid" ]] && ! kill -0 "$launcher" 2>/dev/null; then
      { tail -n +"$((lines + 1))" "$LOG" | grep -v $'^\tat ' | tail -n 20; tail -n 5 "$OUT"; } >&2 2>/dev/null || true
      die "node $NODE exited during startup: $(tail -n +"$((lines + 1))" "$LOG" | cat - "$OUT" | cause); see $LOG"
    fi
    if [[ -n "$pid" ]] && port_open "$NPORT" && tail -n +"$((lines + 1))" "$LOG" | grep -q 'Kafka Server started'; then
      break
    fi
    ((SECONDS < deadline)) || die "node $NODE pid ${pid:-?} not ready after ${TIMEOUT}s; see $LOG ('kafka.sh stop' to abort)"
  done
  local ms=$((($(date +%s%N) - ${T0[$NODE]}) / 1000000)) what="kafka"
  ((SIZE == 1)) || what="kafka node $NODE/$SIZE"
  printf '%s: ready on 127.0.0.1:%s (pid %s, started in %d.%ds)\n' "$what" "$NPORT" "$pid" $((ms / 1000)) $((ms % 1000 / 100))
}

start() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    echo "kafka: using external broker KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"; return 0
  fi
  fetch
  need java "a JDK >= 17"
  mkdir -p "$DATA"
  # One start at a time per data dir: a concurrent `start` waits here, then reuses the brokers.
  exec 8>"$DATA/.start.lock"; flock -w "$TIMEOUT" 8 || die "another 'kafka.sh start' on $DATA is stuck"
  local n
  for n in "${NODES[@]}"; do select_node "$n"; launch; done
  for n in "${NODES[@]}"; do select_node "$n"; wait_ready; done
}

stop() {  # graceful: SIGTERM runs a controlled shutdown and flushes logs, so the next start skips recovery
  local n pid pids=()
  # All at once: stopped one by one, the last nodes of a cluster would wait for a controller quorum
  # that has already gone. Each is waited for (and killed after 30 s) on its own.
  for n in "${NODES[@]}"; do
    select_node "$n"; pid="$(running_pid)"
    if [[ -n "$pid" ]]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$n:$pid"); fi
  done
  local entry
  for entry in "${pids[@]}"; do
    select_node "${entry%%:*}"; pid="${entry#*:}"
    for _ in $(seq 300); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then echo "kafka: node $NODE pid $pid ignored SIGTERM for 30s, killing it" >&2; kill -KILL "$pid" || true; fi
  done
  for n in "${NODES[@]}"; do select_node "$n"; rm -f "$PIDFILE"; done
}

kill_nodes() {  # SIGKILL for fault tests; wait until gone so a following `start` can rebind the ports
  local n pid
  for n in "${NODES[@]}"; do
    select_node "$n"; pid="$(running_pid)"
    if [[ -n "$pid" ]]; then kill -KILL "$pid"; while ours "$pid"; do sleep 0.05; done; fi
    rm -f "$PIDFILE"
  done
}

status() {  # exit 1 unless every selected node runs
  local n pid down=0
  for n in "${NODES[@]}"; do
    select_node "$n"; pid="$(running_pid)"
    local what="kafka"; ((SIZE == 1)) || what="kafka node $NODE/$SIZE"
    if [[ -z "$pid" ]]; then echo "$what: not running (data $NDATA)"; down=1; continue; fi
    echo "$what: running on 127.0.0.1:$NPORT (pid $pid, data $NDATA)"
  done
  return "$down"
}

case "$VERB" in
  fetch) fetch ;;
  bootstrap) bootstrap_list ;;
  start) start ;;
  stop) stop ;;
  kill) kill_nodes ;;
  status) status ;;
esac
