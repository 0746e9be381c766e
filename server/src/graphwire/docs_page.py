"""``GET /docs/asyncapi``: the pre-rendered AsyncAPI page, for the address it was asked at.

``make docs`` (``clients/js/scripts/build-docs.mjs``) renders ``spec/asyncapi.yaml`` into
static HTML in which the local gateway's server address is the placeholder
:data:`SERVED_HOST`. Here it becomes the request's ``Host`` (when it is a plain host and
port; otherwise the spec's own address), so the page shows where this gateway answers.

The page is about 1 MB of very repetitive HTML and under 50 kB gzip-compressed. It is
compressed once per build of the page (a few ms, at its first request), not per request:
the text between placeholders is deflated ahead, each segment ending on a byte boundary
(``Z_SYNC_FLUSH``), and a response is those segments with the host spliced in between as
stored deflate blocks: one valid gzip member, whatever the host. ``HEAD`` answers the same
headers with no body; ``ETag`` / ``If-None-Match`` answer 304.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["SERVED_HOST", "DocsPage", "Request", "accepts_gzip", "respond"]

# Keep in step with SERVED_HOST in clients/js/scripts/build-docs.mjs.
SERVED_HOST = b"__GRAPHWIRE_SERVED_HOST__"
# A host name or IPv4 address, or a bracketed IPv6 address, with an optional port.
_HOST = re.compile(rb"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_SPEC_HOST = re.compile(rb'<meta name="graphwire-spec-host" content="([^"]*)">')
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
_HOSTS_KEPT = 16


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows ``gzip`` (RFC 9110: ``q=0`` refuses it)."""
    allowed: dict[str, bool] = {}
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        allowed[coding.strip()] = quality > 0
    return allowed.get("gzip", allowed.get("x-gzip", allowed.get("*", False)))


def _stored_block(data: bytes) -> bytes:
    """``data`` as a non-final stored deflate block (the stream is byte-aligned before it)."""
    return b"\x00" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


@dataclass
class _Rendered:
    plain: bytes
    gzipped: bytes
    etag: str


@dataclass
class DocsPage:
    """One build of the page: its segments around :data:`SERVED_HOST`, deflated ahead."""

    segments: list[bytes]
    deflated: list[bytes]
    spec_host: bytes
    digest: str
    _hosts: OrderedDict[bytes, _Rendered] = field(default_factory=OrderedDict)

    @classmethod
    def build(cls, html: bytes) -> DocsPage:
        segments = html.split(SERVED_HOST)
        deflated = []
        for i, segment in enumerate(segments):
            compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
            last = i == len(segments) - 1
            deflated.append(
                compressor.compress(segment) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
            )
        spec_host = _SPEC_HOST.search(html)
        return cls(
            segments=segments,
            deflated=deflated,
            spec_host=spec_host.group(1) if spec_host and spec_host.group(1) else b"127.0.0.1:8000",
            digest=hashlib.sha256(html).hexdigest()[:16],
        )

    def host_for(self, header: str | None) -> bytes:
        """The address to show: the ``Host`` header when it is a plain host[:port]."""
        raw = (header or "").strip().encode("latin-1", "replace")
        return raw if len(raw) <= 261 and _HOST.fullmatch(raw) else self.spec_host

    def render(self, host: bytes) -> _Rendered:
        """The page for ``host``, plain and gzip-compressed (the last few hosts are kept)."""
        rendered = self._hosts.get(host)
        if rendered is not None:
            self._hosts.move_to_end(host)
            return rendered
        plain = host.join(self.segments)
        stored = _stored_block(host)
        body = stored.join(self.deflated)
        trailer = struct.pack("<II", zlib.crc32(plain), len(plain) & 0xFFFFFFFF)
        etag = f'W/"{self.digest}-{hashlib.sha256(host).hexdigest()[:8]}"'
        rendered = _Rendered(plain, _GZIP_HEADER + body + trailer, etag)
        self._hosts[host] = rendered
        while len(self._hosts) > _HOSTS_KEPT:
            self._hosts.popitem(last=False)
        return rendered


_pages: dict[Path, tuple[tuple[int, int], DocsPage]] = {}


def _version(path: Path) -> tuple[int, int]:
    stat = path.stat()  # one cheap syscall per request
    return stat.st_mtime_ns, stat.st_size


def _load(path: Path) -> DocsPage:
    return DocsPage.build(path.read_bytes())


async def _page(path: Path) -> DocsPage:
    """The page built from ``path``, rebuilt when the file changes (``make docs``)."""
    version = _version(path)
    cached = _pages.get(path)
    if cached is not None and cached[0] == version:
        return cached[1]
    page = await asyncio.to_thread(_load, path)  # deflate, once per build of the page
    _pages[path] = (version, page)
    return page


async def respond(path: Path, request: Request) -> Response:
    """The page at ``path`` for ``request``: its Host, gzip when accepted, HEAD, 304."""
    page = await _page(path)
    rendered = page.render(page.host_for(request.headers.get("host")))
    headers = {"cache-control": "no-cache", "etag": rendered.etag, "vary": "Accept-Encoding"}
    if rendered.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    body = rendered.plain
    if accepts_gzip(request.headers.get("accept-encoding", "")):
        body = rendered.gzipped
        headers["content-encoding"] = "gzip"
    headers["content-length"] = str(len(body))
    content = b"" if request.method == "HEAD" else body
    return Response(content, media_type="text/html; charset=utf-8", headers=headers)
