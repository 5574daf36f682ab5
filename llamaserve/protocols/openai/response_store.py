"""Stored responses of /v1/responses, for `previous_response_id`, GET, DELETE and input_items.

A record is one response object and the input items it was generated from (the earlier
turns' included), as JSON. The store is bounded: beyond `capacity` records the least recently
used (created or read) are dropped. Two kinds, the same behaviour:

- `MemoryStore` (the default): an ordered dict, gone with the process. It also keeps at most
  `max_bytes` of JSON, since every request is stored by default and one may carry images of
  many megabytes as data URIs.
- `SQLiteStore` (`--state-dir DIR`): `DIR/responses.sqlite3` through the standard library, so
  conversations survive a restart. Its calls run in a worker thread (`asyncio.to_thread`),
  never on the event loop; one connection, one lock.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

Record = dict[str, Any]  # {"response": {...}, "input_items": [...]}

STATE_FILE = "responses.sqlite3"
MEMORY_BUDGET = 256 * 1024 * 1024  # bytes of JSON the memory store keeps at most


class StoreError(Exception):
    """The state directory cannot hold the store."""


class ResponseStore(Protocol):
    async def put(self, response_id: str, record: Record) -> None: ...

    async def get(self, response_id: str) -> Record | None: ...

    async def delete(self, response_id: str) -> bool: ...

    def close(self) -> None: ...


class MemoryStore:
    def __init__(self, capacity: int, max_bytes: int = MEMORY_BUDGET) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        # JSON text, as on disk: a caller cannot change a stored record by editing what it got
        self._records: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0

    async def put(self, response_id: str, record: Record) -> None:
        text = json.dumps(record)
        await self.delete(response_id)
        self._records[response_id] = text
        self._bytes += len(text)
        # the newest record stays even alone over the budget: it is the one being answered
        while len(self._records) > 1 and (len(self._records) > self.capacity
                                          or self._bytes > self.max_bytes):
            _, dropped = self._records.popitem(last=False)
            self._bytes -= len(dropped)

    async def get(self, response_id: str) -> Record | None:
        text = self._records.get(response_id)
        if text is None:
            return None
        self._records.move_to_end(response_id)
        return json.loads(text)

    async def delete(self, response_id: str) -> bool:
        text = self._records.pop(response_id, None)
        if text is not None:
            self._bytes -= len(text)
        return text is not None

    def __len__(self) -> int:
        return len(self._records)

    def close(self) -> None:
        self._records.clear()
        self._bytes = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    used INTEGER NOT NULL  -- time.time_ns() of the last put or get: the LRU order
);
CREATE INDEX IF NOT EXISTS responses_by_use ON responses (used);
"""


class SQLiteStore:
    def __init__(self, directory: Path, capacity: int) -> None:
        self.capacity = capacity
        self.path = directory / STATE_FILE
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None)  # autocommit; BEGIN when needed
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot keep responses in {self.path}: {exc}. Pick another "
                             "--state-dir, or move that file away.") from exc
        self._lock = threading.Lock()

    def _put(self, response_id: str, text: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO responses (id, record, used) "
                             "VALUES (?, ?, ?)", (response_id, text, time.time_ns()))
            # all but the `capacity` most recently used
            self._db.execute("DELETE FROM responses WHERE id IN (SELECT id FROM responses "
                             "ORDER BY used DESC LIMIT -1 OFFSET ?)", (self.capacity,))
            self._db.execute("COMMIT")

    def _get(self, response_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM responses WHERE id = ?",
                                   (response_id,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE responses SET used = ? WHERE id = ?",
                                 (time.time_ns(), response_id))
        return None if row is None else row[0]

    def _delete(self, response_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
        return cursor.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    async def put(self, response_id: str, record: Record) -> None:
        await asyncio.to_thread(self._put, response_id, json.dumps(record))

    async def get(self, response_id: str) -> Record | None:
        text = await asyncio.to_thread(self._get, response_id)
        return None if text is None else json.loads(text)

    async def delete(self, response_id: str) -> bool:
        return await asyncio.to_thread(self._delete, response_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_store(state_dir: Path | None, capacity: int) -> ResponseStore:
    return MemoryStore(capacity) if state_dir is None else SQLiteStore(state_dir, capacity)
