"""`llamaserve chat`: an interactive terminal chat against a running server (or one it starts).

It speaks the OpenAI API like any client, so it works against any llamaserve (or other
OpenAI-compatible server); replies stream as they come and Ctrl-C stops one.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

HELP = """commands: /image PATH (attach an image to your next message), /system TEXT,
/reset (forget the conversation), /exit; Ctrl-C stops a reply, Ctrl-D or /exit quits."""


def _reachable(base_url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(f"{base_url}/models", headers=headers, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(model: str) -> tuple[subprocess.Popen[bytes], str]:
    """`llamaserve run MODEL` on a free local port, once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "llamaserve", "run", model, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    while not _reachable(base_url, {}):
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
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text
            raise click.ClickException(f"the server answered {response.status_code}: {message}")
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[len("data: "):])
            if "error" in chunk:
                raise click.ClickException(chunk["error"]["message"])
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    yield text


def chat_loop(base_url: str, model: str, api_key: str | None, system: str | None) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    interactive = sys.stdin.isatty()
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    pending_images: list[dict[str, Any]] = []
    if interactive:
        click.echo(f"chatting with {model} at {base_url}\n{HELP}", err=True)
    with httpx.Client(headers=headers, timeout=None) as client:
        while True:
            try:
                line = input(">>> " if interactive else "")
            except EOFError:
                break
            except KeyboardInterrupt:
                click.echo("", err=True)
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit", "/bye"):
                break
            if text == "/reset":
                messages = [m for m in messages if m["role"] == "system"]
                pending_images.clear()
                click.echo("(conversation forgotten)", err=True)
                continue
            if text.startswith("/system"):
                messages = [m for m in messages if m["role"] != "system"]
                messages.insert(0, {"role": "system", "content": text[len("/system"):].strip()})
                click.echo("(system message set)", err=True)
                continue
            if text.startswith("/image"):
                try:
                    pending_images.append(image_part(text[len("/image"):].strip()))
                except click.ClickException as exc:
                    click.echo(f"error: {exc.message}", err=True)
                    continue
                click.echo(f"({len(pending_images)} image(s) attached to your next message)",
                           err=True)
                continue
            if text.startswith("/"):
                click.echo(HELP, err=True)
                continue
            content: Any = text
            if pending_images:
                content = [{"type": "text", "text": text}, *pending_images]
                pending_images = []
            messages.append({"role": "user", "content": content})
            reply: list[str] = []
            try:
                for piece in stream_reply(client, base_url,
                                          {"model": model, "messages": messages,
                                           "stream": True}):
                    reply.append(piece)
                    click.echo(piece, nl=False)
            except KeyboardInterrupt:
                click.echo(" [stopped]", nl=False)  # closing the stream stops the generation
            except click.ClickException as exc:
                messages.pop()
                click.echo(f"error: {exc.message}", err=True)
                continue
            click.echo()
            messages.append({"role": "assistant", "content": "".join(reply)})


def run_chat(model: str, base_url: str, api_key: str | None, system: str | None) -> None:
    base_url = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    process = None
    if not _reachable(base_url, headers):
        click.echo(f"no server at {base_url}: starting `llamaserve run {model}`", err=True)
        process, base_url = start_server(model)
    try:
        chat_loop(base_url, model, api_key or os.environ.get("OPENAI_API_KEY"), system)
    finally:
        if process is not None:
            process.terminate()
            process.wait()
