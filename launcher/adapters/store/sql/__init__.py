"""The coordinator written once in SQL, over a dialect per backend (``sqlite.py``, ``postgres.py``).

Nothing here imports a database driver: a backend's module hands its ``Dialect`` to
``SqlCoordinator`` and only that module imports sqlite3 or psycopg.
"""
