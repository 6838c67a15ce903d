"""Temporary store directories removed on a background thread (engine, no viewer)."""

import gc
import shutil
import subprocess
import sys
import textwrap

from napari_live_unet.engine.temp_store import (
    make_directory,
    remove_later,
    remove_with,
    wait_for_removals,
)


class Owner:
    """Something a directory's life can follow (``object()`` takes no weak reference)."""


def test_a_directory_is_removed_once_off_the_calling_thread(tmp_path, blocked_removal):
    path = make_directory("live-unet-test-", tmp_path)
    (path / "chunk").write_bytes(b"x" * 100)
    assert path.is_dir() and path.parent == tmp_path and path.name.startswith("live-unet-test-")
    owner = Owner()
    remove = remove_with(owner, path)
    remove()  # returns while the removal waits for `release`
    remove()
    remove_later(path)  # already pending: nothing more
    assert not remove.alive and path.exists() and not blocked_removal.on_caller()
    assert not wait_for_removals(timeout=0.05)
    blocked_removal.release.set()
    assert wait_for_removals(timeout=10)
    assert not path.exists()
    assert len(blocked_removal.threads) == 1 and not blocked_removal.on_caller()


def test_a_directory_goes_when_its_owner_is_collected(tmp_path):
    path = make_directory("live-unet-test-", tmp_path)
    owner = Owner()
    remove = remove_with(owner, path)
    del owner
    gc.collect()
    assert not remove.alive
    assert wait_for_removals(timeout=10)
    assert not path.exists()


def test_errors_are_ignored_and_the_worker_carries_on(tmp_path, monkeypatch, capsys):
    remove_later(tmp_path / "never made")
    a_file = tmp_path / "a file"
    a_file.write_text("not a directory")
    remove_later(a_file)
    assert wait_for_removals(timeout=10)
    assert a_file.exists()  # rmtree refuses a file; the error is ignored

    rmtree = shutil.rmtree

    def failing_once(path, *args, **kwargs):
        monkeypatch.setattr(shutil, "rmtree", rmtree)
        raise RuntimeError("a bug in a removal")

    monkeypatch.setattr(shutil, "rmtree", failing_once)
    first, second = make_directory("a-", tmp_path), make_directory("b-", tmp_path)
    remove_later(first)
    remove_later(second)
    assert wait_for_removals(timeout=10)
    assert first.exists() and not second.exists()
    assert "a bug in a removal" in capsys.readouterr().err


def test_what_is_pending_at_exit_is_removed_before_the_interpreter_ends(tmp_path):
    # The worker is stuck on its first directory: the exit removes every pending one, and
    # those whose owners are still alive, itself.
    code = textwrap.dedent(f"""
        import shutil, sys, threading, time
        from napari_live_unet.engine import temp_store

        rmtree = shutil.rmtree

        def slow_on_the_worker(path, *args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                time.sleep(60)
            rmtree(path, *args, **kwargs)

        shutil.rmtree = slow_on_the_worker

        class Owner:
            pass

        parent = {str(tmp_path)!r}
        alive = Owner()
        temp_store.remove_with(alive, temp_store.make_directory("owned-", parent))
        for prefix in ("first-", "second-"):
            temp_store.remove_later(temp_store.make_directory(prefix, parent))
        print("exiting")
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout == "exiting\n", result.stderr
    assert list(tmp_path.iterdir()) == []
