"""The error every NIfTI check raises: one line naming the file and the problem.

Why a module of its own: the reader (:mod:`cosmos.data.nifti`) and the header checks it builds on
(:mod:`cosmos.data.geometry`) both raise it, and the reader imports the checks; defined below both,
the import graph has no circle. ``cosmos.data.nifti.NiftiError`` is this same class.
"""

from __future__ import annotations

from cosmos.errors import CosmosError


class NiftiError(CosmosError, ValueError):
    """A NIfTI file that cannot be used; the message names the file and the problem."""


# Where callers import it from (and where it was defined before this module existed): tracebacks,
# logs and pickles name ``cosmos.data.nifti.NiftiError``, which re-exports this class.
NiftiError.__module__ = "cosmos.data.nifti"
