"""Talking to the spool's FTP server with a grant.

:func:`session` logs in with a grant's credentials. ``ftplib``'s ``retrbinary``
hands over whatever one ``recv`` returns (often a few dozen KiB), so a large
file costs tens of thousands of Python calls and writes; :func:`retrieve`
fills a 4 MiB buffer before passing it on.
"""

from __future__ import annotations

import contextlib
import ftplib
import ssl
from collections.abc import Callable, Iterator

from scheduler.protocol.records import FtpGrant
from scheduler.transport.tls import check_pin, client_context

__all__ = ["ARRIVAL_POLL", "ARRIVAL_STALL", "ARRIVING", "FTP_ERRORS", "ftp_session", "retrieve"]

BUFFER = 4 << 20
#: Beside an input of the spool, a file of this suffix says that the input is
#: still being uploaded (see ``scheduler.arrivals``).
ARRIVING = ".arriving"
#: Seconds a reader waits for more of an arriving input before it gives up (the
#: FTP server ends an upload idle for 300 s, which removes the marker).
ARRIVAL_STALL = 600.0
#: Seconds a reader of an arriving input waits before it looks again.
ARRIVAL_POLL = 0.02
#: What a failed FTP exchange raises.
FTP_ERRORS = (OSError, EOFError, ftplib.Error)


@contextlib.contextmanager
def ftp_session(grant: FtpGrant, timeout: float = 60) -> Iterator[ftplib.FTP]:
    """A session logged in with ``grant`` (over TLS, its certificate checked, when
    the grant names one); raises one of :data:`FTP_ERRORS`."""
    pinned = grant.tls_fingerprint
    ftp = ftplib.FTP_TLS(context=client_context()) if pinned else ftplib.FTP()
    try:
        ftp.connect(grant.host, grant.port, timeout=timeout)
        if pinned:
            assert isinstance(ftp, ftplib.FTP_TLS)
            ftp.auth()
            assert isinstance(ftp.sock, ssl.SSLSocket)  # auth() wrapped it
            check_pin(ftp.sock, pinned)  # before the password leaves
        ftp.login(grant.user, grant.password)
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        yield ftp
    finally:
        if ftp.sock is not None:  # quit() on a connection that never opened would crash
            with contextlib.suppress(*FTP_ERRORS):
                ftp.quit()
        ftp.close()


def retrieve(
    ftp: ftplib.FTP, remote: str, sink: Callable[[memoryview], object], offset: int = 0
) -> int:
    """Download ``remote`` from byte ``offset`` on, passing its bytes to ``sink`` in
    blocks of up to 4 MiB; returns how many bytes came."""
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    total = 0
    ftp.voidcmd("TYPE I")  # binary: ASCII mode would rewrite line endings
    with ftp.transfercmd(f"RETR {remote}", rest=offset or None) as conn:
        while True:
            filled = 0
            while filled < BUFFER:
                got = conn.recv_into(view[filled:])
                if not got:
                    break
                filled += got
            if filled:
                sink(view[:filled])
                total += filled
            if filled < BUFFER:
                break
    ftp.voidresp()
    return total
