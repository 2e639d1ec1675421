"""The web dashboard: pages and a JSON API served by the scheduler process itself,
in its own event loop, on ``--web-port`` (off by default; loopback unless
``--web-host`` says otherwise). See docs/web.md.

- :mod:`.session`: login with a user's token, sessions, CSRF
- :mod:`.views`: the data of the pages and the API, read through the scheduler's handlers
- :mod:`.api`: ``/api/...``, JSON with the field names of the commands' ``--json``
- :mod:`.pages`: the HTML pages (templates in ``templates/``, CSS and JS in ``static/``)
- :mod:`.jobpages`: a job's page, its output and downloads; a sweep's results and plot
- :mod:`.submit`: the submit form, through the path of ``dsub``
- :mod:`.metrics`: each worker's last hour, for its charts
- :mod:`.passwords`: web passwords, set with ``dfarm user password``
- :mod:`.keys`: what the application holds (the scheduler, metrics, sessions)
- :mod:`.app`: the application and its start and stop (:func:`.app.start_web`)
"""
