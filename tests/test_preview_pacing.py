"""The training worker waits for the viewer to draw each live preview, but never long."""

from __future__ import annotations

import threading

from napari_live_unet.app.preview_pacing import PreviewPacing


def _wait_in_thread(pacing: PreviewPacing, should_stop=None):
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(pacing.wait_until_drawn(should_stop)))
    thread.start()
    return thread, result


def test_the_worker_resumes_when_the_preview_is_drawn():
    pacing = PreviewPacing(timeout=30.0)
    thread, result = _wait_in_thread(pacing)
    thread.join(0.2)
    assert thread.is_alive()  # still waiting: nothing drawn yet
    pacing.drawn()
    thread.join(5.0)
    assert result == [True]


def test_an_undrawn_preview_holds_training_for_the_timeout_only():
    pacing = PreviewPacing(timeout=0.05)
    assert pacing.wait_until_drawn() is False


def test_a_late_acknowledgement_is_not_taken_for_the_next_preview():
    pacing = PreviewPacing(timeout=0.05)
    assert pacing.wait_until_drawn() is False  # preview 1 not drawn in time
    pacing.drawn()  # preview 1 drawn late
    assert pacing.wait_until_drawn() is False  # preview 2 still owed
    pacing.drawn()
    pacing.drawn()  # preview 3 drawn before the worker waits for it
    assert pacing.wait_until_drawn() is True


def test_a_stop_request_ends_the_wait():
    pacing = PreviewPacing(timeout=30.0)
    stop = threading.Event()
    thread, result = _wait_in_thread(pacing, stop.is_set)
    stop.set()
    thread.join(5.0)
    assert result == [False]


def test_a_new_run_owes_nothing_from_the_last():
    pacing = PreviewPacing(timeout=0.05)
    pacing.wait_until_drawn()  # never drawn: the run ended
    pacing.reset()
    pacing.drawn()
    assert pacing.wait_until_drawn() is True
