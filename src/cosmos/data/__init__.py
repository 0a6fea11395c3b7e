"""Data layer: crossMoDA layout, NIfTI I/O, validation, object storage and the built-in phantom."""
