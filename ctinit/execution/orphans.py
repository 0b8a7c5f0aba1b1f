"""Worker processes that stop when the process that started them dies. No torch."""
from __future__ import annotations

import os
import signal


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """Linux: this process gets SIGNUM when PARENT, the process that started it, dies (killed, say), instead of
    computing on as an orphan; if PARENT is already gone, this process ends now. Elsewhere a no-op (there the
    starter's own shutdown has to stop its workers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        return
    if os.getppid() != parent:
        os._exit(1)


__all__ = ["die_with_parent"]
