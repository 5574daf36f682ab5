"""`llamaserve chat`: an interactive terminal chat against a running server (or one it starts).

It speaks the OpenAI API like any client, so it works against any llamaserve (or other
OpenAI-compatible server); replies stream as they come and Ctrl-C stops one. The commands follow
Ollama's (`/set parameter temperature 0.2`, `/bye`, `\"\"\"` for multi-line input), since that
is what people type.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import httpx

HELP = '''Commands:
  /set system TEXT            set the system message (also /system TEXT)
  /set parameter NAME VALUE   temperature, top_p, top_k, max_tokens (or num_predict), seed
  /show                       show the system message and the parameters
  /image PATH                 attach an image to your next message (vision models)
  /retry                      send the last message again, after an error
  /reset                      forget the conversation; the system message is kept
  /help, /?                   this list
  /exit, /bye                 quit (Ctrl-D quits too)
A line starting with """ starts a multi-line message; a line ending with """ ends it.
Ctrl-C stops a reply. Arrow keys edit the line and go through earlier lines.'''

PARAMETERS: dict[str, Callable[[str], float | int]] = {
    "temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int,
}
ALIASES = {"num_predict": "max_tokens"}  # Ollama's name for it


class ChatError(Exception):
    """A request that failed; the message says what happened and what to do."""


def _check_server(base_url: str, headers: dict[str, str]) -> bool:
    """True when the server answers, False when nothing does; a refused key is an error, not a
    reason to start another server."""
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, timeout=2)
    except httpx.HTTPError:
        return False
    if response.status_code == 401:
        raise click.ClickException(
            f"the server at {base_url} wants an API key: pass --api-key KEY or set "
            "LLAMASERVE_API_KEY (or OPENAI_API_KEY)"
            + (" (the key given was refused)" if headers else ""))
    return response.status_code == 200


def start_server(model: str, headers: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """`llamaserve run MODEL` on a free local port, once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", model, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    # `run` reads LLAMASERVE_API_KEY too, so the key the chat sends is the one it wants
    while not _check_server(base_url, headers):
        if process.poll() is not None:
            detail = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise click.ClickException(f"could not start a server for '{model}':\n{detail}")
        time.sleep(0.2)
    return process, base_url


def image_part(path: str) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise click.ClickException(f"no such image file: {file}")
    media_type = mimetypes.guess_type(file.name)[0] or "image/png"
    data = base64.b64encode(file.read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}


def stream_reply(client: httpx.Client, base_url: str, body: dict[str, Any]) -> Iterator[str]:
    """The reply's text as it streams; ChatError for anything that is not a reply."""
    started = False
    try:
        with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                try:
                    message = response.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = response.text
                raise ChatError(f"the server answered {response.status_code}: {message}")
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                try:
                    chunk = json.loads(line[len("data: "):])
                except ValueError as exc:
                    raise ChatError(f"the server sent a line that is not JSON: {line!r}") from exc
                if "error" in chunk:
                    raise ChatError(chunk["error"].get("message", str(chunk["error"])))
                for choice in chunk.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        started = True
                        yield text
    except httpx.ConnectError as exc:
        raise ChatError(f"could not reach the server at {base_url}: is it still running?") \
            from exc
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        if started:
            raise ChatError(f"the server at {base_url} went away in the middle of the reply") \
                from exc
        raise ChatError(f"the server at {base_url} closed the connection without answering: "
                        "is it still running?") from exc
    except httpx.HTTPError as exc:
        raise ChatError(f"the request to {base_url} failed: {exc}") from exc


def read_message(read_line: Callable[[str], str], interactive: bool) -> str:
    """One message: a line, or the lines between two triple quotes (as in Ollama)."""
    line = read_line(">>> " if interactive else "")
    if not line.lstrip().startswith('"""'):
        return line
    text = line.lstrip()[3:]
    if text.rstrip().endswith('"""'):
        return text.rstrip()[:-3]
    lines = [text] if text.strip() else []
    while True:
        try:
            line = read_line("... " if interactive else "")
        except EOFError:
            break
        if line.rstrip().endswith('"""'):
            lines.append(line.rstrip()[:-3])
            break
        lines.append(line)
    return "\n".join(lines)


class ChatSession:
    """The conversation, its settings, and the message that failed to go through, if any."""

    def __init__(self, client: httpx.Client, base_url: str, model: str,
                 system: str | None) -> None:
        self.client, self.base_url, self.model = client, base_url, model
        self.system = system
        self.messages: list[dict[str, Any]] = []
        self.parameters: dict[str, float | int] = {}
        self.pending_images: list[dict[str, Any]] = []
        self.unsent: dict[str, Any] | None = None

    def command(self, text: str) -> bool:
        """Runs a /command; False when the chat should end."""
        name, _, argument = text.partition(" ")
        argument = argument.strip()
        if name in ("/exit", "/quit", "/bye"):
            return False
        if name in ("/help", "/?"):
            say(HELP)
        elif name == "/reset":
            self.messages.clear()
            self.pending_images.clear()
            self.unsent = None
            say("(conversation forgotten; the system message is kept)" if self.system
                else "(conversation forgotten)")
        elif name == "/system":
            self.set_system(argument)
        elif name == "/set":
            self.set(argument)
        elif name == "/show":
            say(f"system message: {self.system or '(none)'}")
            shown = ", ".join(f"{key} {value}" for key, value in self.parameters.items())
            say(f"parameters: {shown or '(server defaults)'}")
        elif name == "/image":
            try:
                self.pending_images.append(image_part(argument))
            except click.ClickException as exc:
                say(f"error: {exc.message}")
            else:
                say(f"({len(self.pending_images)} image(s) attached to your next message)")
        elif name == "/retry":
            if self.unsent is None:
                say("(nothing to retry: the last message went through)")
            else:
                self.send(self.unsent)
        else:
            say(f"unknown command {name}; /help lists the commands")
        return True

    def set_system(self, text: str) -> None:
        self.system = text or None
        say("(system message set)" if text else "(system message removed)")

    def set(self, argument: str) -> None:
        what, _, rest = argument.partition(" ")
        if what == "system":
            return self.set_system(rest.strip())
        name, _, value = rest.strip().partition(" ")
        name = ALIASES.get(name, name)
        if what != "parameter" or name not in PARAMETERS or not value.strip():
            say("usage: /set system TEXT, or /set parameter NAME VALUE with NAME one of "
                f"{', '.join(PARAMETERS)} (e.g. /set parameter temperature 0.2)")
            return
        try:
            self.parameters[name] = PARAMETERS[name](value.strip())
        except ValueError:
            kind = "a whole number" if PARAMETERS[name] is int else "a number"
            say(f"error: {name} needs {kind}, e.g. /set parameter {name} "
                f"{'0.2' if PARAMETERS[name] is float else '42'}")
            return
        say(f"({name} set to {self.parameters[name]})")

    def send(self, message: dict[str, Any]) -> None:
        """Sends the conversation plus MESSAGE and streams the reply; both join the
        conversation only when the reply arrives, so a failed turn is never sent as history."""
        self.unsent = None
        system = [{"role": "system", "content": self.system}] if self.system else []
        body = {"model": self.model, "messages": [*system, *self.messages, message],
                "stream": True, **self.parameters}
        reply: list[str] = []
        try:
            for piece in stream_reply(self.client, self.base_url, body):
                reply.append(piece)
                click.echo(piece, nl=False)
        except KeyboardInterrupt:
            click.echo(" [stopped]", nl=False)  # closing the stream stops the generation
        except ChatError as exc:
            if reply:
                click.echo()
            self.unsent = message
            discarded = " (the partial reply is discarded)" if reply else ""
            say(f"error: {exc}{discarded}")
            say("(your conversation is kept: /retry sends that message again, or type another)")
            return
        click.echo()
        self.messages += [message, {"role": "assistant", "content": "".join(reply)}]

    def user_message(self, text: str) -> dict[str, Any]:
        content: Any = text
        if self.pending_images:
            content = [{"type": "text", "text": text}, *self.pending_images]
            self.pending_images = []
        return {"role": "user", "content": content}


def say(text: str) -> None:
    """Notes for the person at the terminal go to stderr, so stdout is only the replies."""
    click.echo(text, err=True)


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (input() then edits lines and keeps a history)
    except ImportError:  # Windows has no readline; input() still works
        pass


def chat_loop(base_url: str, model: str, api_key: str | None, system: str | None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    interactive = sys.stdin.isatty()
    if interactive:
        _enable_line_editing()
        say(f"chatting with {model} at {base_url}: /help lists the commands, /bye quits")
    with httpx.Client(headers=headers, timeout=httpx.Timeout(None, connect=10)) as client:
        session = ChatSession(client, base_url, model, system)
        while True:
            try:
                text = read_message(input, interactive).strip()
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo("", err=True)
                if not interactive:
                    break
                say("(Ctrl-D or /bye quits)")
                continue
            if not text:
                continue
            if text.startswith("/"):
                if not session.command(text):
                    break
                continue
            session.send(session.user_message(text))


def run_chat(model: str, base_url: str, api_key: str | None, system: str | None) -> None:
    base_url = base_url.rstrip("/")
    # --api-key, else LLAMASERVE_API_KEY (click reads it), else the OpenAI SDK's variable
    api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    process = None
    if not _check_server(base_url, headers):
        say(f"no server at {base_url}: starting `llamaserve run {model}`")
        process, base_url = start_server(model, headers)
    try:
        chat_loop(base_url, model, api_key, system)
    finally:
        if process is not None:
            process.terminate()
            process.wait()
