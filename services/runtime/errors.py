"""The small error hierarchy. Adapters translate library errors into these."""


class InterlockError(Exception):
    """Base of every error Interlock raises on purpose."""


class ConfigError(InterlockError):
    """Settings are missing or invalid; the process must not start."""


class RetryableError(InterlockError):
    """A transient failure: the message is redelivered later."""


class PoisonMessage(InterlockError):
    """A message that can never be handled: terminated and recorded, never looped."""


class ConcurrencyConflict(InterlockError):
    """An optimistic-concurrency append lost the race: someone else wrote first."""
