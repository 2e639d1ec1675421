"""Matchmaking: which workers a job may run on, as a library.

Not the scheduler daemon: ``dsub --dry-run`` on the control node imports it as the
scheduler does, so both judge a job alike. :mod:`.classad` is HTCondor's ClassAd
expression language (values in :mod:`.classad_values`, builtins in
:mod:`.classad_functions`), :mod:`.requirements` a job's ``requirements`` and
``rank`` in it, :mod:`.job_ad` the job's attributes they see, :mod:`.capacity`
what an empty worker could ever run and why none can, :mod:`.attributes` what a
connected worker offers and the attributes ``requirements`` see there,
:mod:`.macros` the ``$$(NAME)`` values of the worker a job is matched to. It
depends on :mod:`scheduler.protocol` alone.
"""
