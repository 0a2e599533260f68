#!/usr/bin/env bash
# Make recordings/sample/demo.xdf (+ demo.json), the recording `bci-affect demo` replays:
# one simulated subject, two rated trials, about 70 s of EEG (8 ch, 250 Hz), FaceFeatures
# (160 ch, 30 fps) and Markers, written by the project's own simulator. About 2 MB.
#   bash scripts/make_sample_recording.sh
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/bci-affect simulate --subjects 1 --seed 7 --config recordings/sample/demo.toml \
  --out "$tmp"
mkdir -p recordings/sample
cp "$tmp/sub-01/demo.xdf" recordings/sample/demo.xdf
cp "$tmp/sub-01/demo.json" recordings/sample/demo.json
ls -l recordings/sample/demo.xdf recordings/sample/demo.json
