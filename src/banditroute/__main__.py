"""``python -m banditroute``: the command line, as the ``banditroute`` script (how ``serve --workers N``
starts its learner and worker processes with the same interpreter)."""

from banditroute.cli.main import app

app(prog_name="banditroute")
