"""Why a FineTuneJob cannot go ahead (yet)."""


class ResolveError(Exception):
    """`reason` is the condition reason (CamelCase), `message` says what to fix.

    `retry`: the world may fix it (a hub not created yet, a model not ready yet), so the
    operator waits with backoff; otherwise the job fails until its spec or the hub changes.
    """

    def __init__(self, reason: str, message: str, retry: bool = False):
        super().__init__(reason, message, retry)
        self.reason, self.message, self.retry = reason, message, retry

    def __str__(self) -> str:
        return self.message
