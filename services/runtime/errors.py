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


class LogFull(RetryableError):
    """A stream reached its size limit: it refuses every write (discard NEW, nothing stored is
    evicted) until an operator raises the limit (docs/architecture.md, "When the log is full").
    Retryable: a message that could not be handled is handled once the limit is raised."""


class EventTooLarge(PoisonMessage):
    """An event larger than the stream's max_msg_size: it can never be stored."""
