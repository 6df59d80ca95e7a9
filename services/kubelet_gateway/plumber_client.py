"""The gateway's side of the plumber commands: typed requests with deadlines.

A plumber that does not answer in time, or answers garbage, becomes an error
reply for the claim or pod concerned, never an exception in a gRPC or NRI handler.
"""

from __future__ import annotations

import time
from typing import TypeVar

import anyio
import nats.errors
from nats.aio.client import Client

from schemas import plumber as p
from schemas.base import DecodeError, ErrorReply, Message, decode, encode
from schemas.subjects import Subjects

R = TypeVar("R", bound=Message)


class PlumberError(RuntimeError):
    """The plumber could not be asked or answered with an error."""


class PlumberClient:
    def __init__(self, nc: Client, node: str, timeout: float = 30.0) -> None:
        self.nc = nc
        self.subjects = Subjects(node)
        self.timeout = timeout

    async def _ask(self, verb: str, msg: Message, kind: type[R], deadline: float | None) -> R:
        end = time.monotonic() + (deadline or self.timeout)
        pause = 0.02
        while True:
            try:
                reply = await self.nc.request(self.subjects.plumber(verb), encode(msg),
                                              timeout=max(0.001, end - time.monotonic()))
                break
            except nats.errors.NoRespondersError:
                # the plumber sidecar is (re)starting: its endpoint is not there yet;
                # asking again within the caller's deadline beats failing the pod at once
                if time.monotonic() + pause >= end:
                    raise PlumberError(f"plumber.{verb}: no answer (NoRespondersError)") \
                        from None
                await anyio.sleep(pause)
                pause = min(pause * 2, 0.25)
            except nats.errors.TimeoutError:
                raise PlumberError(f"plumber.{verb}: no answer (TimeoutError)") from None
            except nats.errors.Error as exc:
                raise PlumberError(f"plumber.{verb}: bus error: {exc}") from None
        try:
            return decode(reply.data, kind)
        except DecodeError:
            try:
                err = decode(reply.data, ErrorReply)
            except DecodeError as exc:
                raise PlumberError(f"plumber.{verb}: unreadable reply: {exc}") from None
            raise PlumberError(f"plumber.{verb}: {err.error}") from None

    async def prepare(self, req: p.Prepare, deadline: float | None = None) -> p.PrepareReply:
        return await self._ask("prepare", req, p.PrepareReply, deadline)

    async def unprepare(self, req: p.Unprepare, deadline: float | None = None) -> p.UnprepareReply:
        return await self._ask("unprepare", req, p.UnprepareReply, deadline)

    async def attach(self, req: p.Attach, deadline: float | None = None) -> p.AttachReply:
        return await self._ask("attach", req, p.AttachReply, deadline)

    async def detach(self, req: p.Detach, deadline: float | None = None) -> p.DetachReply:
        return await self._ask("detach", req, p.DetachReply, deadline)

    async def status(self, req: p.PlumberStatusGet,
                     deadline: float | None = None) -> p.PlumberStatus:
        return await self._ask("status", req, p.PlumberStatus, deadline)

    async def container_devices(self, req: p.ContainerDevices,
                                deadline: float | None = None) -> p.ContainerDevicesReply:
        return await self._ask("container-devices", req, p.ContainerDevicesReply, deadline)
