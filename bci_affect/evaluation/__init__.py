"""The evaluation harness: metrics, trial-level protocols, the benchmark's tables and reports.

- :mod:`.metrics`: accuracy, macro-F1, ECE, NLL, AUROC of uncertainty for errors, temperature
  scaling, conformal coverage and set size;
- :mod:`.protocols`: within-subject and cross-subject folds that never cut a trial;
- :mod:`.data`: the labelled windows a benchmark scores (cut once, cached), with a corrupted twin;
- :mod:`.features_csv`: plain feature tables (subject, trial, label, features);
- :mod:`.arms`: the models trained on each fold and their post-hoc calibration;
- :mod:`.experiments`: the tables (main, ablation, active learning, label noise, missing face,
  corrupted EEG, muscle leakage, realism);
- :mod:`.report`: text, markdown and PNG output, and the check of the evaluation targets.

See ``bci-affect benchmark --help``.
"""
