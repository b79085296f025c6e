"""The bench: txbroker against the naive design and the raw ceiling, history-independence
and memory measurements. ``manage.py bench`` is its front door (see that command)."""
