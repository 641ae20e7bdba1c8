"""Let aioresponses 0.7.9 build responses under aiohttp 3.14.

aiohttp 3.14 (a security release) added a required ``stream_writer`` argument to
``ClientResponse``; aioresponses 0.7.9, its latest release, does not pass it
(pnuckowski/aioresponses#289, fix pending in #288). aiohttp only reads
``stream_writer.output_size`` from it, so the default response class is given a stand-in.
This touches only the tests, never bridged's runtime.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core


class CompatClientResponse(aiohttp.ClientResponse):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(*args, **kwargs)


def install() -> None:
    if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:
        aioresponses.core.ClientResponse = CompatClientResponse  # type: ignore[misc]
