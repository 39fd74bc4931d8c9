#!/usr/bin/env bash
# The cost of quota checks on `talos bench produce` (issue 13 §2): three brokers side by
# side, measured in interleaved rounds so the load of a shared machine falls on all alike:
#   main    - a broker without quota code (PYTHONPATH=$MAIN, default /work/main)
#   none    - this tree's broker, the producing tenant has no quota (metering only)
#   quota   - this tree's broker, the tenant's produce quota set far above the load
#             (10 GiB/s: every batch is checked and charged, none throttled)
# Usage: bench/quota_overhead.sh [ROUNDS] [SECONDS]   (run from the repository root)
set -euo pipefail
ROUNDS=${1:-4}
SECONDS_PER_RUN=${2:-8}
HERE=$(pwd)
MAIN=${MAIN:-/work/main}
PY=${PY:-$HERE/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
OUT=$(mktemp -d /tmp/talos-quota-bench.XXXXXX)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -INT -- "-$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT

up() {  # name pythonpath -> writes $OUT/name/bootstrap
    mkdir -p "$OUT/$1"
    setsid env PYTHONPATH="$2" "$PY" -m talos dev up --brokers 1 --data-dir "$OUT/$1" \
        >"$OUT/$1.log" 2>&1 &
    pids+=($!)
}
up main "$MAIN"
up branch "$HERE"
for name in main branch; do
    for _ in $(seq 120); do [ -s "$OUT/$name/bootstrap" ] && break; sleep 0.5; done
done
MAIN_BOOT=$(cat "$OUT/main/bootstrap")
BRANCH_BOOT=$(cat "$OUT/branch/bootstrap")
talos() { PYTHONPATH="$HERE" "$PY" -m talos "$@"; }
talos quota capacity --bootstrap "$BRANCH_BOOT" --produce-bytes-per-s 100G >/dev/null
talos quota request bench-q --bootstrap "$BRANCH_BOOT" --produce-bytes-per-s 10G

# The broker's CPU time (user + system, clock ticks) is the steadier figure on a loaded
# machine: throughput moves with whatever else runs, the work per message much less.
broker_pid() { pgrep -f -- "--data-dir $OUT/$1/store" | head -1; }
MAIN_PID=$(broker_pid main)
BRANCH_PID=$(broker_pid branch)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {  # label bootstrap tenant round broker-pid
    local before
    before=$(ticks "$5")
    TALOS_TENANT=$3 PYTHONPATH="$HERE" "$PY" -m talos bench produce --bootstrap "$2" \
        --duration "$SECONDS_PER_RUN" --no-progress --json "$OUT/$1.$4.json" \
        >"$OUT/$1.$4.txt" 2>&1
    echo $(($(ticks "$5") - before)) >"$OUT/$1.$4.ticks"
    echo "$1 round $4: $(grep -m1 "msg/s" "$OUT/$1.$4.txt"); broker CPU ticks $(cat "$OUT/$1.$4.ticks")"
}
one() {  # label round
    case $1 in
        main) run main "$MAIN_BOOT" "" "$2" "$MAIN_PID" ;;
        none) run none "$BRANCH_BOOT" bench-free "$2" "$BRANCH_PID" ;;
        quota) run quota "$BRANCH_BOOT" bench-q "$2" "$BRANCH_PID" ;;
    esac
}
orders=("main none quota" "none quota main" "quota main none")
for round in $(seq "$ROUNDS"); do  # the order rotates: no config always runs first
    for label in ${orders[$(((round - 1) % 3))]}; do one "$label" "$round"; done
done
talos quota list --bootstrap "$BRANCH_BOOT"
"$PY" - "$OUT" "$ROUNDS" "$(getconf CLK_TCK)" <<'PYEOF'
import json, statistics, sys
out, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rate, cpu = {}, {}
for label in ("main", "none", "quota"):
    rate[label], cpu[label] = [], []
    for r in range(1, rounds + 1):
        with open(f"{out}/{label}.{r}.json") as handle:
            run = json.load(handle)
        with open(f"{out}/{label}.{r}.ticks") as handle:
            ticks = int(handle.read())
        rate[label].append(run["msgs_per_s"])
        cpu[label].append(ticks / hz / run["messages"] * 1e6)  # broker CPU us per message
for name, table, unit in (("msg/s", rate, ",.0f"), ("broker CPU us/msg", cpu, ".3f")):
    for label, values in table.items():
        print(f"{label:6} {name} per round: {', '.join(format(v, unit) for v in values)}; "
              f"median {format(statistics.median(values), unit)}")
    for a, b in (("quota", "none"), ("quota", "main"), ("none", "main")):
        ratios = [x / y for x, y in zip(table[a], table[b])]
        print(f"  {name} {a}/{b} per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.3f}")
PYEOF
