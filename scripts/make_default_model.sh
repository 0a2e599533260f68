#!/usr/bin/env bash
# Rebuild bci_affect/pretrained/default, the bundled default model (about 130 kB): the face
# teacher with its circumplex prior plus an EEG student, trained on simulated sessions of
# the OpenBCI Cyton montage (Fp1 Fp2 C3 C4 P7 P8 O1 O2, 250 Hz, 60 Hz mains), four
# valence-arousal quadrants, 4 s windows. Validation holds out whole subjects, so the metrics
# stored in its config.json estimate what a new user gets before calibrating.
#   bash scripts/make_default_model.sh          (about 10 minutes on one CPU core)
set -euo pipefail
cd "$(dirname "$0")/.."

SUBJECTS=12
SIM_SEED=2024
TRAIN_SEED=0
EPOCHS=30

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/bci-affect simulate --subjects "$SUBJECTS" --seed "$SIM_SEED" --out "$tmp/sim"
.venv/bin/bci-affect train --dataset "$tmp/sim" --out bci_affect/pretrained/default --overwrite \
  --line-freq 60 --split subject --val-fraction 0.25 --seed "$TRAIN_SEED" --epochs "$EPOCHS" \
  --description "bci-affect default model, made by scripts/make_default_model.sh: bci-affect simulate --subjects $SUBJECTS --seed $SIM_SEED; bci-affect train --line-freq 60 --split subject --val-fraction 0.25 --seed $TRAIN_SEED --epochs $EPOCHS"
ls -l bci_affect/pretrained/default
