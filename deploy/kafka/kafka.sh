#!/usr/bin/env bash
# Run a real single-node Apache Kafka 4.4.0 broker (KRaft, combined broker+controller) without Docker.
# Usage: kafka.sh fetch|start|stop|status|kill
# Env: KAFKA_BOOTSTRAP_SERVERS (use that broker instead; start does nothing), KAFKA_DATA_DIR, KAFKA_PORT,
#      KAFKA_CONTROLLER_PORT, KAFKA_CACHE_DIR, KAFKA_START_TIMEOUT_S. Several brokers can run at once,
#      each with its own KAFKA_DATA_DIR and KAFKA_PORT.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"                        # from the script's location, not cwd
CACHE="${KAFKA_CACHE_DIR:-$REPO/.cache/kafka/4.4.0/libs}"
DATA="${KAFKA_DATA_DIR:-$REPO/.data/kafka}"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
TIMEOUT="${KAFKA_START_TIMEOUT_S:-60}"
PIDFILE="$DATA/kafka.pid"
PROPS="$DATA/server.properties"
LOG="$DATA/logs/server.log"
OUT="$DATA/logs/stdout.log"   # JVM stdout/stderr: catches failures that happen before log4j is up

die() { echo "kafka: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || die "'$1' not found on PATH; install $2"; }
# First exception message on stdin, without class name or stack frames, for one-line errors.
cause() { grep -m1 -E '^(Exception in thread "[^"]*" )?[A-Za-z0-9_.$]+(Exception|Error)(: |$)' \
  | sed -E 's/^(Exception in thread "[^"]*" )?[A-Za-z0-9_.$]+: //' | cut -c1-300 || true; }

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
running_pid() {  # live pid of the broker started from $DATA, or nothing
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null)" || return 0
  if [[ -n "$pid" ]] && ours "$pid"; then echo "$pid"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# JVM command prefix (main class and args follow). The classpath wildcard is expanded by java, not bash.
JAVA=(java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$HERE/log4j2.properties" "-Dkafka.logs.dir=$DATA/logs" -cp "$CACHE/*")

write_config() {
  # Static controller.quorum.voters (not the dynamic --standalone bootstrap): the voter endpoint is then
  # not baked into the metadata log, so the same data dir can be restarted on a different port.
  # Internal topics get 1 partition instead of 50: on a single dev node 50 only cost start-up time
  # (every partition is loaded on each start) and delay the first consumer-group join.
  cat >"$PROPS" <<EOF
# Written by deploy/kafka/kafka.sh on every start; edits here are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

start() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    echo "kafka: using external broker KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP_SERVERS"; return 0
  fi
  fetch
  mkdir -p "$DATA/logs" "$DATA/data"
  # One start at a time per data dir: a concurrent `start` waits here, then reuses the broker.
  exec 8>"$DATA/.start.lock"; flock -w "$TIMEOUT" 8 || die "another 'kafka.sh start' on $DATA is stuck"
  local pid deadline=$((SECONDS + TIMEOUT)); pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    port_open "$PORT" || die "broker pid $pid (data $DATA) runs but 127.0.0.1:$PORT is closed; see $LOG"
    echo "kafka: already running on 127.0.0.1:$PORT (pid $pid)"; return 0
  fi
  for p in "$PORT" "$CPORT"; do
    ! port_open "$p" || die "127.0.0.1:$p is in use, not by a broker from $DATA; set KAFKA_PORT or KAFKA_BOOTSTRAP_SERVERS"
  done
  need java "a JDK >= 17"
  write_config
  if [[ ! -f "$DATA/data/meta.properties" ]]; then   # format once, with a random cluster id
    local id; id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
    "${JAVA[@]}" kafka.tools.StorageTool format -t "${id/#-/A}" -c "$PROPS" >"$OUT" 2>&1 \
      || die "formatting storage failed: $(cause <"$OUT"); see $OUT"
  fi
  local t0 lines; t0="$(date +%s%N)"; lines="$( (wc -l <"$LOG") 2>/dev/null || echo 0)"
  # setsid: own session and process group, so Ctrl-C or a hangup in the caller's terminal never reaches
  # the broker (it lives until `stop`). The inner bash writes its pid, then execs java keeping that pid.
  rm -f "$PIDFILE"
  # shellcheck disable=SC2016
  setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" "${JAVA[@]}" kafka.Kafka "$PROPS" \
    >"$OUT" 2>&1 </dev/null 8>&- &
  # Ready = alive, port accepting, and "Kafka Server started" logged by this run (the port alone can
  # answer before the broker is unfenced). The pid file appears a moment after launch, hence $!.
  while sleep 0.2; do
    pid="$(running_pid)"
    if [[ -z "$pid" ]] && ! kill -0 "$!" 2>/dev/null; then
      { tail -n +"$((lines + 1))" "$LOG" | grep -v $'^\tat ' | tail -n 20; tail -n 5 "$OUT"; } >&2 2>/dev/null || true
      die "broker exited during startup: $(tail -n +"$((lines + 1))" "$LOG" | cat - "$OUT" | cause); see $LOG"
    fi
    if [[ -n "$pid" ]] && port_open "$PORT" && tail -n +"$((lines + 1))" "$LOG" | grep -q 'Kafka Server started'; then
      break
    fi
    ((SECONDS < deadline)) || die "broker pid ${pid:-?} not ready after ${TIMEOUT}s; see $LOG ('kafka.sh stop' to abort)"
  done
  local ms=$((($(date +%s%N) - t0) / 1000000))
  printf 'kafka: ready on 127.0.0.1:%s (pid %s, started in %d.%ds)\n' "$PORT" "$pid" $((ms / 1000)) $((ms % 1000 / 100))
}

stop() {  # graceful: SIGTERM runs a controlled shutdown and flushes logs, so the next start skips recovery
  local pid; pid="$(running_pid)"
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then echo "kafka: pid $pid ignored SIGTERM for 30s, killing it" >&2; kill -KILL "$pid" || true; fi
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill)  # SIGKILL for fault tests; wait until it is gone so a following `start` can rebind the ports
    pid="$(running_pid)"
    if [[ -n "$pid" ]]; then kill -KILL "$pid"; while ours "$pid"; do sleep 0.05; done; fi
    rm -f "$PIDFILE" ;;
  status)
    pid="$(running_pid)"
    [[ -n "$pid" ]] || { echo "kafka: not running (data $DATA)"; exit 1; }
    echo "kafka: running on 127.0.0.1:$PORT (pid $pid, data $DATA)" ;;
  *) echo "usage: $(basename "$0") fetch|start|stop|status|kill" >&2; exit 2 ;;
esac
