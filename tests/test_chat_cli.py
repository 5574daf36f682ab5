"""`llamaserve chat`: the terminal chat, through a pipe and through a real terminal (pty), against
the real server (and, where the exact request body matters, a recording stand-in)."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import conftest
from .builders import image_bytes
from .conftest import LiveServer, start_server
from .fake_openai import FakeOpenAI

CHAT = [sys.executable, "-u", "-m", "llamaserve", "chat", "smollm2", "--url"]
# the developer's own keys must not leak into the chat under test
ENV = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "LLAMASERVE_API_KEY")}


def chat(server: LiveServer | FakeOpenAI, stdin: str,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHAT, server.v1], input=stdin, capture_output=True, text=True,
                          timeout=120, env={**ENV, **(env or {})})


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


class LiveChat:
    """`llamaserve chat` on pipes, fed one message at a time while it keeps running."""

    def __init__(self, url: str) -> None:
        self.child = subprocess.Popen([*CHAT, url], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        self.turns = 0

    def read_until(self, needle: bytes, timeout: float = 120) -> tuple[str, str]:
        """What the chat printed (stdout, stderr) until NEEDLE appears on stderr."""
        assert self.child.stdout is not None and self.child.stderr is not None
        out, err = b"", b""
        deadline = time.monotonic() + timeout
        while needle not in err:
            assert time.monotonic() < deadline, f"no {needle!r}; stdout {out!r}, stderr {err!r}"
            assert self.child.poll() is None, f"the chat exited; stderr {err!r}"
            ready, _, _ = select.select([self.child.stdout, self.child.stderr], [], [], 1)
            for stream in ready:
                data = os.read(stream.fileno(), 65536)
                if stream is self.child.stdout:
                    out += data
                else:
                    err += data
        return out.decode(), err.decode()

    def write(self, text: str) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write(f"{text}\n".encode())
        self.child.stdin.flush()

    def read_stdout(self, size: int, timeout: float = 60) -> bytes:
        """At least SIZE bytes of reply."""
        assert self.child.stdout is not None
        out = b""
        deadline = time.monotonic() + timeout
        while len(out) < size:
            assert time.monotonic() < deadline, f"only {out!r} streamed"
            if select.select([self.child.stdout], [], [], 1)[0]:
                out += os.read(self.child.stdout.fileno(), 4096)
        return out

    def turn(self, text: str) -> tuple[str, str]:
        """Sends TEXT, then a no-op command whose answer marks the end of TEXT's turn."""
        self.turns += 1
        marker = f"/end-of-turn-{self.turns}"
        self.write(f"{text}\n{marker}")
        return self.read_until(f"unknown command {marker}".encode())

    def close(self) -> int:
        if self.child.poll() is None:
            try:
                self.child.communicate(b"/bye\n", timeout=30)
            except subprocess.TimeoutExpired:
                self.child.kill()
        return self.child.wait()


def test_piped_messages_get_streamed_replies(vision_server: LiveServer) -> None:
    result = chat(vision_server, "Say this is a test\n/system Answer briefly.\n/reset\nHi\n")
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) >= 2
    assert "(system message set)" in result.stderr
    assert "(conversation forgotten; the system message is kept)" in result.stderr


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


def test_a_server_that_goes_away_is_reported_and_retry_works_when_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = start_server(["smollm2", "--ctx", "512"], tmp_path)
    port = int(first.base_url.rsplit(":", 1)[1])
    live = LiveChat(first.v1)
    try:
        out, err = live.turn("Say hi")
        assert out.strip() and "error" not in err
        live.write("Write a very long essay about the history of rivers.")
        live.read_stdout(40)  # the reply is streaming: now the server dies
        first.stop(signal.SIGKILL)
        out, err = live.turn("Say hello")
        assert "went away in the middle of the reply" in err
        assert "is it still running?" in err  # refused, or closed without an answer
        assert "conversation is kept" in err and "/retry" in err
        assert "Traceback" not in err and live.child.poll() is None
        # the same address comes back: /retry sends "Say hello" again
        monkeypatch.setattr(conftest, "free_port", lambda: port)
        second = start_server(["smollm2", "--ctx", "512"], tmp_path)
        try:
            out, err = live.turn("/retry")
            assert out.strip() and "error" not in err
        finally:
            second.stop()
    finally:
        assert live.close() == 0


def test_the_conversation_is_kept_for_the_server_that_comes_back(
        tmp_path: Path) -> None:
    first = start_server(["smollm2", "--ctx", "512"], tmp_path)
    port = int(first.base_url.rsplit(":", 1)[1])
    live = LiveChat(first.v1)
    try:
        out, _ = live.turn("Say hi")
        reply = out[:-1]  # the chat ends each reply with a newline
        first.stop()
        _, err = live.turn("What did I just say?")
        assert "is it still running?" in err
        _, err = live.turn("/retry")  # still down: still kept
        assert "is it still running?" in err
        fake = FakeOpenAI(port)  # a server that shows what it receives, at the same address
        try:
            out, err = live.turn("/retry")
            assert out == "ok\n" and "error" not in err
            live.turn("Thanks")
        finally:
            fake.close()
    finally:
        assert live.close() == 0
    history = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": reply},
               {"role": "user", "content": "What did I just say?"}]
    assert fake.bodies[0]["messages"] == history  # the failed message once, no error text
    assert fake.bodies[1]["messages"] == [*history, {"role": "assistant", "content": "ok"},
                                          {"role": "user", "content": "Thanks"}]


def test_arrow_keys_edit_the_line_in_a_terminal(vision_server: LiveServer) -> None:
    main_fd, child_fd = pty.openpty()
    child = subprocess.Popen([*CHAT, vision_server.v1], stdin=child_fd, stdout=child_fd,
                             stderr=child_fd, env={**ENV, "TERM": "xterm"}, close_fds=True)
    os.close(child_fd)
    output = b""

    def read_until(needle: bytes, count: int = 1) -> None:
        nonlocal output
        deadline = time.monotonic() + 60
        while output.count(needle) < count:
            assert time.monotonic() < deadline, f"no {needle!r} in {output!r}"
            if select.select([main_fd], [], [], 1)[0]:
                output += os.read(main_fd, 65536)

    try:
        read_until(b">>> ")
        os.write(main_fd, b"/hep\x1b[Dl\r")  # Left arrow, then the missing letter: /help
        read_until(b"/set parameter NAME VALUE")
        read_until(b">>> ", count=2)  # keys typed before the prompt would be echoed raw
        os.write(main_fd, b"\x1b[A\r")  # Up arrow: the line before, again
        read_until(b"/set parameter NAME VALUE", count=2)
        read_until(b">>> ", count=3)
        os.write(main_fd, b"/bye\r")
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
        os.close(main_fd)
    assert b"^[[" not in output, output
    assert b"unknown command" not in output, output


def test_triple_quotes_send_a_multi_line_message(fake: FakeOpenAI) -> None:
    result = chat(fake, '"""\nFirst line\n\n  Second line\n"""\n"""One line"""\n')
    assert result.returncode == 0, result.stderr
    assert [body["messages"] for body in fake.bodies] == [
        [{"role": "user", "content": "First line\n\n  Second line"}],
        [{"role": "user", "content": "First line\n\n  Second line"},
         {"role": "assistant", "content": "ok"},
         {"role": "user", "content": "One line"}],
    ]


def test_set_system_and_parameters_reach_the_request(fake: FakeOpenAI) -> None:
    result = chat(fake, "/set system Answer briefly.\n/set parameter temperature 0.2\n"
                        "/set parameter num_predict 32\n/set parameter top_p 0.9\n"
                        "/set parameter seed 7\n/set parameter temperature warm\n/show\nHi\n")
    assert result.returncode == 0, result.stderr
    assert "temperature needs a number" in result.stderr
    assert "temperature 0.2, max_tokens 32, top_p 0.9, seed 7" in result.stderr  # /show
    body = fake.bodies[0]
    assert body["messages"] == [{"role": "system", "content": "Answer briefly."},
                                {"role": "user", "content": "Hi"}]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == \
        (0.2, 32, 0.9, 7)


def test_reset_says_it_keeps_the_system_message_and_does(fake: FakeOpenAI) -> None:
    result = chat(fake, "/system Be brief.\nHi\n/reset\nAgain\n")
    assert "(conversation forgotten; the system message is kept)" in result.stderr
    assert fake.bodies[1]["messages"] == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Again"}]


def test_help_lists_every_command_and_bye_quits(fake: FakeOpenAI) -> None:
    result = chat(fake, "/help\n/bye\nHi\n")
    assert result.returncode == 0
    for command in ["/set system", "/set parameter", "/show", "/image", "/retry", "/reset",
                    "/help", "/exit", "/bye", '"""', "Ctrl-C"]:
        assert command in result.stderr, command
    assert fake.bodies == []  # /bye quit before "Hi"


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "LLAMASERVE_API_KEY"])
def test_the_api_key_from_the_environment_is_used_from_the_first_request(
        variable: str) -> None:
    guarded = FakeOpenAI(api_key="SECRET")
    try:
        result = chat(guarded, "Hi\n", env={variable: "SECRET"})
    finally:
        guarded.close()
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr  # the server check passed with the key
    assert guarded.authorizations == ["Bearer SECRET", "Bearer SECRET"]
    assert len(guarded.bodies) == 1


def test_a_missing_api_key_is_named_instead_of_starting_another_server() -> None:
    guarded = FakeOpenAI(api_key="SECRET")
    try:
        result = chat(guarded, "Hi\n")
    finally:
        guarded.close()
    assert result.returncode != 0
    assert "wants an API key" in result.stderr and "LLAMASERVE_API_KEY" in result.stderr
    assert "starting" not in result.stderr and guarded.bodies == []
