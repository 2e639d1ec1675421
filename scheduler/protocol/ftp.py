"""Reading a file from the spool's FTP server in large blocks.

``ftplib``'s ``retrbinary`` hands over whatever one ``recv`` returns (often a
few dozen KiB), so a large file costs tens of thousands of Python calls and
writes. :func:`retrieve` fills a 4 MiB buffer before passing it on.
"""

from __future__ import annotations

import ftplib
from collections.abc import Callable

__all__ = ["retrieve"]

BUFFER = 4 << 20


def retrieve(ftp: ftplib.FTP, remote: str, sink: Callable[[memoryview], object]) -> None:
    """Download ``remote``, passing its bytes to ``sink`` in blocks of up to 4 MiB."""
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    ftp.voidcmd("TYPE I")  # binary: ASCII mode would rewrite line endings
    with ftp.transfercmd(f"RETR {remote}") as conn:
        while True:
            filled = 0
            while filled < BUFFER:
                got = conn.recv_into(view[filled:])
                if not got:
                    break
                filled += got
            if filled:
                sink(view[:filled])
            if filled < BUFFER:
                break
    ftp.voidresp()
