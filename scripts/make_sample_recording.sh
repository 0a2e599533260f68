#!/usr/bin/env bash
# Re-make recordings/sample/demo.xdf with the project's own tools: BrainFlow's synthetic board
# published on LSL by `bci-affect stream`, recorded by `bci-affect record`.
set -euo pipefail
cd "$(dirname "$0")/.."
id="bci-affect-sample-$$"
.venv/bin/bci-affect stream --board synthetic --source-id "$id" --duration 40 \
  --montage Fp1,Fp2,C3,C4,P7,P8,O1,O2,F3,F4,F7,F8,T7,T8,Pz,Cz >/dev/null &
board=$!
trap 'kill $board 2>/dev/null || true' EXIT
.venv/bin/bci-affect record --out recordings/sample/demo.xdf --overwrite --duration 20 \
  --streams "source_id=$id" "source_id=$id:accel" "source_id=$id:events" \
  --board synthetic --timeout 20
