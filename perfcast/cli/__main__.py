"""``python -m perfcast.cli``: the same app as the ``perfcast`` console script."""

from perfcast.cli.main import app

app()
