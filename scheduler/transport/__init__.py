"""How bytes travel between the nodes, beneath the messages; a library the
scheduler, the worker and the control node share.

:mod:`.tls` wraps both the socket protocol and FTP (peers pin the scheduler's
certificate), :mod:`.ftp` is the client side of the spool's FTP server, and
:mod:`.hashing` takes the SHA-256 of staged files while they move. None of it is
the wire itself (frames and messages, :mod:`scheduler.protocol`): TLS carries
those frames unchanged, and FTP and hashes concern files, which no frame holds.
It depends on :mod:`scheduler.protocol` alone (its records and errors).
"""
