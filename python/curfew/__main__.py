"""``python -m curfew ...`` runs the curfew binary installed with this
package (like ``curfew ...``, for when the venv's bin is not on PATH)."""

from __future__ import annotations

import os
import sys

from . import find_binary

if __name__ == "__main__":
    binary = find_binary()
    os.execv(binary, [binary, *sys.argv[1:]])
