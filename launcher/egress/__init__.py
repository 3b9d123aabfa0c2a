"""The egress proxy that runs beside every run's network (standard library only, see server.py)."""
