"""The Visdom side of the dashboard (--display): a client that times out, and what it draws.

Imported only when a display is asked for, so a run without one never loads visdom.
"""
import functools
import logging
import math
import os

import numpy as np
import requests
import torch
import visdom

from ..scoring.metrics import roc_auc, roc_curve

TIMEOUT_S = (3.0, 30.0)  # connect, read, of every request (the login too): a stalled server costs one wait
IMAGES_SHOWN = 8  # per grid row; the image files on disk keep whole batches
GRID_WIDTH = 480  # pixels an image window aims for
HISTOGRAM_BINS = 30
# Window ids are display_id + these offsets; image windows follow, one per title in call order.
FIXED_WINDOWS = {"losses": 0, "metrics": 1, "histogram": 2, "roc": 3}

LOGIN = "VISDOM_USERNAME and VISDOM_PASSWORD"
NO_SERVER_FIX = "start one with `make dashboard`"


class ServerUnavailable(Exception):
    """The dashboard cannot be used (no Visdom server answers, or its login failed): what, and the fix."""

    def __init__(self, problem: str, fix: str = NO_SERVER_FIX):
        super().__init__(problem)
        self.fix = fix


class LoginRefused(Exception):
    """The server answered the login with an error status."""


class _Client(visdom.Visdom):
    """visdom.Visdom whose requests time out, and that raises instead of printing on errors."""

    @property
    def session(self):
        """visdom's session, with a login that times out as every other request (visdom's waits forever)."""
        if self._session is None:
            session = requests.Session()
            if self.proxies:
                session.proxies.update(self.proxies)
            if self.username:
                reply = session.post(f"{self.server}:{self.port}{self.base_url}", timeout=TIMEOUT_S,
                                     json={"username": self.username, "password": self.password})
                if reply.status_code != requests.codes.ok:
                    session.close()
                    raise LoginRefused(f"HTTP {reply.status_code}")
            self._session = session
        return self._session

    def _handle_post(self, url, data=None):
        response = self.session.post(url, data=data or {}, timeout=TIMEOUT_S)
        response.raise_for_status()
        return response.text

    def win_exists(self, win, env=None):
        return self._win_exists_wrap(win, env) == "true"


def _off_when_server_lost(method):
    """Run a drawing method; if it fails, warn once and draw nothing more this run."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if self.client is None:
            return
        try:
            method(self, *args, **kwargs)
        except Exception as err:  # whatever goes wrong, training must go on
            self.client = None
            self.log(f"warning: {_failure(err, self.address)}; training goes on without the dashboard")
    return guarded


def _failure(err: Exception, address: str) -> str:
    """What went wrong, in a few words (visdom wraps requests' errors in a ConnectionError)."""
    cause = err.__cause__ or err.__context__ or err
    if isinstance(cause, requests.Timeout):
        why = f"no reply within {TIMEOUT_S[1]:g} s"
    elif isinstance(cause, requests.HTTPError):
        why = f"HTTP {cause.response.status_code}"
    elif isinstance(cause, (requests.ConnectionError, ConnectionError)):
        why = "connection failed"
    else:
        return f"the dashboard failed ({type(err).__name__}: {err})"[:300]
    return f"Visdom server {address} stopped answering ({why})"


class VisdomVisualizer:
    """Draws a run into its own Visdom environment; windows are updated in place."""

    def __init__(self, server: str, port: int, env: str, first_id: int = 1, log=print):
        self.address, self.env, self.log = f"{server}:{port}", env, log
        self.first_id = max(first_id, 1)  # the original's default 0 meant "no display"
        self.windows = {name: str(self.first_id + k) for name, k in FIXED_WINDOWS.items()}
        self.traces = {}  # window id -> names of its line traces, in plotting order
        # visdom logs a warning for the socket we do not open and for every new HTTP session.
        logging.getLogger("visdom").setLevel(logging.ERROR)
        # A shared dashboard (SHARE=1 make dashboard) asks for the login it was started with.
        username, password = os.environ.get("VISDOM_USERNAME"), os.environ.get("VISDOM_PASSWORD")
        if username and not password:
            raise ServerUnavailable("VISDOM_USERNAME is set but VISDOM_PASSWORD is not",
                                    f"export both, the login the dashboard was started with, or unset {LOGIN}")
        try:
            self.client = _Client(server=server, port=port, env=env, raise_exceptions=True,
                                  use_incoming_socket=False, username=username, password=password)
            self.client.get_env_list()  # a reply that is not Visdom's JSON fails here
        except LoginRefused as err:
            raise ServerUnavailable(f"the Visdom server at {self.address} refused the login in {LOGIN} ({err})",
                                    "export the user name and password the dashboard was started with, or unset "
                                    "both for a dashboard without a login") from None
        except (ConnectionError, requests.RequestException, ValueError) as err:
            raise ServerUnavailable(f"no Visdom server answers at {self.address}") from err

    def window(self, name: str) -> str:
        """The id of a named window; image titles get the next free ids in call order."""
        if name not in self.windows:
            self.windows[name] = str(self.first_id + len(self.windows))
        return self.windows[name]

    @_off_when_server_lost
    def losses(self, epoch: float, losses: dict) -> None:
        self._append("losses", epoch, losses, title="training losses", ylabel="loss (mean since epoch start)")

    @_off_when_server_lost
    def metrics(self, epoch: int, metrics: dict) -> None:
        self._append("metrics", epoch, metrics, title="evaluation metrics", ylabel="value", markers=True)

    @_off_when_server_lost
    def images(self, title: str, real: torch.Tensor, fake: torch.Tensor) -> None:
        real, fake = (t.detach()[:IMAGES_SHOWN].float().cpu() for t in (real, fake))
        error = (real - fake).abs().mean(1, keepdim=True)
        top = max(float(error.max()), 1e-8)
        error = (error / top).expand_as(real)
        rows = torch.cat([(real + 1) / 2, (fake + 1) / 2, error]).clamp(0, 1)
        width, height = len(real) * (real.shape[3] + 2) + 2, 3 * (real.shape[2] + 2) + 2  # visdom's grid
        zoom = min(max(GRID_WIDTH / width, 1.0), 4.0)  # small images drawn larger, never smaller
        self.client.images(rows.numpy(), nrow=len(real), win=self.window(f"images: {title}"),
                           opts={"title": f"{title}: x, G(x), |x - G(x)|", "width": round(width * zoom),
                                 "height": round(height * zoom),
                                 "caption": f"rows: input, reconstruction, error (mean over channels, "
                                            f"white = {top:.3g})"})

    @_off_when_server_lost
    def evaluation(self, epoch: int, scores, labels) -> None:
        scores, labels = _numpy(scores).astype(np.float64), _numpy(labels).astype(int)
        finite = np.isfinite(scores)
        scores, labels = scores[finite], labels[finite]
        edges = np.histogram_bin_edges(scores, bins=HISTOGRAM_BINS)
        shares = [np.histogram(scores[labels == value], bins=edges)[0] / max((labels == value).sum(), 1)
                  for value in (0, 1)]
        self.client.bar(np.stack(shares, 1), Y=(edges[:-1] + edges[1:]) / 2, win=self.windows["histogram"],
                        opts={"title": f"anomaly scores on the test set (epoch {epoch})",
                              "legend": ["normal", "abnormal"], "xlabel": "anomaly score",
                              "ylabel": "share of the class"})
        if len(np.unique(labels)) < 2:
            return  # no ROC curve with one class
        fpr, tpr, _ = roc_curve(labels, scores)
        self.client.line(np.column_stack([tpr, fpr]), np.column_stack([fpr, fpr]), win=self.windows["roc"],
                         opts={"title": f"ROC on the test set (epoch {epoch}, AUROC {roc_auc(labels, scores):.4f})",
                               "legend": ["ROC", "chance"], "xlabel": "false positive rate",
                               "ylabel": "true positive rate", "dash": np.array(["solid", "dash"])})

    def close(self) -> None:
        """Save the environment on the server (it then survives a server restart)."""
        self._save()
        if self.client is not None:
            self.client.session.close()
            self.client = None

    @_off_when_server_lost
    def _save(self) -> None:
        self.client.save([self.env])

    def _append(self, name, x, values, title, ylabel, markers=False):
        """Add one point per named value to a line plot; the run's first call replaces the window."""
        values = {k: float(v) for k, v in values.items() if math.isfinite(float(v))}
        if not values:
            return
        win, names = self.windows[name], list(values)
        ys = np.array([list(values.values())])
        xs = np.full_like(ys, float(x))
        if win not in self.traces:
            self.client.line(ys, xs, win=win, opts={"title": title, "legend": names, "xlabel": "epoch",
                                                    "ylabel": ylabel, "markers": markers, "markersize": 6})
            self.traces[win] = names
        elif names == self.traces[win]:
            self.client.line(ys, xs, win=win, update="append")  # traces are matched by position
        else:
            for trace, y in values.items():  # matched by name; a new name starts a new trace
                self.client.line(np.array([y]), np.array([float(x)]), win=win, name=trace, update="append")
                if trace not in self.traces[win]:
                    self.traces[win].append(trace)


def _numpy(array) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
