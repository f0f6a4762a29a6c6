"""Clean process shutdown on SIGINT / SIGTERM for the node and the bag player (no rclpy import).

rclpy's own handlers shut the context down from inside the signal handler and then raise
KeyboardInterrupt wherever the main thread happens to be; under `ros2 launch` (SIGINT to the
process group, then launch's own SIGINT, later SIGTERM) that tore down the node while its
worker was still publishing ("publisher's context is invalid"), interrupted ``thread.join``
(``terminate called without an active exception``, exit -6) or ``destroy_subscription``.
Instead the executables call ``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``
and install :class:`ShutdownRequest`: a signal only sets an event, the main loop (which never
blocks for more than ``poll`` seconds) sees it and tears down in order while the context is
still valid; later signals are counted and otherwise ignored. Exit status 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownRequest:
    """SIGINT/SIGTERM -> ``requested()`` (from the main thread; see the module docstring).

        stop = ShutdownRequest().install()
        while not stop.requested():
            executor.spin_once(timeout_sec=0.1)
    """

    def __init__(self):
        self._event = threading.Event()
        self._ready = False
        self.signals: list[int] = []

    def install(self) -> "ShutdownRequest":
        for s in SIGNALS:
            signal.signal(s, self._on_signal)
        return self

    def mark_ready(self) -> None:
        """From now on a signal only sets the flag; before (start-up, e.g. loading a model) it ends
        the process at once with status 0 (SystemExit: no traceback, nothing is running yet)."""
        self._ready = True

    def _on_signal(self, signum, frame) -> None:
        self.signals.append(signum)
        self._event.set()
        if not self._ready:
            raise SystemExit(0)

    def request(self) -> None:
        """Ask for shutdown from code (as a signal would)."""
        self._event.set()

    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s, waking early on a request; returns requested()."""
        return self._event.wait(timeout)

    def describe(self) -> str:
        names = [signal.Signals(s).name for s in self.signals]
        return ", ".join(names) if names else "request"


def exit_now(status: int = 0) -> None:
    """End the process without interpreter finalization (flushes Python's and C's stdio first).

    Called once everything ROS is torn down: finalizing an interpreter that imported torch and
    rclpy took 1.7-2.4 s on the loaded 2-core machine (past a 2 s shutdown budget), and with a
    worker thread still inside a long C++ call (torch inference) it is what aborts with
    ``terminate called without an active exception``.
    """
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:  # a closed pipe must not change the exit status
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # rcutils' console output, C stdio buffers
    except Exception:
        pass
    os._exit(status)
