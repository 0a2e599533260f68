#!/usr/bin/env bash
# Rebuild bci_affect/pretrained/default, the bundled default model (about 130 kB): the face
# teacher with its circumplex prior plus a montage-free EEG student (differential entropy on the
# virtual 10-20 montage, normalised per session), trained on simulated sessions of four
# montages and rates: the OpenBCI Cyton (Fp1 Fp2 C3 C4 P7 P8 O1 O2, 250 Hz), a Cyton+Daisy (16
# ch, 125 Hz), a Muse (TP9 AF7 AF8 TP10, 256 Hz) and BrainFlow's synthetic board labels (16 ch,
# 250 Hz); 60 Hz mains, four valence-arousal quadrants, 4 s windows. Validation holds out whole
# subjects, so the metrics stored in its config.json estimate what a new user gets before
# calibrating. Byte-identical on rerun (fixed seeds, one thread).
#   bash scripts/make_default_model.sh          (about 15 minutes on one CPU core)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBJECTS=6          # per montage
SIM_SEED=2024
TRAIN_SEED=0
EPOCHS=30

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/bci-affect simulate --subjects "$SUBJECTS" --seed "$SIM_SEED" --out "$tmp/sim/cyton8"
seed=$SIM_SEED
for cfg in cyton_daisy_125 muse_256 synthetic_16_250; do
  seed=$((seed + 1))
  .venv/bin/bci-affect simulate --subjects "$SUBJECTS" --seed "$seed" \
    --config "scripts/sim_montages/$cfg.toml" --out "$tmp/sim/$cfg"
done
.venv/bin/bci-affect train --dataset "$tmp/sim" --out bci_affect/pretrained/default --overwrite \
  --line-freq 60 --split subject --val-fraction 0.25 --seed "$TRAIN_SEED" --epochs "$EPOCHS" \
  --threads 1 \
  --description "bci-affect default model, made by scripts/make_default_model.sh: bci-affect simulate --subjects $SUBJECTS per montage (Cyton 8 ch 250 Hz seed $SIM_SEED; scripts/sim_montages/cyton_daisy_125, muse_256, synthetic_16_250 seeds $((SIM_SEED + 1))..$((SIM_SEED + 3))); bci-affect train --eeg-inputs sites --line-freq 60 --split subject --val-fraction 0.25 --seed $TRAIN_SEED --epochs $EPOCHS"
# the rest of the folder is deterministic; the temporary corpus path and the wall time are not
.venv/bin/python - <<'PY'
import json
from pathlib import Path

p = Path("bci_affect/pretrained/default/config.json")
doc = json.loads(p.read_text())
doc["metadata"]["dataset"]["path"] = "(simulated by scripts/make_default_model.sh)"
doc["metadata"]["training"]["seconds"] = None
p.write_text(json.dumps(doc, indent=2, allow_nan=False))
PY
ls -l bci_affect/pretrained/default
sha256sum bci_affect/pretrained/default/*
