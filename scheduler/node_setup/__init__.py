"""What each node's process sets up on its host before it works; a library the
scheduler, the worker and the control node share.

:mod:`.config_file` reads the TOML configuration files and ``DFARM_*`` variables
of ``dfarm scheduler`` and ``dfarm worker`` (and shows them, ``dfarm config``),
:mod:`.logs` sets up a daemon's logging, :mod:`.private_dir` makes folders only
their owner may enter. It imports nothing of the scheduler.
"""
