"""The reference node's built-in task kinds: echo, sleep and (opt-in) shell."""

from __future__ import annotations

import asyncio
import contextlib
import json

from hub.node import Fail, Handler, TaskContext

__all__ = ("builtin", "echo", "shell", "sleep")

SHELL_READ_BYTES = 4096


async def echo(ctx: TaskContext) -> bytes:
    """The result is the payload."""
    return ctx.payload


async def sleep(ctx: TaskContext) -> str:
    """Payload ``{"seconds": s}``; one thought per second, so a watcher sees it alive."""
    try:
        seconds = float(json.loads(ctx.payload or b"{}").get("seconds", 1))
    except (ValueError, AttributeError, TypeError) as exc:
        raise Fail(f'payload must be {{"seconds": number}}: {exc}') from None
    elapsed = 0.0
    while elapsed < seconds:
        step = min(1.0, seconds - elapsed)
        await asyncio.sleep(step)
        elapsed += step
        ctx.thought(f"slept {elapsed:.1f} of {seconds:.1f} s\n")
    return json.dumps({"slept": seconds})


async def shell(ctx: TaskContext) -> str:
    """Payload ``{"cmd": "..."}``; stdout and stderr stream into the journal; the result is
    the exit code, and a non-zero code fails the task (re-running the same command rarely
    helps, so it is not retried)."""
    try:
        cmd = json.loads(ctx.payload or b"{}")["cmd"]
        if not isinstance(cmd, str) or not cmd:
            raise ValueError("cmd must be a non-empty string")
    except (ValueError, KeyError, TypeError) as exc:
        raise Fail(f'payload must be {{"cmd": "..."}}: {exc}') from None
    proc = await asyncio.create_subprocess_shell(
        cmd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(SHELL_READ_BYTES):
            ctx.stdout(chunk)
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if code != 0:
        raise Fail(f"exit code {code}", retry=False, result=str(code).encode())
    return str(code)


def builtin(*, allow_shell: bool) -> dict[str, Handler]:
    table: dict[str, Handler] = {"echo": echo, "sleep": sleep}
    if allow_shell:
        table["shell"] = shell
    return table
