"""`launcher web`: a read-only page over a root or a shared coordinator (the `web` extra).

Nothing here imports Starlette at import time except :mod:`launcher.web.app`, so the CLI can
say which extra is missing instead of failing with an ImportError.
"""
