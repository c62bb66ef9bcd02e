"""Command line interface (``banditroute``; the typer app is :data:`banditroute.cli.main.app`)."""
