"""``python -m virtkit``: the CLI (the tuning daemon re-runs itself this way in the background)."""

from virtkit.cli.main import main

main()
