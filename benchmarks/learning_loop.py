"""The learning loop's targets on two simulators: fusion that does no harm, uncertainty that
ranks errors.

For each simulated corpus (the project's simulator, and ``benchmarks/sim_alt.toml``: another
montage and rate, other affect correlates, other expressivity and raters) and each label
scheme, runs ``bci-affect benchmark --tables main`` (within-subject, trial-level folds, every
baseline in the same run) and checks, with mean ± SE over subjects:

- fused accuracy >= the better of the face-only and the EEG-only arms (paired over subjects);
- the fused uncertainty's AUROC for errors >= that of ``1 - max p`` of the same probabilities,
  and >= 0.65 on the project's simulator.

Run::

    .venv/bin/python benchmarks/learning_loop.py --subjects 8 --out benchmarks/results/learning-loop.json

(about 3 minutes per corpus and scheme on 2 cores). The corpora are simulated into a
temporary folder (seed 7) unless ``--default-dir`` / ``--alt-dir`` are given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(ROOT / ".venv" / "bin" / "bci-affect")]
FACE_ROWS = ("teacher_only", "teacher_head")
EEG_ROWS = ("eeg_student", "student_head", "logistic")


def simulate(out: Path, n: int, config: Path | None) -> Path:
    cmd = [*CLI, "simulate", "--subjects", str(n), "--seed", "7", "--out", str(out)]
    if config is not None:
        cmd += ["--config", str(config)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def run_main(dataset: Path, labels: str, line_freq: float, n: int) -> dict:
    cmd = [
        *CLI, "benchmark", "--dataset", str(dataset), "--tables", "main", "--labels", labels,
        "--line-freq", str(line_freq), "--subjects", str(n), "--face-stride", "4", "--json",
        "--no-cache",
    ]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def _per_subject(rows: dict, name: str) -> dict[str, float]:
    return {s: v["accuracy"] for s, v in rows[name]["per_subject"].items()}


def summarise(doc: dict) -> dict:
    """Target checks of one ``benchmark --json`` result."""
    rows = doc["tables"]["main"]["rows"]
    subjects = sorted(rows["fused"]["per_subject"])
    fused = np.array([rows["fused"]["per_subject"][s]["accuracy"] for s in subjects])

    def best(names: tuple[str, ...]) -> tuple[str, np.ndarray]:
        present = [n for n in names if n in rows]
        name = max(present, key=lambda n: rows[n]["mean"]["accuracy"])
        return name, np.array([rows[name]["per_subject"][s]["accuracy"] for s in subjects])

    face_name, face = best(FACE_ROWS)
    eeg_name, eeg = best(EEG_ROWS)
    se = 1.0 / math.sqrt(len(subjects))

    def ms(x: np.ndarray) -> list[float]:
        return [float(x.mean()), float(x.std(ddof=1) * se) if x.size > 1 else float("nan")]

    out = {
        "n_subjects": len(subjects),
        "accuracy": {
            k: ms(np.array([rows[k]["per_subject"][s]["accuracy"] for s in subjects]))
            for k in rows
            if "per_subject" in rows[k]
        },
        "best_face": face_name,
        "best_eeg": eeg_name,
        "fused_minus_best_face": ms(fused - face),
        "fused_minus_best_eeg": ms(fused - eeg),
        "auroc_fused_uncertainty": rows["fused"]["mean"]["auroc_error"],
        "auroc_fused_1_minus_max_p": rows["fused"]["mean"].get("auroc_error_maxp"),
        "ece_fused": rows["fused"]["mean"]["ece"],
    }
    out["no_harm"] = bool(fused.mean() >= max(face.mean(), eeg.mean()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--labels", nargs="+", default=["quadrant", "valence", "arousal"])
    ap.add_argument("--default-dir", type=Path)
    ap.add_argument("--alt-dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results: dict = {"command": " ".join(sys.argv), "load_avg": os.getloadavg(), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        corpora = {
            "default": (
                args.default_dir or simulate(Path(tmp, "default"), args.subjects, None),
                60.0,
            ),
            "alt": (
                args.alt_dir
                or simulate(Path(tmp, "alt"), args.subjects, ROOT / "benchmarks" / "sim_alt.toml"),
                50.0,
            ),
        }
        for corpus, (path, line) in corpora.items():
            for labels in args.labels:
                t0 = time.perf_counter()
                doc = run_main(path, labels, line, args.subjects)
                s = summarise(doc)
                s["seconds"] = time.perf_counter() - t0
                results["runs"][f"{corpus}/{labels}"] = s
                a = s["accuracy"]
                print(
                    f"{corpus:8s} {labels:9s} fused {a['fused'][0]:.3f}±{a['fused'][1]:.3f} "
                    f"face({s['best_face']}) {a[s['best_face']][0]:.3f} "
                    f"eeg({s['best_eeg']}) {a[s['best_eeg']][0]:.3f} "
                    f"majority {a['majority'][0]:.3f} chance {a['chance'][0]:.3f} | "
                    f"AUROC u {s['auroc_fused_uncertainty']:.3f} vs 1-max p "
                    f"{s['auroc_fused_1_minus_max_p']:.3f} | ECE {s['ece_fused']:.3f} "
                    f"({s['seconds']:.0f} s)",
                    flush=True,
                )
    results["load_avg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
