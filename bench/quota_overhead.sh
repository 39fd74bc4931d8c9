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

run() {  # label bootstrap tenant round
    TALOS_TENANT=$3 PYTHONPATH="$HERE" "$PY" -m talos bench produce --bootstrap "$2" \
        --duration "$SECONDS_PER_RUN" --no-progress --json "$OUT/$1.$4.json" \
        >"$OUT/$1.$4.txt" 2>&1
    echo "$1 round $4: $(grep -m1 "msg/s" "$OUT/$1.$4.txt")"
}
one() {  # label round
    case $1 in
        main) run main "$MAIN_BOOT" "" "$2" ;;
        none) run none "$BRANCH_BOOT" bench-free "$2" ;;
        quota) run quota "$BRANCH_BOOT" bench-q "$2" ;;
    esac
}
orders=("main none quota" "none quota main" "quota main none")
for round in $(seq "$ROUNDS"); do  # the order rotates: no config always runs first
    for label in ${orders[$(((round - 1) % 3))]}; do one "$label" "$round"; done
done
talos quota list --bootstrap "$BRANCH_BOOT"
"$PY" - "$OUT" "$ROUNDS" <<'PYEOF'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rate = {}
for label in ("main", "none", "quota"):
    rate[label] = []
    for r in range(1, rounds + 1):
        with open(f"{out}/{label}.{r}.json") as handle:
            rate[label].append(json.load(handle)["msgs_per_s"])
for label, values in rate.items():
    print(f"{label:6} msg/s per round: {', '.join(f'{v:,.0f}' for v in values)}; "
          f"median {statistics.median(values):,.0f}")
for a, b in (("quota", "none"), ("quota", "main"), ("none", "main")):
    ratios = [x / y for x, y in zip(rate[a], rate[b])]
    print(f"{a}/{b} per round: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.3f}")
PYEOF
