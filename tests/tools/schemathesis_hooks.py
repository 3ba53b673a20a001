"""Hooks for tests/tools/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key promises the same request: the API answers 422 when a key comes back with
another one. Generated requests draw keys from a small space and would reuse them across
different requests, so a request meant to be valid gets a key of its own, as a client following
the documentation does. Requests meant to be invalid keep what was generated.
"""

import uuid

import schemathesis

HEADER = "Idempotency-Key"


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    for name in list(case.headers or {}):
        if name.lower() == HEADER.lower():
            case.headers[name] = str(uuid.uuid4())
