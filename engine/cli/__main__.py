"""``python -m engine.cli``: the ``durable`` command."""

from . import main

main()
