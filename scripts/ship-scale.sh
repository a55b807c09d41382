#!/usr/bin/env bash
# Multi-process shipping run: AGENTS agent processes (default 8) each write
# EVENTS realistic events (default 50,000) to their own log directory and
# ship them through one nats-server -js into one collector
# (`agent-audit collect`); the script waits until the central log holds
# every record the agents wrote, verifies it with `agent-audit verify`,
# and prints events/s end to end and the collector's peak RSS (VmHWM).
#
#   scripts/ship-scale.sh                 # in-process exporters (background thread)
#   MODE=sidecar scripts/ship-scale.sh    # one `agent-audit ship` sidecar per agent
#   AGENTS=8 EVENTS=50000 TENANTS=4 KEEP=1 scripts/ship-scale.sh
#
# Needs nats-server (Debian: apt-get install nats-server) and python3 (for a
# free port). Builds target/release/agent-audit and the ship_agent example.
set -euo pipefail

AGENTS=${AGENTS:-8}
EVENTS=${EVENTS:-50000}
TENANTS=${TENANTS:-4}
MODE=${MODE:-inprocess}
TIMEOUT=${TIMEOUT:-1800}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

case "$MODE" in inprocess | sidecar) ;; *)
    echo "MODE must be inprocess or sidecar" >&2
    exit 2
    ;;
esac

NATS_BIN=$(command -v nats-server || true)
[ -z "$NATS_BIN" ] && [ -x /usr/sbin/nats-server ] && NATS_BIN=/usr/sbin/nats-server
if [ -z "$NATS_BIN" ]; then
    echo "nats-server is not installed (Debian: apt-get install nats-server)" >&2
    exit 2
fi

(cd "$ROOT" && cargo build --release -q -p agent-audit-cli --bin agent-audit &&
    cargo build --release -q -p agent-audit-ship --example ship_agent)
BIN=$TARGET/release/agent-audit
AGENT=$TARGET/release/examples/ship_agent

WORK=${WORK:-$(mktemp -d /tmp/ship-scale.XXXXXX)}
mkdir -p "$WORK"
PIDS=()
SIDECARS=()
NATS_PID=
COLLECT_PID=
cleanup() {
    for p in "${PIDS[@]}" "${SIDECARS[@]}" $COLLECT_PID $NATS_PID; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
seg_bytes() { # total size of the segment files under $@
    find "$@" -name 'seg-*.jsonl' -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}'
}
status_kb() { # status_kb PID FIELD: a /proc/PID/status field in kB
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}
cpu_s() { # user+system CPU seconds of PID
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL=nats://127.0.0.1:$PORT
"$NATS_BIN" -js -sd "$WORK/jetstream" -a 127.0.0.1 -p "$PORT" -l "$WORK/nats.log" &
NATS_PID=$!
for _ in $(seq 200); do grep -q "Server is ready" "$WORK/nats.log" 2>/dev/null && break; sleep 0.05; done
grep -q "Server is ready" "$WORK/nats.log" || { echo "nats-server did not start" >&2; exit 1; }

"$BIN" keygen --out "$WORK/writer.pem" >/dev/null
"$BIN" collect --from "$URL" --to "$WORK/central" --trust "$WORK/writer.pub.pem" \
    >"$WORK/collect.json" 2>"$WORK/collect.err" &
COLLECT_PID=$!

echo "ship-scale: $AGENTS agents x $EVENTS events, $TENANTS tenants, mode $MODE, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
T0=$(now)
for i in $(seq "$AGENTS"); do
    log=$WORK/agents/agent-$i
    tenant=tenant-$(((i - 1) % TENANTS))
    mkdir -p "$log"
    if [ "$MODE" = inprocess ]; then
        "$AGENT" "$log" "$EVENTS" "$WORK/writer.pem" "$tenant" "$URL" >"$WORK/agent-$i.json" &
        PIDS+=($!)
    else
        "$AGENT" "$log" "$EVENTS" "$WORK/writer.pem" "$tenant" >"$WORK/agent-$i.json" &
        PIDS+=($!)
        "$BIN" ship "$log" --to "$URL" >"$WORK/ship-$i.json" 2>"$WORK/ship-$i.err" &
        SIDECARS+=($!)
    fi
done
for p in "${PIDS[@]}"; do wait "$p"; done
PIDS=()
T_AGENTS=$(now)

# The central log is a byte-for-byte copy of every stream: wait until it
# holds as many bytes as the agents' segments.
EXPECTED=$(seg_bytes "$WORK/agents")
PEAK_RSS=0
while :; do
    got=$(seg_bytes "$WORK/central")
    rss=$(status_kb "$COLLECT_PID" VmRSS)
    [ "${rss:-0}" -gt "$PEAK_RSS" ] && PEAK_RSS=$rss
    [ "$got" -ge "$EXPECTED" ] && break
    if ! kill -0 "$COLLECT_PID" 2>/dev/null; then
        echo "the collector exited:" >&2
        cat "$WORK/collect.err" >&2
        exit 1
    fi
    if awk -v a="$(now)" -v b="$T0" -v t="$TIMEOUT" 'BEGIN {exit !(a - b > t)}'; then
        echo "timed out: central log has $got of $EXPECTED bytes" >&2
        exit 1
    fi
    sleep 0.2
done
T1=$(now)
HWM=$(status_kb "$COLLECT_PID" VmHWM)
COLLECT_CPU=$(cpu_s "$COLLECT_PID")
NATS_HWM=$(status_kb "$NATS_PID" VmHWM)
NATS_CPU=$(cpu_s "$NATS_PID")
SIDECAR_CPU=0
for p in "${SIDECARS[@]}"; do SIDECAR_CPU=$(awk -v a="$SIDECAR_CPU" -v b="$(cpu_s "$p")" 'BEGIN {print a + b}'); done
kill -TERM "$COLLECT_PID"
wait "$COLLECT_PID" || true
COLLECT_PID=
for p in "${SIDECARS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" || true; done
SIDECARS=()

# Every partition verifies; nothing is quarantined; every record is there once.
LOCAL_RECORDS=$(find "$WORK/agents" -name 'seg-*.jsonl' -exec cat {} + | wc -l)
CENTRAL_RECORDS=$(find "$WORK/central" -path "$WORK/central/quarantine" -prune -o -name 'seg-*.jsonl' -exec cat {} + | wc -l)
if [ -d "$WORK/central/quarantine" ]; then
    echo "FAIL: streams were quarantined: $(ls "$WORK/central/quarantine")" >&2
    exit 1
fi
STREAMS=0
for part in "$WORK"/central/*/*/; do
    out=$("$BIN" verify "$part" --key "$WORK/writer.pub.pem") || {
        echo "FAIL: verify $part" >&2
        echo "$out" >&2
        exit 1
    }
    n=$(grep -c "status Clean" <<<"$out" || true)
    STREAMS=$((STREAMS + n))
done
if [ "$CENTRAL_RECORDS" -ne "$LOCAL_RECORDS" ] || [ "$STREAMS" -ne "$AGENTS" ]; then
    echo "FAIL: central has $CENTRAL_RECORDS records in $STREAMS clean streams; agents wrote $LOCAL_RECORDS in $AGENTS" >&2
    exit 1
fi

EVENTS_TOTAL=$((AGENTS * EVENTS))
python3 - "$WORK" "$AGENTS" "$EVENTS_TOTAL" "$LOCAL_RECORDS" "$T0" "$T_AGENTS" "$T1" "$HWM" "$PEAK_RSS" "$COLLECT_CPU" "$NATS_HWM" "$EXPECTED" "$NATS_CPU" "$SIDECAR_CPU" <<'EOF'
import json, statistics, sys
work, agents, events, records, t0, ta, t1, hwm, rss, ccpu, nhwm, nbytes, ncpu, scpu = sys.argv[1:]
agents, events, records = int(agents), int(events), int(records)
t0, ta, t1 = float(t0), float(ta), float(t1)
rows = [json.loads(open(f"{work}/agent-{i}.json").read()) for i in range(1, agents + 1)]
e2e = t1 - t0
print(f"  events            {events} ({records} records with the writers' own)")
print(f"  bytes             {int(nbytes) / 1e6:.1f} MB of log")
print(f"  agents done       {ta - t0:.1f} s after start (emit median {statistics.median(r['emit_ns_per_call'] for r in rows):.0f} ns/call, dropped {sum(r['dropped'] for r in rows)})")
print(f"  all in central    {e2e:.1f} s after start")
print(f"  end to end        {events / e2e:,.0f} events/s ({records / e2e:,.0f} records/s, {int(nbytes) / e2e / 1e6:.1f} MB/s)")
print(f"  collector         peak RSS (VmHWM) {int(hwm) / 1024:.1f} MiB, CPU {float(ccpu):.1f} s")
print(f"  nats-server       peak RSS (VmHWM) {int(nhwm) / 1024:.1f} MiB, CPU {float(ncpu):.1f} s")
acpu = sum(r["cpu_s"] for r in rows)
print(f"  agent processes   CPU {acpu:.1f} s (writer, and exporter when in-process)" + (f"; sidecars CPU {float(scpu):.1f} s" if float(scpu) > 0 else ""))
per = lambda s: float(s) / records * 1e6
print(f"  CPU per record    agent {per(acpu):.1f} us, sidecar {per(scpu):.1f} us, nats-server {per(ncpu):.1f} us, collector {per(ccpu):.1f} us")
ex = [r["exporter"] for r in rows if r.get("exporter")]
if ex:
    print(f"  exporters         shipped {sum(x['shipped'] for x in ex)} records, {sum(x['failures'] for x in ex)} failed attempts, all drained: {all(r['drained'] for r in rows)}")
print(f"  verify            {agents} streams clean, {records} records central == local")
EOF
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
