#!/usr/bin/env bash
# Regenerate reports/: the evaluation report (README.md), its results (*.json) and plots (*.png).
#
# Data: 8 simulated subjects, default simulator settings, seed 0, written to
# reports/tmp/sim-default (git-ignored, about 140 MB); the cut windows are cached in
# reports/tmp/cache. Each table is made by one command below (the report shows it beside the
# table). About 25 minutes on 2 shared CPU cores.
#   bash scripts/make_reports.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bci=.venv/bin/bci-affect
data=reports/tmp/sim-default
# the simulator's mains is 60 Hz; 1 s hop and every 4th face frame (7.5 frames/s) keep each
# table within minutes on a CPU
common=(--line-freq 60 --hop 1 --face-stride 4 --threads 1 --report reports)

if [ ! -f "$data/sub-08/ses-01.xdf" ]; then
  $bci simulate --subjects 8 --seed 0 --out "$data" --overwrite
fi

# within-subject: main table (models, baselines, chance), realism, label noise, missing face,
# corrupted EEG, muscle leakage; also exports the band features as a feature table
$bci benchmark --dataset "$data" --protocol within-subject \
  --tables main,realism,label-noise,missing-face,corrupted-eeg,muscle \
  --export-features reports/tmp/de-features.csv \
  --name within-subject --title "Within-subject, simulated sessions (8 subjects)" "${common[@]}"

# within-subject: loss ablation
$bci benchmark --dataset "$data" --protocol within-subject --tables ablation \
  --name within-subject-ablation --title "Within-subject ablation (8 subjects)" "${common[@]}"

# within-subject: active-learning curves (2 folds: half the trials are the pool, half the test)
$bci benchmark --dataset "$data" --protocol within-subject --tables active-learning \
  --folds 2 --subjects 6 \
  --name within-subject-al --title "Within-subject active learning (6 subjects, 2 folds)" \
  "${common[@]}"

# cross-subject: main table and muscle leakage
$bci benchmark --dataset "$data" --protocol cross-subject --tables main,muscle \
  --name cross-subject --title "Cross-subject, simulated sessions (8 subjects, 4 folds)" \
  "${common[@]}"

# the same band features as a plain feature table (the --features mode)
$bci benchmark --features reports/tmp/de-features.csv --protocol within-subject \
  --tables main,label-noise,active-learning --threads 1 --report reports \
  --name features-csv --title "Feature-table mode: the band features above as a CSV"

# plots and README.md from every result in reports/
.venv/bin/python -m bci_affect.evaluation.report reports
ls -l reports
