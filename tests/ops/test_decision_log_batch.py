"""Decision lines are buffered for one loop iteration and written together (observe.py): under
concurrent requests every request still gets exactly one line, and a SIGTERM right after the
last answer loses none of them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from gateway.observe import log_request
from tests.support import captured_access_log, stop

from .test_metrics_logs import request_lines, serving, thread_upstream

REQUESTS = 96  # over many connections at once: several decisions end in one loop iteration


async def test_every_concurrent_request_has_one_line_and_sigterm_loses_none(tmp_path: Path) -> None:
    with thread_upstream() as up:
        async with serving(tmp_path, up) as gw:
            connector = aiohttp.TCPConnector(limit=REQUESTS)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i: int) -> int:
                    # Half allowed and forwarded, half refused by the pipeline: both kinds log.
                    target = "/v1/health" if i % 2 else "/v1/playlists"
                    headers = {"X-Request-Id": f"batch-{i}"}
                    async with session.get(f"http://127.0.0.1:{gw.port}{target}", headers=headers) as resp:
                        await resp.read()
                        return resp.status

                statuses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
            # SIGTERM at once: the lines of the last iteration are still buffered in the process.
            await asyncio.to_thread(stop, gw.proc, 12)
            assert gw.proc.returncode == 0, gw.log_text()
            text = gw.log_text()
    assert sorted(set(statuses)) == [200, 401]
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), line
    for i in range(REQUESTS):
        lines = request_lines(text, f"batch-{i}")
        assert len(lines) == 1, (i, lines)
        assert lines[0]["status"] == statuses[i]


def test_a_batch_left_by_a_stopped_loop_is_written_before_the_next_line() -> None:
    # A loop stopped in the iteration that logged: its flush never runs (asyncio does not run
    # what is scheduled after the stop). The next line, on another loop, writes both in order.
    first, second = {"request_id": "left-behind"}, {"request_id": "next-loop"}
    with captured_access_log(lambda line: line) as lines:
        old = asyncio.new_event_loop()
        try:

            def log_and_stop() -> None:
                log_request(first)
                old.stop()

            old.call_soon(log_and_stop)
            old.run_forever()
        finally:
            old.close()
        assert lines == []  # buffered, its flush lost with the loop

        async def log_one() -> None:
            log_request(second)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        asyncio.run(log_one())
    assert [json.loads(line)["request_id"] for line in lines] == ["left-behind", "next-loop"]
