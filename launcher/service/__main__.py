"""`python -m launcher.service SOCKET [IDLE_SECONDS]`: serve launcher commands on SOCKET until
idle that long (the console script starts it; see launcher.service)."""

import sys
from pathlib import Path

from launcher.service.place import IDLE_S
from launcher.service.server import serve

sys.exit(serve(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else IDLE_S))
