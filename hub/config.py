"""Settings: every limit, TTL and size of the hub, read once from ``HUB_*`` variables.

The old hub hard-coded its limits (task TTL 3600 s, results kept 120 s, 40 KB buffers); each is a
typed field here with its unit in the name. The object is frozen and passed in explicitly; nothing
reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hub.errors import InvalidSettings

__all__ = ("Settings", "load_settings", "unknown_env")

_SYNC = re.compile(r"^(always|\d+(ms|s|m|h))$")

#: The most KV buckets a journal may be spread over (``HUB_JOURNAL_SHARDS``).
MAX_JOURNAL_SHARDS = 64

#: ``HUB_*`` names read by the client side of the CLI rather than by ``Settings``.
CLIENT_ENV = frozenset({"HUB_ADDR"})


class Settings(BaseSettings):
    """Configuration of one hub replica (and of the embedded NATS it may start)."""

    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True, extra="ignore")

    # NATS
    nats_url: str = Field("", description="comma-separated NATS URLs; empty = embedded server")
    nats_port: int = Field(0, ge=0, le=65535, description="embedded server port; 0 = choose")
    nats_sync: str = Field("always", description="nats-server sync_interval: always or e.g. 1s")
    data_dir: str = Field(".hub", description="embedded NATS store directory")
    stream_replicas: int = Field(1, ge=1, le=5)
    connect_timeout_s: float = Field(5.0, gt=0)
    request_timeout_s: float = Field(5.0, gt=0)

    # process
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop", description="event loop of hub serve/node/nats; uvloop falls back to asyncio"
    )

    # work pool
    ack_wait_s: float = Field(30.0, gt=0, description="visibility timeout of a claimed task")
    max_attempts: int = Field(5, ge=1, le=1000, description="default deliveries before the DLQ")
    retry_backoff_s: tuple[float, ...] = Field((1.0, 5.0, 30.0), description="delay per retry")
    task_ttl_s: float = Field(3600.0, gt=0, description="age at which an unclaimed task expires")
    result_ttl_s: float = Field(6 * 3600.0, ge=1, description="how long a result stays readable")
    dedupe_window_s: float = Field(120.0, gt=0)
    max_payload_bytes: int = Field(1024 * 1024, ge=1024, le=4 * 1024 * 1024)
    starvation_limit: int = Field(
        8, ge=1, description="dispatches a waiting priority may be passed over before it goes first"
    )
    housekeeping_interval_s: float = Field(5.0, gt=0)

    # journal
    journal_head_bytes: int = Field(8 * 1024, ge=0)
    journal_tail_bytes: int = Field(32 * 1024, ge=0)
    append_coalesce_ms: float = Field(20.0, ge=0)
    journal_shards: int = Field(
        0,
        ge=0,
        le=MAX_JOURNAL_SHARDS,
        description="KV buckets a new journal is spread over (hub_journal, hub_journal_1, ...); "
        "0: the journal's own count, or 1 for a new journal",
    )

    # node protocol and API
    grpc_addr: str = "127.0.0.1:50051"
    token: str = Field("", description="bearer token every caller must present; empty = none")
    heartbeat_s: float = Field(5.0, gt=0)
    node_grace_s: float = Field(5.0, ge=0, description="re-attach grace before tasks go back")
    offer_timeout_s: float = Field(5.0, gt=0)
    max_slots_per_node: int = Field(256, ge=1)
    max_stream_consumers: int = Field(
        100_000,
        ge=1,
        description="consumers a priority's stream may hold: 'any', one per capability set and "
        "one per node seen in the last day (nats-server 2.15 allows 1,000 where none is named)",
    )
    max_stream_submits: int = Field(
        10_000, ge=1, description="submits one SubmitStream may have open at once"
    )

    @field_validator("nats_sync")
    @classmethod
    def _sync(cls, value: str) -> str:
        if not _SYNC.match(value):
            raise ValueError("must be 'always' or a duration such as 1s, 500ms, 2m")
        return value

    @field_validator("retry_backoff_s")
    @classmethod
    def _backoff(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v < 0 for v in value):
            raise ValueError("needs at least one delay, none negative")
        return value

    @model_validator(mode="after")
    def _cross(self) -> Self:
        if self.journal_head_bytes + self.journal_tail_bytes < 1:
            raise ValueError("HUB_JOURNAL_HEAD_BYTES + HUB_JOURNAL_TAIL_BYTES must be at least 1")
        if self.heartbeat_s >= self.ack_wait_s:
            raise ValueError("HUB_HEARTBEAT_S must be shorter than HUB_ACK_WAIT_S, or leases lapse")
        return self

    @property
    def nats_urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]

    @property
    def embedded(self) -> bool:
        return not self.nats_urls

    @property
    def journal_value_bytes(self) -> int:
        """Largest journal value: a record with a base64 result, or a buffer whose undecodable
        bytes each escape to six characters of JSON."""
        buffers = 6 * (self.journal_head_bytes + self.journal_tail_bytes) + 4096
        return max(self.max_payload_bytes * 4 // 3 + 65536, buffers)

    def backoff_for(self, tries: int) -> float:
        """Delay before retry number ``tries`` (1-based); the last value repeats."""
        index = min(max(tries, 1), len(self.retry_backoff_s)) - 1
        return self.retry_backoff_s[index]


def unknown_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """``HUB_*`` variables that no setting reads: usually a typo an operator wants to hear of."""
    environ = os.environ if environ is None else environ
    known = {f"HUB_{name.upper()}" for name in Settings.model_fields} | CLIENT_ENV
    return sorted(k for k in environ if k.startswith("HUB_") and k not in known)


def load_settings(**overrides: object) -> Settings:
    """Build Settings from the environment plus overrides, naming the bad setting on failure."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            env = f"HUB_{name.upper()}" if name in Settings.model_fields else name
            problems.append(f"{env}: {err['msg']}")
        raise InvalidSettings("; ".join(problems)) from None
