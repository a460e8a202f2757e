"""Stop signals: what Ctrl-C, SIGTERM and SIGHUP do while minivae trains or saves.

Two tools, one for each place a stop must not lose work:

* :class:`StopRequests`, used by ``fit``: a stop signal asks training to end
  after the step in flight, instead of interrupting it.
* :func:`signals_held`, used around every save: the signals that arrive
  while a file is written are held back and delivered, in order, once it is
  complete, so a stop during a save still stops, but never leaves the save
  half done (a second Ctrl-C while a stopped run saves its checkpoint used
  to lose the run).

Handlers can only be installed in the main thread; elsewhere both do nothing.
"""

import contextlib
import signal
import threading

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopRequests:
    """While active, the stop signals set ``signal`` (the first one's name) instead of interrupting.

    A second SIGINT raises ``KeyboardInterrupt``, as a user pressing Ctrl-C
    twice expects, but never inside a ``deferred()`` block: there it waits
    for the block's end. A signal the process ignores stays ignored (``nohup``
    ignores SIGHUP so that a run outlives its terminal). Handlers can only be
    installed in the main thread; elsewhere this does nothing.
    """

    def __init__(self):
        self.signal = None
        self._previous = {}
        self._deferring = self._pending = False

    def _handle(self, signum, frame):
        if self.signal == "SIGINT" and signum == signal.SIGINT:
            if not self._deferring:
                raise KeyboardInterrupt
            self._pending = True
        self.signal = self.signal or signal.Signals(signum).name

    @contextlib.contextmanager
    def deferred(self):
        """A block that a second Ctrl-C does not interrupt; it raises ``KeyboardInterrupt`` at the block's end."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def __enter__(self):
        self._previous = _install(self._handle)
        return self

    def __exit__(self, *exc):
        _restore(self._previous)
        return False


@contextlib.contextmanager
def signals_held():
    """A block that no stop signal interrupts: those that arrive are delivered at its end.

    Each signal is re-raised with the handler that was in place before the
    block, so after it Ctrl-C raises ``KeyboardInterrupt`` and SIGTERM ends
    the process as usual. A signal the process ignores stays ignored.
    """
    arrived = []
    previous = _install(lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        _restore(previous)
        for signum in dict.fromkeys(arrived):  # each signal once, in the order they came
            signal.raise_signal(signum)


def _install(handler):
    """Make ``handler`` handle each stop signal the process does not ignore; returns the handlers it replaced.

    Only the main thread can install handlers: elsewhere nothing is installed and nothing returned.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            handler_before = signal.getsignal(sig)
            if handler_before is not signal.SIG_IGN:
                previous[sig] = handler_before
                signal.signal(sig, handler)
    return previous


def _restore(previous):
    """Put back the handlers :func:`_install` replaced."""
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)
