"""Import the KServe SDK without letting it read our command line.

Why: ``kserve.model_server`` parses ``sys.argv`` with its own argparse parser at import time
(``parse_known_args``, with prefix matching), so ``cosmos serve --model X`` would be read as
KServe's ``--model_name X``, and an ambiguous prefix would make KServe exit the process. We pass
every setting to ``ModelServer`` explicitly instead, so KServe sees only the program name.
"""

from __future__ import annotations

import sys

_argv = sys.argv
sys.argv = _argv[:1]
try:
    import kserve  # noqa: E402  (imports kserve.model_server)
    from kserve import model_server  # noqa: E402
except ImportError as exc:  # pragma: no cover - depends on the install
    from cosmos.errors import CosmosError

    raise CosmosError(
        f"cosmos serve needs the KServe SDK ({exc}); install it with "
        "pip install -e '.[serve]' in the repository (the [serve] extra)"
    ) from None
finally:
    sys.argv = _argv

__all__ = ["kserve", "model_server"]
