"""``spin``: run notebooks headless (CI, cron, the image's oneshot mode).

``main.py`` parses the command line, ``notebook.py`` turns ``.ipynb`` cells
into protocol cells and runtime events into nbformat outputs, ``client.py``
speaks the WebSocket protocol, ``runner.py`` starts the embedded runtime and
follows a notebook's run, ``report.py`` prints what happened.
"""
