"""The live HTTP service: endpoints over real HTTP while a writer process appends, strict JSON, the page
(in headless Chromium when one is installed), addresses and shutdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import streamcausal as sc
from streamcausal.live import Follower, GrowingRecording, LiveState
from streamcausal.plots import plot_source_errors
from streamcausal.service import DEFAULT_HOST, EstimateServer, estimate_document, parse_address, sources_document

WRITER = """
import sys, time
import numpy as np
from streamcausal.live import GrowingRecording
store, data = sys.argv[1:3]
saved = np.load(data)
recording = GrowingRecording.open(store)
for t in range(0, saved["activity"].shape[0], 400):
    recording.append(saved["activity"][t:t + 400], saved["stimulation"][t:t + 400], saved["clamped"][t:t + 400])
    time.sleep(0.05)
recording.finish()
"""


def strict_json(body: bytes):
    """Parse as JSON proper: NaN, Infinity and -Infinity are refused."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(body, parse_constant=refuse)


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    A = sc.create_connectivity(8)
    simulated = sc.simulate(A, 16_000, design=sc.Perturbation(), seed=7)
    directory = tmp_path_factory.mktemp("service")
    data = directory / "trajectory.npz"
    np.savez(data, activity=simulated.activity.astype(np.float32), stimulation=simulated.stimulation.astype(np.uint8),
             clamped=simulated.clamped)
    (directory / "writer.py").write_text(WRITER)
    return directory


@pytest.mark.subprocess
def test_endpoints_over_http_while_a_writer_appends(saved, tmp_path):
    store = tmp_path / "rec.zarr"
    GrowingRecording.create(store, 8, chunk_rows=1000)
    with EstimateServer(refresh_seconds=1) as server:
        follower = Follower(store, tmp_path / "live.zarr", target_se=1e-9, on_state=server.publish)
        thread = threading.Thread(target=follower.follow, kwargs={"interval": 0.05}, daemon=True)
        thread.start()
        assert server.url.startswith("http://127.0.0.1:")
        writer = subprocess.Popen([sys.executable, str(saved / "writer.py"), str(store), str(saved / "trajectory.npz")])
        rows, effects, sources = [], [], None
        while writer.poll() is None or (rows and rows[-1] < 16_000):
            status, kind, body = get(server.url + "estimate.json")
            assert status == 200 and kind == "application/json"
            document = strict_json(body)
            if document["effect"] is not None:
                rows.append(document["rows_consumed"])
                effects.append(np.array(document["effect"], dtype=float))
                assert document["n_targets"] == document["n_sources"] == 8
                assert document["samples"] > 0 and document["rows_per_second"] is not None
                assert len(document["significant_edges"]) == document["n_significant"]
                assert np.array(document["qvalue"], dtype=float).shape == (8, 8)
                sources = strict_json(get(server.url + "sources.json")[2])
            time.sleep(0.1)
            assert len(rows) < 2_000
        writer.wait(timeout=30)
        thread.join(timeout=30)
        assert rows == sorted(rows) and len(set(rows)) >= 3, rows    # rows only increase, and did, several times
        assert not np.allclose(effects[0], effects[-1], equal_nan=True)  # the estimate changed as rows came
        assert len(sources["sources"]) == 8 and sources["sources"][0]["reached_target"] is False
        assert all(s["stimulated_samples"] > 0 and s["mean_se"] > 0 for s in sources["sources"])
        final = strict_json(get(server.url + "estimate.json")[2])
        assert final["rows_consumed"] == final["rows_complete"] == 16_000 and final["finished"]
        saved_arrays = np.load(saved / "trajectory.npz")
        expected = sc.estimate(saved_arrays["activity"], saved_arrays["stimulation"], steps=saved_arrays["clamped"])
        np.testing.assert_allclose(np.array(final["effect"], dtype=float), expected.effect, rtol=0, atol=1e-10)
        status, kind, page = get(server.url)
        assert status == 200 and kind.startswith("text/html")
        assert b"16,000 of 16,000 complete" in page and b"/heatmap.png?v=" in page
        for name in ("heatmap", "convergence", "sources"):
            status, kind, body = get(server.url + f"{name}.png")
            assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(server.url + "nothing")
        assert missing.value.code == 404
    with pytest.raises(urllib.error.URLError):
        get(server.url + "estimate.json", timeout=2)  # closed: the port is released


def _state(effect, stderr, **extra):
    from streamcausal.estimators import bh_qvalues, pvalues

    p = pvalues(effect, stderr)
    q = bh_qvalues(p)
    return LiveState(version=1, rows_consumed=10, rows_complete=12, rows_per_second=float("nan"), samples=5,
                     finished=False, stop_reason=None, target_se=0.1, alpha=0.05, effect=effect, stderr=stderr,
                     pvalue=p, qvalue=q, significant=q <= 0.05, source_mean_se=np.nanmean(stderr, axis=0),
                     reached_target=np.array([True, False]), **extra)


def test_json_has_null_for_nan_and_inf():
    effect = np.array([[0.5, np.nan], [np.inf, -np.inf]])
    stderr = np.array([[0.1, np.nan], [0.2, 0.2]])
    document = strict_json(estimate_document(_state(effect, stderr)))
    assert document["effect"] == [[0.5, None], [None, None]]
    assert document["stderr"][0][1] is None and document["rows_per_second"] is None
    sources = strict_json(sources_document(_state(effect, stderr)))
    assert [s["reached_target"] for s in sources["sources"]] == [True, False] and sources["remaining"] == 1
    empty = LiveState(version=0, rows_consumed=0, rows_complete=0, rows_per_second=0.0, samples=0, finished=False,
                      stop_reason=None, target_se=None, alpha=0.05)
    assert strict_json(estimate_document(empty))["effect"] is None
    assert strict_json(sources_document(empty))["sources"] == []


def test_server_before_any_estimate_and_addresses():
    with EstimateServer() as server:
        assert server.host == DEFAULT_HOST == "127.0.0.1"
        status, _, page = get(server.url)
        assert status == 200 and b"waiting for the first rows" in page
        with pytest.raises(urllib.error.HTTPError) as waiting:
            get(server.url + "estimate.json")
        assert waiting.value.code == 503
        port = server.port
        with pytest.raises(OSError):
            EstimateServer(port=port).start()  # taken
    with EstimateServer(port=port) as again:  # released after close: the port binds again
        assert again.port == port
    assert parse_address("8000") == ("127.0.0.1", 8000)
    assert parse_address("0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    for bad in ("host", "1:2:x", "70000", ""):
        with pytest.raises(ValueError, match="address must be"):
            parse_address(bad)
    with pytest.raises(TypeError):
        parse_address(8000)
    with pytest.raises(ValueError, match="port must be <= 65535"):
        EstimateServer(port=70000)
    with pytest.raises(ValueError, match="refresh_seconds must be > 0"):
        EstimateServer(refresh_seconds=0)


def test_plot_source_errors():
    figure = plot_source_errors(np.array([0.1, 0.3, np.nan]), target_se=0.2)
    ax = figure.axes[0]
    assert len(ax.patches) == 2 and "1 above" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="mean_se must be a non-empty 1-D"):
        plot_source_errors(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="target_se must be > 0"):
        plot_source_errors([0.1], target_se=0)


CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.mark.subprocess
@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium installed (chromium, chromium-browser)")
def test_page_renders_and_updates_in_headless_chromium(saved, tmp_path):
    arrays = np.load(saved / "trajectory.npz")
    store = tmp_path / "rec.zarr"
    recording = GrowingRecording.create(store, 8, chunk_rows=1000)

    def append(start, stop):
        recording.append(arrays["activity"][start:stop], arrays["stimulation"][start:stop], arrays["clamped"][start:stop])
        follower.poll()

    profiles = iter(range(100))

    def browse(*options):
        # Each call gets its own profile (a profile left locked by another Chromium gives an empty page);
        # a start that still prints nothing, as happens on a loaded machine, is tried again.
        for _attempt in range(3):
            done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                   f"--user-data-dir={tmp_path / f'profile-{next(profiles)}'}", *options, server.url],
                                  capture_output=True, text=True, timeout=60)
            if done.stdout.strip() or "--dump-dom" not in options:
                return done
        return done

    with EstimateServer(refresh_seconds=0.5) as server:
        follower = Follower(store, on_state=server.publish)
        append(0, 4_000)
        first = browse("--dump-dom").stdout  # no virtual-time budget: it would follow the reloads on and on
        append(4_000, 16_000)
        recording.finish()
        follower.poll()
        last = browse("--dump-dom", "--virtual-time-budget=1000").stdout
        screenshot = tmp_path / "page.png"
        browse(f"--screenshot={screenshot}", "--window-size=1400,1000", "--virtual-time-budget=2000")
    assert "streamcausal: live estimate" in first and "4,000 of 4,000 complete" in first
    assert 'http-equiv="refresh"' in first  # it reloads itself while following
    assert "16,000 of 16,000 complete" in last and 'http-equiv="refresh"' not in last  # finished: no more reloads
    version = lambda text: int(text.split('data-version="')[1].split('"')[0])  # noqa: E731
    assert version(last) > version(first)
    for name in ("heatmap", "convergence", "sources"):
        assert f'src="/{name}.png?v={version(last)}"' in last
    assert screenshot.exists() and screenshot.stat().st_size > 20_000  # the figures were drawn
