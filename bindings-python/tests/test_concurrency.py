"""Threads, a running event loop, fork and Ctrl-C."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import cibmtr_fhir as cf

from conftest import in_forked_child, lab


def test_16_threads_sharing_one_client_make_one_token_request(sb: cf.Sandbox, okta: dict) -> None:
    client = sb.cibmtr_client()
    barrier = threading.Barrier(16)

    def work(i: int) -> tuple:
        barrier.wait()
        crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
        patient = client.ensure_patient(crid)
        sub = client.submit_lab(crid, lab(float(i)))
        return crid, patient, sub.status

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    assert sb.token_requests(okta["client_id"]) == 1
    assert len({r[0] for r in results}) == 1 and len({r[1] for r in results}) == 1
    assert [r[2] for r in results] == ["created"] * 16
    assert len(sb.patients()) == 1 and len(sb.observations()) == 16


def test_threads_really_run_in_parallel_with_the_gil_released(sb: cf.Sandbox) -> None:
    sb.set_fault("crid", delay=0.5)
    client = sb.cibmtr_client()
    client.fhir.capabilities()  # token first
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.register_crid("Al", f"Bo{chr(97 + i)}", "1970-01-31", "M"), range(8)))
    assert time.monotonic() - started < 2.0  # 8 x 0.5 s would be 4 s if calls held the GIL


def test_blocking_call_inside_a_running_event_loop(sb: cf.Sandbox) -> None:
    client = sb.cibmtr_client()

    async def notebook_cell() -> tuple:
        assert asyncio.get_running_loop().is_running()  # as in Jupyter
        ticks = []
        ticker = asyncio.ensure_future(asyncio.sleep(0))
        crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
        report = client.submit_labs(crid, [lab(1.0), lab(2.0)])
        ticks.append(await ticker)
        return crid, report.created

    crid, created = asyncio.run(notebook_cell())
    assert crid > 0 and created == 2


def test_forked_child_makes_its_own_requests(sb: cf.Sandbox, okta: dict) -> None:
    client = sb.cibmtr_client()
    crid = client.register_crid("Jane", "Doe", "1970-01-31", "F")
    client.submit_lab(crid, lab(1.0))

    def child(out: dict) -> None:
        started = time.monotonic()
        try:
            client.observations(crid)
            out["inherited"] = "worked"
        except cf.ConfigError as e:
            out["inherited"] = f"ConfigError after {time.monotonic() - started:.2f}s: {e}"
        own = sb.cibmtr_client()
        out["status"] = own.submit_lab(crid, lab(2.0)).status
        out["observations"] = len(own.observations(crid))
        out["token"] = bool(own.fhir.capabilities())

    out = in_forked_child(child)
    # An object built before the fork works in the child: the core's HTTP pool is per process.
    assert out["inherited"] == "worked", out
    assert out["status"] == "created" and out["observations"] == 2
    # The parent goes on with its own objects and sees the child's lab (the server is here).
    assert len(client.observations(crid)) == 2
    assert client.submit_lab(crid, lab(2.0)).status == "already_present"
    # Parent: one token request; the child built its own client and asked once.
    assert sb.token_requests(okta["client_id"]) == 2


def test_ctrl_c_interrupts_a_blocked_call(sb: cf.Sandbox) -> None:
    sb.set_fault("okta_token", delay=10.0)
    auth = sb.password_grant()
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        auth.token()
    assert time.monotonic() - started < 2.0
    timer.join()


def test_the_interpreter_exits_cleanly_right_after_awaitables() -> None:
    # Runtime threads complete awaitables with the GIL; one still doing so while the interpreter
    # finalizes used to crash the process at exit (about one run in four of this example).
    import subprocess
    import sys

    from conftest import REPO

    example = str(REPO / "examples" / "python" / "asyncio_fhir.py")
    codes = [subprocess.run([sys.executable, example], capture_output=True).returncode for _ in range(12)]
    assert codes == [0] * 12
