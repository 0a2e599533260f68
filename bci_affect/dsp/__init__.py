"""Pure numpy/scipy signal maths: filter design (via MNE), spectra, features, quality scores.

No state and no streams here: the processors in :mod:`bci_affect.processors` wrap these
functions for live use, and offline code calls them on whole arrays.
"""
