"""The launch service: a fork server that has launcher's modules loaded, so a `launcher`
command it serves starts without the interpreter's start and imports (about 0.3 s of every
launch, docs/performance.md).

Opt-in (``LAUNCHER_SERVICE=on``). The ``launcher`` console script (``client``) hands its
arguments, environment, working folder and its stdin/stdout/stderr descriptors to the service
of its user and its installed launcher; the service forks a child that becomes that command, as
``launcher`` would have run it, writing straight to the caller's terminal or pipes, and sends
back its exit status. Nothing here imports more than the standard library until the child runs
launcher's CLI, and the service never runs anything but launcher's own code.
"""
