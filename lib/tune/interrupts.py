"""Ctrl-C (SIGINT), SIGTERM or SIGHUP during a train_tune.py search: a clean stop in every phase.

The first signal is only recorded, whatever the search is doing. While Ray starts, the search
then stops before Tune writes anything. Once Tune runs, `Forward` (a Tune callback) hands the
signal to Tune at its next step, and Tune stops as after its own Ctrl-C: the trials keep their
last checkpoint and the search's state is saved, so `--restore` continues it; train_tune.py then
writes results.csv with the trials that finished. A second signal stops at once (`StopNow`);
`--restore` then continues from the state Tune saved last.

Tune's own SIGINT handler is turned off (TUNE_DISABLE_SIGINT_HANDLER): it holds SIGINT only
while Tune runs, so a signal in another phase was lost or raised mid-way, and its messages name
Tune's Python API rather than `--restore`. Ray imports here: only once a search starts.
"""
import contextlib
import logging
import os
import signal

from ray import tune

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed
NO_TUNE_HANDLER = "TUNE_DISABLE_SIGINT_HANDLER"
# The stop of this process. Forward is saved with the search (tuner.pkl) and, restored, finds it here.
_active = None


class StopNow(KeyboardInterrupt):
    """A second signal: stop without waiting for Tune."""

    def __init__(self, signal_number: int):
        super().__init__(signal_number)
        self.signal = signal_number


class SearchStop:
    """Records the first SIGINT, SIGTERM or SIGHUP (`.signal`); the second raises StopNow."""

    def __init__(self):
        self.signal = None
        self.forwarded = False
        self._previous, self._env, self._level = {}, None, None

    def __enter__(self):
        global _active
        self._env = os.environ.get(NO_TUNE_HANDLER)
        os.environ[NO_TUNE_HANDLER] = "1"
        self._level = logging.getLogger("ray").level
        self.hold()
        _active = self
        return self

    def hold(self) -> None:
        """Handle the signals here."""
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)

    @contextlib.contextmanager
    def through_ray_init(self):
        """Keep the signals here while ray.init runs. It installs a SIGTERM handler of its own first thing
        (sys.exit), which made a SIGTERM while Ray started a bare exit; installing ours again after it
        returns is not enough. Ray installs it through this one function, which does nothing meanwhile."""
        from ray._private import utils
        install = getattr(utils, "set_sigterm_handler", None)
        if install is not None:
            utils.set_sigterm_handler = lambda handler: None
        try:
            yield
        finally:
            if install is not None:
                utils.set_sigterm_handler = install
            self.hold()  # in case another Ray installs its own by other means

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise StopNow(signum)
        self.signal = signum
        # Ray's messages about stopping name its Python API: train_tune.py says in one line what to do.
        logging.getLogger("ray").setLevel(logging.CRITICAL)

    @property
    def name(self) -> str:
        return "Ctrl-C" if self.signal == signal.SIGINT else signal.Signals(self.signal).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signal

    def __exit__(self, *exc):
        global _active
        _active = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._env is None:
            os.environ.pop(NO_TUNE_HANDLER, None)
        else:
            os.environ[NO_TUNE_HANDLER] = self._env
        logging.getLogger("ray").setLevel(self._level)


class Forward(tune.Callback):
    """Hands a recorded signal to Tune at its next step: Tune ends the run there, saving its state."""

    def on_step_begin(self, iteration, trials, **info):
        stop = _active
        if stop is None or stop.signal is None or stop.forwarded:
            return
        stop.forwarded = True
        handler = signal.getsignal(signal.SIGUSR1)  # Tune's while it runs: its "stop the experiment"
        if callable(handler):
            handler(signal.SIGUSR1, None)


def forward_in(tuner, *others) -> None:
    """Give a restored search a fresh Forward and `others` (Tuner.restore takes no callbacks; the ones the
    search was saved with carry the state of the run that saved them)."""
    local = getattr(tuner, "_local_tuner", None)  # None with Ray Client: Tune's own handling then
    if local is None:
        return
    config = local.get_run_config()
    fresh = [Forward(), *others]
    kinds = tuple(type(callback) for callback in fresh)
    config.callbacks = [c for c in config.callbacks or () if not isinstance(c, kinds)] + fresh
