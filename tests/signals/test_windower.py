"""Aligned EEG + FaceFeatures windows on the LSL clock."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from bci_affect.core import Chunk, ConfigError, StreamInfo
from bci_affect.processors import Window, WindowConfig, Windower

SFREQ = 250.0
FACE_NAMES = ("face_present", "quality", "smile")


def _face(times: np.ndarray, present: np.ndarray) -> Chunk:
    data = np.stack([present.astype(float), np.full(times.shape, 0.9), np.sin(times)])
    info = StreamInfo("FaceFeatures", "FaceFeatures", 0.0, FACE_NAMES)
    return Chunk(data, times, info)


def _run(windower: Windower, chunks: list[Chunk]) -> list[Window]:
    out: list[Window] = []
    for c in chunks:
        out += windower(c)
    return out + windower.flush()


def _same(a: list[Window], b: list[Window]) -> None:
    assert [w.t_end for w in a] == [w.t_end for w in b]
    for x, y in zip(a, b, strict=True):
        assert x.first_index == y.first_index
        np.testing.assert_array_equal(x.eeg, y.eeg)
        assert x.eeg_gaps == y.eeg_gaps
        if x.face is not None or y.face is not None:
            np.testing.assert_array_equal(x.face, y.face)
            assert x.face_coverage == y.face_coverage


@pytest.mark.parametrize("pieces", [1, 3, 17, "0.1s"])
def test_windows_do_not_depend_on_chunking(sig, rng, pieces):
    eeg = sig.make_eeg(rng, seconds=12)
    whole = _run(Windower(), [eeg])
    chunks = sig.split_every(eeg, 0.1) if pieces == "0.1s" else sig.split(eeg, pieces)
    _same(whole, _run(Windower(), chunks))
    t0 = eeg.times[0]
    ends = np.array([w.t_end for w in whole]) - t0
    np.testing.assert_allclose(ends, 4.0 + 0.5 * np.arange(len(whole)), atol=1e-9)
    assert len(whole) == 16  # 4 s ... 11.5 s: the last sample is at 11.996 s
    for w in whole:
        assert w.complete and w.eeg.shape == (8, 1000) and w.eeg_coverage == 1.0
        first = int(round((w.t_end - t0) * SFREQ)) - 999
        assert w.first_index == first
        np.testing.assert_array_equal(w.eeg, eeg.data[:, first : first + 1000])
        assert not w.eeg.flags.writeable


def test_jitter_and_repeated_timestamps_are_tolerated(sig, rng):
    eeg = sig.make_eeg(rng, seconds=12)
    jitter = eeg.times + rng.uniform(-0.4, 0.4, eeg.n_times) / SFREQ
    bursts = eeg.times.copy()
    bursts[1::2] = bursts[0::2][: bursts[1::2].size]  # pairs share a stamp, like OpenBCI files
    for times in (jitter, bursts):
        stamped = replace(eeg, times=times)
        whole = _run(Windower(), [stamped])
        assert len(whole) in (16, 17) and all(w.complete for w in whole)
        _same(whole, _run(Windower(), sig.split(stamped, 17)))
        _same(whole, _run(Windower(), sig.split_every(stamped, 0.1)))


def test_a_gap_is_marked_and_never_filled(sig, rng):
    eeg = sig.make_eeg(rng, seconds=14)
    keep = np.ones(eeg.n_times, bool)
    keep[2000:2125] = False  # 0.5 s lost from 8.0 s
    lossy = replace(eeg, data=eeg.data[:, keep], times=eeg.times[keep])
    windows = _run(Windower(), sig.split_every(lossy, 0.1))
    t0 = eeg.times[0]
    for w in windows:
        start, end = w.t_start - t0, w.t_end - t0
        if end <= 8.0 or start >= 8.5:
            assert w.complete and not np.isnan(w.eeg).any()
            continue
        assert not w.complete and w.first_index == -1
        assert len(w.eeg_gaps) == 1
        g0, g1 = (g - t0 for g in w.eeg_gaps[0])
        assert g0 == pytest.approx(max(start, 7.996), abs=0.003)
        assert g1 == pytest.approx(min(end, 8.5), abs=0.003)
        missing = np.isnan(w.eeg[0])
        assert w.eeg_coverage == pytest.approx(1 - missing.mean())
        # every present sample sits at its own time: no shifting, no interpolation
        slots = np.flatnonzero(~missing)
        idx = int(round((w.t_end - t0) * SFREQ)) - 999 + slots
        np.testing.assert_array_equal(w.eeg[:, slots], eeg.data[:, idx])


def test_face_frames_are_aligned_and_covered(sig, rng):
    eeg = sig.make_eeg(rng, seconds=10)
    t0 = eeg.times[0]
    ft = t0 - 0.05 + np.arange(0, 10.0, 1 / 30)  # 30 fps, from just before the EEG
    present = (ft - t0) % 2 < 1.5  # a face three quarters of the time
    face = _face(ft, present)
    windows = _run(Windower(), [face, eeg])
    assert windows
    for w in windows:
        sel = (ft > w.t_end - 4.0) & (ft <= w.t_end)
        np.testing.assert_array_equal(w.face_times, ft[sel])
        np.testing.assert_array_equal(w.face, face.data[:, sel].T)
        np.testing.assert_array_equal(w.face_mask, present[sel])
        assert w.face_coverage == pytest.approx(present[sel].mean(), abs=0.03)
        assert not w.face_gap
        assert w.face_names == FACE_NAMES
    late_start = Windower()(_face(ft + 0.1, present))
    assert late_start == []  # no EEG yet: nothing to emit
    assert _run(Windower(), [_face(ft + 0.1, present), eeg])[0].face_gap  # first 0.05 s empty
    # interleaved live, face lagging by 0.3 s of EEG time: same windows
    live = Windower()
    got: list[Window] = []
    for c in sig.split_every(eeg, 0.1):
        got += live.push_eeg(c)
        lag = c.times[-1] - 0.3
        got += live.push_face(face.slice_times(lag - 0.1, lag))
    got += live.push_face(face.slice_times(eeg.times[-1] - 0.4, np.inf)) + live.flush()
    _same(windows, got)


def test_a_face_stream_that_stops_never_stalls_the_windows(sig, rng):
    eeg = sig.make_eeg(rng, seconds=20)
    t0 = eeg.times[0]
    ft = t0 + np.arange(0, 8.0, 1 / 30)
    face = _face(ft, np.ones(ft.shape, bool))
    w = Windower(WindowConfig(face_wait_s=1.0))
    emitted: list[Window] = []
    for c in sig.split_every(eeg, 0.1):
        if c.times[0] - t0 < 8.0:
            emitted += w.push_face(face.slice_times(c.times[0], c.times[-1] + 1e-9))
        emitted += w.push_eeg(c)
        if c.times[-1] - t0 > 6:  # never more than face_wait_s + one hop + a chunk behind
            assert emitted[-1].t_end > c.times[-1] - (1.0 + 0.5 + 0.1)
    late = [x for x in emitted if x.t_end - t0 >= 12.5]
    assert late and all(
        x.face.shape == (0, 3) and x.face_coverage == 0.0 and x.face_gap for x in late
    )
    early = [x for x in emitted if x.t_end - t0 <= 7.9]
    assert early and all(x.face_coverage > 0.95 and not x.face_gap for x in early)
    assert w.buffered[1] <= 30 * 4.5


class _Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_announced_face_stream_is_waited_for_before_its_first_frame(sig, rng):
    """Live, the face reader may deliver its first chunk after the EEG passed the first windows:
    an announced face stream holds them, so they keep their frames (as offline)."""
    eeg = sig.make_eeg(rng, seconds=10)
    ft = eeg.times[0] + np.arange(0, 10.0, 1 / 30)
    face = _face(ft, np.ones(ft.shape, bool))
    offline = _run(Windower(), [face, eeg])
    split_at = eeg.times[0] + 4.9
    eeg_first, eeg_rest = eeg.slice_times(-np.inf, split_at), eeg.slice_times(split_at, np.inf)
    unannounced = Windower()
    cut = unannounced.push_eeg(eeg_first)
    assert cut and cut[0].face is None  # the old failure: emitted before any face frame
    live = Windower()
    live.expect_face(face.info)
    got = live.push_eeg(eeg_first)
    assert got == []  # waiting for the announced stream (EEG is < face_wait_s past the end)
    got += live.push_face(face) + live.push_eeg(eeg_rest) + live.flush()
    _same(offline, got)
    live.reset()  # the announcement survives a restart
    assert live.push_eeg(eeg_first) == []
    with pytest.raises(ConfigError, match="not a FaceFeatures stream"):
        Windower().expect_face(StreamInfo("M", "Markers", 0.0, ("event",), channel_format="string"))


def test_a_live_backlog_of_eeg_does_not_cut_face_frames(sig, rng):
    """After a stall the EEG reader may hand over seconds of backlog before the face reader
    runs: with a clock, windows also wait face_wait_s of clock time, so no frame is lost."""
    eeg = sig.make_eeg(rng, seconds=14)
    ft = eeg.times[0] + np.arange(0, 14.0, 1 / 30)
    face = _face(ft, np.ones(ft.shape, bool))
    offline = _run(Windower(), [face, eeg])
    clock = _Clock()
    cfg = WindowConfig(face_wait_s=1.0)
    live, stream_only = Windower(cfg, clock=clock), Windower(cfg)
    for w in (live, stream_only):
        w.expect_face(face.info)
    got: list[Window] = []
    lost: list[Window] = []
    t0 = eeg.times[0]
    for lo, hi in ((0, 4.2), (4.2, 10.0)):  # 5.8 s of EEG backlog arrive at once
        part = eeg.slice_times(t0 + lo, t0 + hi - 1e-9)
        got += live.push_eeg(part)
        lost += stream_only.push_eeg(part)
        clock.now += 0.01
    # the face frames of the backlog arrive a moment later (the face reader's turn)
    frames = face.slice_times(-np.inf, t0 + 10.0 - 1e-9)
    got += live.push_face(frames)
    lost += stream_only.push_face(frames)
    assert any(w.face.shape[0] < 100 for w in lost)  # stream time alone cuts them
    rest_face, rest_eeg = face.slice_times(t0 + 10.0, np.inf), eeg.slice_times(t0 + 10.0, np.inf)
    got += live.push_face(rest_face) + live.push_eeg(rest_eeg) + live.flush()
    _same(offline, got)
    # a face stream that really stopped: windows go out once face_wait_s passed on the clock
    dead = Windower(cfg, clock=clock)
    dead.expect_face(face.info)
    clock.now = 100.0
    assert dead.push_eeg(eeg.slice_times(-np.inf, t0 + 8.0)) == []
    clock.now += 1.0
    out = dead.push_eeg(eeg.slice_times(t0 + 8.0 + 1e-9, t0 + 8.1))
    assert out and all(w.face.shape[0] == 0 and w.face_gap for w in out)


def test_buffers_stay_bounded(sig, rng):
    eeg = sig.make_eeg(rng, seconds=60)
    w = Windower()
    sizes = []
    for c in sig.split_every(eeg, 0.1):
        w.push_eeg(c, raw=c)
        sizes.append(w.buffered[0])
    assert max(sizes) <= (4.0 + 1.0 + 0.5 + 0.2) * SFREQ


def test_time_going_back_restarts_the_windows(sig, rng, caplog):
    eeg = sig.make_eeg(rng, seconds=8)
    w = Windower()
    first = w(eeg)
    with caplog.at_level(logging.WARNING):
        again = w(replace(eeg, times=eeg.times - 100.0))
    assert "went back" in caplog.text
    assert len(again) == len(first)
    assert again[0].t_end == pytest.approx(first[0].t_end - 100.0)


def test_reset_equals_a_fresh_instance(sig, rng):
    eeg = sig.make_eeg(rng, seconds=8)
    a, b = sig.split(eeg, 2)
    w = Windower()
    w(a)
    w.reset()
    _same(_run(w, [b]), _run(Windower(), [b]))


def test_raw_samples_travel_with_the_window(sig, rng):
    eeg = sig.make_eeg(rng, seconds=6)
    filtered = replace(eeg, data=eeg.data.astype(np.float64) * 2)
    windows = Windower().push_eeg(filtered, raw=eeg)
    for w in windows:
        np.testing.assert_array_equal(w.eeg, 2 * w.eeg_raw.astype(np.float64))
    with pytest.raises(Exception, match="raw chunk"):
        Windower().push_eeg(filtered, raw=replace(eeg, data=eeg.data[:, :10], times=eeg.times[:10]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_s": 0}, "window_s"),
        ({"hop_s": -1}, "hop_s"),
        ({"face_wait_s": -1}, "face_wait_s"),
        ({"origin_s": float("inf")}, "origin_s"),
    ],
)
def test_config_is_validated(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WindowConfig(**kwargs)


def test_irregular_eeg_is_a_clear_error():
    info = StreamInfo("EEG", "EEG", 0.0, ("Cz",))
    with pytest.raises(ConfigError, match="no nominal sample rate"):
        Windower().push_eeg(Chunk(np.zeros((1, 5)), np.arange(5.0), info))


def test_a_given_origin_sets_the_grid(sig, rng):
    eeg = sig.make_eeg(rng, seconds=8)
    t0 = eeg.times[0]
    windows = _run(Windower(WindowConfig(origin_s=t0 - 100.25)), [eeg])
    ends = np.array([w.t_end for w in windows]) - t0
    np.testing.assert_allclose(ends, 4.25 + 0.5 * np.arange(len(windows)), atol=1e-9)
    assert all(w.complete for w in windows)


def test_a_long_pause_gives_empty_windows_cheaply(sig, rng):
    eeg = sig.make_eeg(rng, seconds=10)
    later = replace(eeg, times=eeg.times + 600.0)  # the stream comes back 10 minutes later
    windows = _run(Windower(), [eeg, later])
    empty = [w for w in windows if w.eeg_coverage == 0.0]
    assert len(empty) > 1150
    assert all(not w.complete and w.eeg_gaps for w in empty)
    assert len({id(w.eeg) for w in empty}) == 1  # one shared all-NaN array, not 1150 copies
    assert np.isnan(empty[0].eeg).all() and not empty[0].eeg.flags.writeable
    assert windows[-1].complete


def _live_session(sig, rng, windower, clock, *, face_until, face_from, face_lag_s=0.0):
    """Feeds 20 s of EEG in 40 ms chunks as a live session would: the injected clock follows the
    stream (each chunk arrives when its last sample was taken), the face frames (30 fps) of each
    chunk come just before it, ``face_lag_s`` late, except between ``face_until`` and
    ``face_from`` (seconds from the start), where the face stream gives nothing.

    Returns ``(window, delay)`` pairs: ``delay`` is the clock at emission minus the window's end.
    """
    eeg = sig.make_eeg(rng, seconds=20)
    t0 = eeg.times[0]
    ft = t0 + np.arange(0, 20.0, 1 / 30)
    gone = (ft - t0 >= face_until) & (ft - t0 < face_from)
    face = _face(ft[~gone], np.ones((~gone).sum(), bool))
    windower.expect_face(face.info)
    out: list[tuple[Window, float]] = []
    sent = -np.inf
    for c in sig.split_every(eeg, 0.04):
        clock.now = float(c.times[-1])
        upto = c.times[-1] + 1e-9 - face_lag_s
        frames = face.slice_times(sent, upto)
        sent = upto
        got = windower.push_face(frames) + windower.push_eeg(c)
        out += [(w, clock.now - w.t_end) for w in got]
    return out, t0


def test_a_stalled_face_stream_no_longer_delays_the_windows(sig, rng, caplog):
    """Once a window waited face_wait_s (stream time and clock) for nothing, the face stream is
    marked stalled and later windows go out as soon as the EEG passes their end; frames that
    come back put the windows back to waiting for them."""
    clock = _Clock()
    w = Windower(WindowConfig(face_wait_s=1.0), clock=clock)
    with caplog.at_level(logging.INFO, logger="bci_affect.processors.windower"):
        out, t0 = _live_session(sig, rng, w, clock, face_until=8.0, face_from=13.0)
    end = {round(x.t_end - t0, 3): (x, delay) for x, delay in out}
    assert sorted(end) == [4.0 + 0.5 * k for k in range(32)]  # nothing lost: 4.0 ... 19.5 s
    before = [end[t] for t in end if t <= 7.5]
    assert all(x.face.shape[0] == 120 and d < 0.1 for x, d in before)
    first, d_first = end[8.0]  # the window the face stopped in waits face_wait_s, once
    assert d_first >= 1.0
    assert end[8.5][1] < 0.6  # its EEG had arrived during that wait: out with it
    stalled = [end[t] for t in end if 9.0 <= t <= 12.5]
    assert all(d < 0.1 for _, d in stalled)  # before: each waited 1 s more
    assert all(x.face_state == "ok" for x, _ in before) and first.face_state == "stalled"
    assert all(x.face_state == "stalled" for x, _ in stalled)
    assert all(x.face.shape[0] == 0 for x, _ in stalled if x.t_start - t0 >= 8.0)
    back = [end[t] for t in end if t >= 13.5]
    assert all(x.face_state == "ok" and x.face.shape[0] > 0 for x, _ in back)
    assert all(x.face_coverage > 0.95 for x, _ in back if x.t_start - t0 >= 13.0)
    assert w.face_state == "ok"
    lines = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage().split(":")[0].split(" (")[0] for r in lines] == [
        "face stream 'FaceFeatures' stalled",
        "face stream 'FaceFeatures' resumed at t=1013.000 s; windows wait for its frames again",
    ]
    assert "windows go on without the face (EEG only)" in lines[0].getMessage()


def test_frames_that_come_back_are_waited_for_again(sig, rng):
    """After a stall, frames arriving 0.3 s late (within face_wait_s) are waited for again."""
    clock = _Clock()
    w = Windower(WindowConfig(face_wait_s=1.0), clock=clock)
    out, t0 = _live_session(sig, rng, w, clock, face_until=6.0, face_from=10.0, face_lag_s=0.3)
    late = [(x, d) for x, d in out if x.t_end - t0 >= 11.0]
    assert late and all(x.face_state == "ok" for x, _ in late)
    for x, d in late:  # each waited for its last frames (0.3 s), and no more
        assert x.face_times[-1] > x.t_end - 1 / 30 - 1e-9
        assert 0.25 < d < 0.45


@pytest.mark.parametrize("how", ["stalled", "ended", "lost"])
def test_offline_windows_after_the_face_stream_stops_follow_the_eeg(sig, rng, how):
    """Offline (stream time, no clock): after the face stream stalls (or its source says it
    ended or was lost) each window goes out with the EEG chunk that passes its end; the windows
    themselves are those of the whole recording cut at once."""
    eeg = sig.make_eeg(rng, seconds=16)
    t0 = eeg.times[0]
    ft = t0 + np.arange(0, 7.0, 1 / 30)
    face = _face(ft, np.ones(ft.shape, bool))
    expected = _run(Windower(), [face, eeg])
    w = Windower(WindowConfig(face_wait_s=1.0))
    got: list[Window] = []
    behind: dict[float, float] = {}  # window end -> how far the EEG was past it at emission
    for c in sig.split_every(eeg, 0.1):
        got += w.push_face(face.slice_times(c.times[0], c.times[-1] + 1e-9))
        if how != "stalled" and w.face_state == "ok" and c.times[-1] - t0 >= 7.0:
            got += w.face_stopped(how, t=t0 + 7.0)  # the source's event, just after its end
        got += w.push_eeg(c)
        behind.update(
            {x.t_end - t0: c.times[-1] - x.t_end for x in got if x.t_end - t0 not in behind}
        )
    got += w.flush()
    _same(expected, got)
    # the stall is found by waiting face_wait_s once (7.5 s went out with 7.0 s); an ended or
    # lost stream is not waited for at all
    waited = {t: b for t, b in behind.items() if b > 0.1}
    assert list(waited) == ([7.0, 7.5] if how == "stalled" else [])
    assert all(b < 1.1 for b in waited.values()) and waited.get(7.0, 1.0) >= 1.0
    assert w.face_state == how
    assert all(x.face_state == how for x in got if x.t_end - t0 > 7.0)


def test_face_stream_events_stop_the_wait(sig, rng, caplog):
    """The signals chain hands stream_ended / stream_lost of the face stream (its -events
    stream) to the windower: waiting windows go out at once; other events change nothing."""
    from bci_affect.processors import SignalPipeline

    eeg = sig.make_eeg(rng, seconds=9)
    t0 = eeg.times[0]
    ft = t0 + np.arange(0, 5.1, 1 / 30)  # frames up to 5.07 s
    face = _face(ft, np.ones(ft.shape, bool))
    events = StreamInfo("FaceFeatures-events", "Markers", 0.0, ("event",), channel_format="string")

    def marker(*bodies: dict) -> Chunk:
        texts = [json.dumps(b) for b in bodies]
        return Chunk(np.array([texts], dtype=object), t0 + 5.0 + np.arange(len(texts)), events)

    for event, state in (("stream_ended", "ended"), ("stream_lost", "lost")):
        chain = SignalPipeline()
        assert chain(face) == []
        first = chain(eeg.slice_times(-np.inf, t0 + 5.6))  # windows up to 5.0 s need no wait
        assert [round(r.t_end - t0, 3) for r in first] == [4.0, 4.5, 5.0]
        assert chain(eeg.slice_times(t0 + 5.6, t0 + 5.7)) == []  # 5.5 s waits for frames
        others = marker(
            {"event": event, "stream": "EEG", "t": t0 + 5.0},
            {"event": "face_lost", "stream": "FaceFeatures", "t": t0 + 5.0},
            {"event": "trial_start", "trial": 1},
        )
        assert chain(replace(others, data=np.array([["not json", *others.data[0][1:]]]))) == []
        assert chain.windower.face_state == "ok"
        with caplog.at_level(logging.WARNING):
            out = chain(marker({"event": event, "stream": "FaceFeatures", "t": t0 + 5.02}))
        assert [round(r.t_end - t0, 3) for r in out] == [5.5]
        assert chain.windower.face_state == state and out[0].window.face_state == state
        assert f"face stream 'FaceFeatures' {state} (t={t0 + 5.02:.3f} s)" in caplog.text
        later = chain(eeg.slice_times(t0 + 5.7, np.inf))
        assert [round(r.t_end - t0, 3) for r in later] == [6.0, 6.5, 7.0, 7.5, 8.0, 8.5]
    with pytest.raises(ConfigError, match="reason"):
        Windower().face_stopped("gone")
