"""Training on recorded sessions: labelled windows, trial-level splits, training and fine-tuning.

Sessions come in already loaded (``dict[str, Chunk]`` per session); this package never reads
files or talks to devices. See ``bci-affect train`` for the command line.
"""
