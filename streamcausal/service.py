"""Serve the current live estimate over HTTP on this machine: JSON endpoints and a self-refreshing page of figures.

:class:`EstimateServer` runs the standard library's ``ThreadingHTTPServer`` in a daemon
thread. The follower hands it each new :class:`~streamcausal.live.LiveState` with
:meth:`EstimateServer.publish` (a reference swap: requests never see a half-updated
estimate), and it serves:

- ``/estimate.json``: effect, stderr, pvalue, qvalue (``[target, source]``, NaN as null),
  samples, significant edges at ``alpha``, rows consumed and complete, rows per second;
- ``/sources.json``: per source, its samples (stimulated samples when the stimulation is
  binary), the mean standard error of its edges and whether it reached ``target_se``;
- ``/``: a page that reloads itself every few seconds, with the influence heatmap
  (``/heatmap.png``), the convergence plot (``/convergence.png``) and the per-source
  standard errors (``/sources.png``), rendered with matplotlib's Agg backend and cached
  per published version.

It binds to 127.0.0.1 unless another address is given explicitly.
"""

from __future__ import annotations

import html
import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from ._validation import check_int, check_real, describe

__all__ = ["DEFAULT_HOST", "EstimateServer", "estimate_document", "parse_address", "sources_document"]

DEFAULT_HOST = "127.0.0.1"
_PNG_DPI = 80


def parse_address(text) -> tuple[str, int]:
    """``"PORT"``, ``"HOST:PORT"`` or ``"[IPv6]:PORT"`` as ``(host, port)``; a bare port binds to 127.0.0.1.

    >>> parse_address("8000"), parse_address("0.0.0.0:8080")
    (('127.0.0.1', 8000), ('0.0.0.0', 8080))
    """
    if not isinstance(text, str):
        raise TypeError(f"address must be a string PORT or HOST:PORT, got {describe(text)}")
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"address must be PORT or HOST:PORT with a port in [0, 65535], got {text!r}")
    return host, int(port)


# ----------------------------------------------------------------------------- documents


def _number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _matrix_json(values) -> str:
    """A float matrix as JSON text, NaN and inf as null (json writes them as NaN/Infinity, which is not JSON)."""
    text = json.dumps(np.asarray(values, dtype=np.float64).tolist())
    return text.replace("-Infinity", "null").replace("Infinity", "null").replace("NaN", "null")


def _common(state) -> dict:
    return {
        "rows_consumed": state.rows_consumed,
        "rows_complete": state.rows_complete,
        "rows_per_second": _number(state.rows_per_second),
        "samples": state.samples,
        "finished": state.finished,
        "stop_reason": state.stop_reason,
        "target_se": _number(state.target_se),
        "version": state.version,
        "updated": state.updated,
        "recording": state.description,
    }


def estimate_document(state) -> bytes:
    """``/estimate.json`` of a :class:`~streamcausal.live.LiveState` (valid JSON: no NaN)."""
    document = _common(state)
    document.update(alpha=state.alpha, mean_se=_number(state.mean_se),
                    orientation="[target, source]: entry [j, i] is the estimate for source i onto target j")
    if state.effect is None:
        document.update(n_targets=None, n_sources=None, significant_edges=[], n_significant=0)
        matrices = {name: "null" for name in ("effect", "stderr", "pvalue", "qvalue")}
    else:
        edges = np.argwhere(state.significant)
        document.update(
            n_targets=int(state.effect.shape[0]), n_sources=int(state.effect.shape[1]),
            n_significant=int(edges.shape[0]),
            significant_edges=[{"target": int(j), "source": int(i), "effect": _number(state.effect[j, i]),
                                "qvalue": _number(state.qvalue[j, i])} for j, i in edges],
        )
        matrices = {name: _matrix_json(getattr(state, name)) for name in ("effect", "stderr", "pvalue", "qvalue")}
    text = json.dumps(document, allow_nan=False)
    # The matrices are spliced in as already-encoded JSON (encoding n x n floats twice would double the cost).
    spliced = ", ".join(f'"{name}": {value}' for name, value in matrices.items())
    return (text[:-1] + ", " + spliced + "}").encode()


def sources_document(state) -> bytes:
    """``/sources.json``: per source, samples so far, mean standard error of its edges, reached target or not."""
    document = _common(state)
    sources = []
    if state.source_mean_se is not None:
        for i, mean_se in enumerate(state.source_mean_se):
            sources.append({
                "source": i,
                "samples": state.samples,
                "stimulated_samples": None if state.source_samples is None else int(state.source_samples[i]),
                "mean_se": _number(mean_se),
                "reached_target": None if state.reached_target is None else bool(state.reached_target[i]),
            })
    document["sources"] = sources
    document["last_to_reach"] = list(state.last_to_reach)
    document["remaining"] = (None if state.reached_target is None
                             else int(np.count_nonzero(~np.asarray(state.reached_target))))
    return json.dumps(document, allow_nan=False).encode()


# ----------------------------------------------------------------------------- figures


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_PNG_DPI)
    return buffer.getvalue()


def _heatmap_png(state) -> bytes | None:
    from .plots import plot_influence_matrix

    if state.effect is None:
        return None
    figure = plot_influence_matrix(state.effect, state.significant, exclude_diagonal=False,
                                   title=f"Effect after {state.samples:,} samples (q <= {state.alpha:g} outlined)")
    return _png(figure)


def _convergence_png(state) -> bytes | None:
    from .plots import plot_convergence

    points = [p for p in state.convergence if p.get("samples", 0) >= 1]
    if not points:
        return None
    return _png(plot_convergence({"live": points}, title=None))


def _sources_png(state) -> bytes | None:
    from .plots import plot_source_errors

    if state.source_mean_se is None:
        return None
    return _png(plot_source_errors(state.source_mean_se, target_se=state.target_se))


_FIGURES = {"/heatmap.png": _heatmap_png, "/convergence.png": _convergence_png, "/sources.png": _sources_png}


def _target_text(state) -> str:
    if state.target_se is None:
        return "none"
    if state.reached_target is None:
        return f"{state.target_se:g}"
    reached = int(np.count_nonzero(state.reached_target))
    return f"{state.target_se:g}: {reached} of {state.reached_target.size} sources reached it"


def _page(state, refresh_seconds) -> bytes:
    def row(name, value):
        return f"<tr><th>{html.escape(name)}</th><td id='{name.replace(' ', '_')}'>{html.escape(str(value))}</td></tr>"

    mean_se = state.mean_se if state is not None else None
    rows = "" if state is None else "".join([
        row("recording", state.description),
        row("rows consumed", f"{state.rows_consumed:,} of {state.rows_complete:,} complete"),
        row("rows per second", f"{state.rows_per_second:,.0f}"),
        row("samples", f"{state.samples:,}"),
        row("mean SE", "n/a" if mean_se is None else f"{mean_se:.3e}"),
        row("significant edges", "n/a" if state.significant is None
            else f"{int(np.count_nonzero(state.significant)):,} at q <= {state.alpha:g}"),
        row("target SE", _target_text(state)),
        row("status", "finished" if state.finished else (state.stop_reason or "following")),
    ])
    version = 0 if state is None else state.version
    figures = ""
    if state is not None and state.effect is not None:
        figures = "".join(f"<img alt='{name}' src='/{name}.png?v={version}'>"
                          for name in ("heatmap", "convergence", "sources"))
    refresh = "" if state is not None and (state.finished or state.stop_reason) else (
        f"<meta http-equiv='refresh' content='{refresh_seconds:g}'>")
    text = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8">{refresh}<title>streamcausal live estimate</title>
<style>body{{font-family:sans-serif;margin:1em}} th{{text-align:left;padding-right:1em}}
img{{max-width:48%;vertical-align:top;margin:0.3em}}</style></head>
<body data-version="{version}"><h1>streamcausal: live estimate</h1>
<table>{rows or "<tr><td>waiting for the first rows</td></tr>"}</table>
<p><a href="/estimate.json">estimate.json</a> &middot; <a href="/sources.json">sources.json</a></p>
<div>{figures}</div></body></html>
"""
    return text.encode()


# ----------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    server_version = "streamcausal"

    def do_GET(self):  # noqa: N802 (http.server's name)
        service = self.server.service
        path = urlsplit(self.path).path
        state = service.state
        try:
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", _page(state, service.refresh_seconds))
            elif path == "/estimate.json":
                self._send_state(state, "estimate", estimate_document, "application/json")
            elif path == "/sources.json":
                self._send_state(state, "sources", sources_document, "application/json")
            elif path in _FIGURES:
                self._send_state(state, path, _FIGURES[path], "image/png")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left

    def _send_state(self, state, key, render, content_type):
        if state is None:
            self._send(503, "text/plain; charset=utf-8", b"no estimate yet\n")
            return
        body = self.server.service.rendered(state, key, render)
        if body is None:
            self._send(503, "text/plain; charset=utf-8", b"no samples yet\n")
            return
        self._send(200, content_type, body)

    def _send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        pass  # library code prints nothing; requests are not logged


class EstimateServer:
    """A local HTTP server of the latest :class:`~streamcausal.live.LiveState`.

    Parameters
    ----------
    host : str
        Address to bind; 127.0.0.1 (this machine only) by default. Any other address
        exposes the estimate to the network and must be given explicitly.
    port : int
        Port to bind; 0 picks a free one (see :attr:`url`).
    refresh_seconds : float
        How often the page reloads itself.

    Use it as a context manager, or :meth:`start` and :meth:`close`; hand it states
    with :meth:`publish` (e.g. ``Follower(..., on_state=server.publish)``).
    """

    def __init__(self, host=DEFAULT_HOST, port=0, *, refresh_seconds=2.0):
        if not isinstance(host, str) or not host:
            raise TypeError(f"host must be a non-empty string, got {describe(host)}")
        self.host = host
        self.port = check_int(port, "port", minimum=0, maximum=65535)
        self.refresh_seconds = check_real(refresh_seconds, "refresh_seconds")
        if self.refresh_seconds <= 0:
            raise ValueError(f"refresh_seconds must be > 0, got {self.refresh_seconds}")
        self.state = None
        self._cache = {}
        self._cache_lock = threading.Lock()
        self._render_lock = threading.Lock()  # one matplotlib figure at a time
        self._server = None
        self._thread = None

    def publish(self, state) -> None:
        """Serve ``state`` from now on (a reference swap; rendered documents are cached per version)."""
        self.state = state

    def rendered(self, state, key, render):
        """``render(state)`` for ``key``, computed once per published version."""
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == state.version:
                return cached[1]
        lock = self._render_lock if key.endswith(".png") else threading.Lock()
        with lock:
            body = render(state)
        with self._cache_lock:
            self._cache[key] = (state.version, body)
        return body

    def start(self) -> EstimateServer:
        """Bind and serve in a daemon thread; raises OSError when the address cannot be bound."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self.port), _Handler)
        server.daemon_threads = True
        server.service = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="streamcausal-service", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving and release the port (waits for the serving thread)."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
