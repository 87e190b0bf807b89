#!/usr/bin/env bash
# `make bench`: build the release binaries the way they ship (cargo lambda, x86_64 here), start
# DynamoDB Local, run the benchmark driver, and rewrite docs/benchmarks.md.
# `scripts/bench.sh cold [rounds]` measures only the cold starts and prints them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

rm -rf target/lambda
cargo lambda build --release --x86-64 \
    -p issue -p activate -p check -p deactivate -p events -p keygate-cli -p keygate-bench
# `keygate` and the driver are built the same way so one build serves all. arm64 sizes come from
# the copy the last `make build ARCH=arm64` left in target/lambda-arm64, when there is one.
export BENCH_BIN_DIR=target/lambda BENCH_DATE
if [ -d target/lambda-arm64 ]; then
    export BENCH_ARM64_DIR=target/lambda-arm64
fi
BENCH_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
if [ "${1:-}" != cold ]; then
    # The load test first, on a DynamoDB Local of its own; the driver reports its results.
    export BENCH_LOAD=target/bench-load.json
    rm -f "$BENCH_LOAD"
    bash scripts/with-dynamodb-local.sh bash bench/load/run.sh target/lambda/keygate/bootstrap "$BENCH_LOAD"
fi
bash scripts/with-dynamodb-local.sh target/lambda/keygate-bench/bootstrap "$@"
