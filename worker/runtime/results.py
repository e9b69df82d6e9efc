# Celery sets the backend's settings (expires, failure_expires) at run time, unseen by mypy.
# mypy: disable-error-code="attr-defined"
"""Celery's Redis result backend, storing a job's result in one round trip instead of two,
and read by clients without needless sleeps.

Before it writes a result, Celery's backend reads the stored one (a GET), so that a copy of
the job that ran twice cannot replace a SUCCESS a client may have read. Here one Lua script
does that check, the write (with the same expiry) and the publish that wakes waiting
clients, atomically: the same guarantee, one round trip less for every job.

A client waiting for a result (`AsyncResult.get`) calls `sleep(0)` after each read to let
other threads run; on Linux each costs the timer slack (50 µs and more), five per result,
a fifth of what the queue adds to a short job. The reads wait on the socket with the GIL
released already, so a zero sleep is skipped (`_sleep`); other sleeps are kept.

Select it with Celery's `result_backend` (see `worker.broker`); clients may use it too,
since reading is unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from celery import states
from celery.backends import asynchronous
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

__all__ = ["STORE_SCRIPT", "ResultBackend"]


def _sleep(seconds: float) -> None:
    """`time.sleep`, except that a zero sleep returns at once."""
    if seconds > 0:
        time.sleep(seconds)


# The two `sleep(0)` calls of Celery's result consumer (threads; gevent and eventlet have
# drainers of their own) look this name up in their module when they run.
asynchronous.sleep = _sleep

# KEYS[1]: the result's key. ARGV[1]: the encoded meta, ARGV[2]: seconds to keep it (0: for
# ever). Returns 0 when a SUCCESS is already stored (nothing written), else 1. A stored value
# cjson cannot read counts as a SUCCESS if it says so in Celery's own JSON spelling.
STORE_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok then
    if type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
  elseif string.find(current, '"status": "SUCCESS"', 1, true) then
    return 0
  end
end
local seconds = tonumber(ARGV[2])
if seconds > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', seconds)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class ResultBackend(RedisBackend):
    """Celery's Redis backend whose result store is one script call."""

    _script: Any = None

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        self.ensure(self._store_once, (self.get_key_for_task(task_id), value, expires or 0))
        return result

    def _store_once(self, key: str, value: Any, seconds: float) -> None:
        if self._script is None:
            self._script = self.client.register_script(STORE_SCRIPT)
        self._script(keys=[key], args=[value, int(seconds)])
