"""The one exception family the CLI turns into a clear message (never a traceback)."""


class CosmosError(Exception):
    """A user-facing problem: bad input, bad config, missing artifact. The message says what and where."""
