"""Evaluation: crossMoDA Dice/ASSD (``metrics``), figures (``plots``) and the run report (``report``)."""
