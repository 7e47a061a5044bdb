"""Sealed secret values on a real nats-server, as provisioned (services/runtime/sealing/):
only the gateway and the planner may put, each only on its own subjects; only the executor may
read; a subject holds one blob for good, so not even its sealer can swap it."""

from __future__ import annotations

import json

import nats
import pytest

from schemas import subjects as S
from services.runtime.bus import Bus
from services.runtime.errors import ConcurrencyConflict
from services.runtime.sealing.blobs import Ref, SealError
from services.runtime.sealing.opener import opener_for
from services.runtime.sealing.sealer import sealer_for
from tests.conftest import NatsEnv

SID = "s_sealed"


async def _bus(env: NatsEnv, user: str) -> Bus:
    return await Bus.connect(env.settings(user), user)


async def _count(env: NatsEnv) -> int:
    nc = await nats.connect(env.url, user="admin", password=env.credentials["admin"])
    try:
        return int((await nc.jetstream().stream_info(S.SEALED_STREAM)).state.messages)
    finally:
        await nc.close()


@pytest.mark.parametrize("sealer", S.SEALERS)
async def test_a_sealer_puts_and_only_the_executor_opens(nats_env: NatsEnv, sealer: str) -> None:
    bus, executor = await _bus(nats_env, sealer), await _bus(nats_env, "executor")
    try:
        args = {"name": "web", "env": {"DB_PASSWORD": f"{sealer}-Pw-1"}}
        out, refs = await sealer_for(bus).args(SID, "set_env", args)
        assert list(refs) == [f"{sealer}-Pw-1"]
        ref = Ref.parse(out["env"]["DB_PASSWORD"])
        assert ref is not None
        assert ref.sealer == sealer
        unsealed = await opener_for(executor).args(SID, "set_env", out)
        assert unsealed.args == args
        # Another session's command cannot use it.
        with pytest.raises(SealError, match="not available"):
            await opener_for(executor).args("s_other", "set_env", out)
        # Not even its sealer can put a second blob where the reference points.
        subject = S.sealed_subject(sealer, SID, ref.blob_id)
        with pytest.raises(ConcurrencyConflict):
            await bus.put_once(subject, b"swapped")
        assert (await opener_for(executor).args(SID, "set_env", out)).args == args
    finally:
        await bus.close()
        await executor.close()
    assert await _count(nats_env) == 1


@pytest.mark.parametrize(("user", "target"), [
    ("gateway", "planner"), ("planner", "gateway"), ("gate", "planner"), ("gate", "gateway"),
    ("executor", "planner"), ("notifier", "gateway"),
])
async def test_nobody_puts_on_another_sealers_subjects(
    nats_env: NatsEnv, user: str, target: str
) -> None:
    nc = await nats.connect(nats_env.url, user=user, password=nats_env.credentials[user],
                            inbox_prefix=f"_INBOX_{user}".encode(), allow_reconnect=False,
                            error_cb=_quiet)
    try:
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream().publish(S.sealed_subject(target, SID, "b_1"), b"x",
                                         timeout=1.0)
    finally:
        await nc.close()
    assert await _count(nats_env) == 0


@pytest.mark.parametrize("user", ["gateway", "planner", "gate", "notifier"])
async def test_only_the_executor_reads_sealed_blobs(nats_env: NatsEnv, user: str) -> None:
    planner = await _bus(nats_env, "planner")
    try:
        await sealer_for(planner).value(SID, "read-me-Pw-2")
    finally:
        await planner.close()
    nc = await nats.connect(nats_env.url, user=user, password=nats_env.credentials[user],
                            inbox_prefix=f"_INBOX_{user}".encode(), allow_reconnect=False,
                            error_cb=_quiet)
    try:
        for api in (f"$JS.API.DIRECT.GET.{S.SEALED_STREAM}",
                    f"$JS.API.STREAM.MSG.GET.{S.SEALED_STREAM}"):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(api, json.dumps({"last_by_subj": "sealed.>"}).encode(),
                                 timeout=1.0)
    finally:
        await nc.close()


async def _quiet(_exc: Exception) -> None:  # permission errors are what these tests expect
    return None
