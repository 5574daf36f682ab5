"""`llamaserve chat`: the terminal chat, through a pipe and through a real terminal (pty)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .builders import image_bytes
from .conftest import LiveServer


def chat(server: LiveServer, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamaserve", "chat", "smollm2", "--url", server.v1],
        input=stdin, capture_output=True, text=True, timeout=120,
    )


def test_piped_messages_get_streamed_replies(vision_server: LiveServer) -> None:
    result = chat(vision_server, "Say this is a test\n/system Answer briefly.\n/reset\nHi\n")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) >= 2
    assert "(system message set)" in result.stderr
    assert "(conversation forgotten)" in result.stderr


def test_image_command_attaches_an_image(vision_server: LiveServer, tmp_path: Path) -> None:
    picture = tmp_path / "red.png"
    picture.write_bytes(image_bytes("PNG"))
    result = chat(vision_server, f"/image {picture}\nWhat is in this image?\n")
    assert result.returncode == 0, result.stderr
    assert "1 image(s) attached" in result.stderr
    assert result.stdout.strip()
    assert "error" not in result.stderr


def test_missing_image_file_is_reported(vision_server: LiveServer) -> None:
    result = chat(vision_server, "/image /no/such/file.png\n")
    assert result.returncode == 0
    assert "no such image file" in result.stderr


def test_ctrl_c_stops_a_reply_and_the_chat_goes_on(vision_server: LiveServer) -> None:
    child = subprocess.Popen(
        [sys.executable, "-u", "-m", "llamaserve", "chat", "smollm2", "--url", vision_server.v1],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        child.stdin.write(b"Write a very long essay about the history of rivers.\n")
        child.stdin.flush()
        streamed = b""
        deadline = time.monotonic() + 60
        while len(streamed) < 40:  # the reply is streaming
            assert time.monotonic() < deadline, "no reply streamed"
            ready, _, _ = select.select([child.stdout], [], [], 1)
            if ready:
                streamed += os.read(child.stdout.fileno(), 4096)
        child.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, errors = child.communicate(b"Say hi\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, errors
    output = streamed + rest
    assert b"[stopped]" in output
    # the next message was answered after the stopped one
    assert output.split(b"[stopped]", 1)[1].strip()
