"""The PostgreSQL coordinator rides out a server that goes away: restarts between calls and during
one, connections lost while COMMIT was on its way (looked up, never blindly repeated), within a
bounded budget; errors that asking again cannot mend are not retried.

A server of this module's own (tests/pg.py's binaries): the tests stop and start it, which the
session's shared server must not see. Calls and restarts are synchronised by conditions (the
store's retry counter, the server's state), never by sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from helpers import wait_for
from pg import Restartable, private_server

from launcher.adapters.store.postgres import PostgresCoordinator
from launcher.adapters.store.sql.dialect import Cursor
from launcher.errors import StateStoreError
from launcher.models import NewTask

pytestmark = pytest.mark.slow

DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def own_server(request: pytest.FixtureRequest) -> Iterator[Restartable]:
    with private_server(request.config, "launcher-pg-restart-") as server:
        yield Restartable(server)


@pytest.fixture
def url(own_server: Restartable) -> Iterator[str]:
    """A fresh database on the module's server, which is up before and after the test."""
    if not own_server.up():
        own_server.start()
    with own_server.server.database() as url:
        yield url
        if not own_server.up():  # a test that ends with the server down: up again, to drop its database
            own_server.start()


@pytest.fixture
def server(own_server: Restartable, url: str) -> Restartable:
    return own_server


def new_task(slug: str = "fix") -> NewTask:
    return NewTask(
        prefix="demo",
        slug=slug,
        title=slug,
        repo="demo",
        repo_path="/src/demo",
        image="launcher/agent-base:latest",
        command=["true"],
        doc={"title": slug, "status": "active"},
    )


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def numbers(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT number FROM tasks ORDER BY number").fetchall()]


# -- restarts ---------------------------------------------------------------------------------


def test_a_restart_between_two_calls_is_ridden_out(server: Restartable, url: str) -> None:
    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        task = store.create_task(new_task())
        server.stop()
        server.start()
        started = time.monotonic()
        assert store.get_task(task.id) == task, "the first call after the restart answers"
        assert store.create_task(new_task("after")).number == 2
        assert store.dialect.retries >= 1, "the dropped connection was retried, not reported"
        print(f"first call after a restart took {time.monotonic() - started:.2f}s")


def test_a_call_made_while_the_server_is_down_waits_for_it(server: Restartable, url: str) -> None:
    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        store.create_task(new_task())
        server.stop()
        thread, outcome = in_thread(lambda: store.create_task(new_task("meanwhile")))
        wait_for(
            lambda: store.dialect.retries >= 2,
            timeout=DEADLINE_S,
            what="the call to retry the stopped server",
            interval=0.01,
        )
        assert thread.is_alive(), f"the call ended while the server was down: {outcome}"
        down_for = time.monotonic()
        server.start()
        thread.join(DEADLINE_S)
        assert not thread.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert outcome["value"].number == 2
        print(f"answered {time.monotonic() - down_for:.2f}s after the server was back ({outcome['seconds']:.2f}s)")
    assert numbers(url) == [1, 2], "made once, whatever the retries"


def test_a_server_shut_down_in_the_middle_of_a_transaction_reruns_it(server: Restartable, url: str) -> None:
    """The body is stopped inside its transaction while the server shuts down (-m fast: its
    backend is terminated, the transaction rolled back); the retry runs the whole body again."""
    inside, go_on = threading.Event(), threading.Event()
    calls = 0
    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        store.create_task(new_task())

        def body(cur: Cursor) -> int:
            nonlocal calls
            calls += 1
            cur.execute("UPDATE tasks SET title = ? WHERE number = 1", (f"try {calls}",))
            if calls == 1:
                inside.set()
                assert go_on.wait(DEADLINE_S)
            return calls

        thread, outcome = in_thread(lambda: store.dialect.write(body))
        assert inside.wait(DEADLINE_S)
        server.stop()  # terminates the backend that holds the open transaction
        go_on.set()
        wait_for(
            lambda: store.dialect.retries >= 1,
            timeout=DEADLINE_S,
            what="the interrupted transaction to be retried",
            interval=0.01,
        )
        server.start()
        thread.join(DEADLINE_S)
        assert outcome.get("value") == 2, outcome
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT title FROM tasks WHERE number = 1").fetchone() == ("try 2",)


# -- COMMIT sent, answer lost ---------------------------------------------------------------------


def _lose_commit(store: PostgresCoordinator, monkeypatch: pytest.MonkeyPatch, *, committed: bool) -> list[Any]:
    """The next COMMIT of ``store`` is (or is not) carried out, and then its answer never comes."""
    kept: list[Any] = []
    original = psycopg.Connection.commit

    def commit(conn: psycopg.Connection[Any]) -> None:
        if conn is not store.dialect._conn:
            original(conn)
            return
        monkeypatch.setattr(psycopg.Connection, "commit", original)
        if committed:
            original(conn)
            conn.close()
            raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")
        # Not committed, and the backend has not noticed we are gone: its transaction stays open.
        kept.append(conn)
        store.dialect._conn = None
        raise psycopg.errors.ConnectionFailure("could not receive data from server: Connection timed out")

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    return kept


def test_a_commit_that_went_through_unanswered_is_not_made_twice(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        store.create_task(new_task())
        _lose_commit(store, monkeypatch, committed=True)
        made = store.create_task(new_task("once"))
        assert made.number == 2
        assert store.dialect.retries == 1, "looked up once"
    assert numbers(url) == [1, 2], "the lost answer did not make a second task"


def test_a_commit_that_never_arrived_is_run_again_after_its_backend_is_ended(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        store.create_task(new_task())
        kept = _lose_commit(store, monkeypatch, committed=False)
        made = store.create_task(new_task("again"))
        assert made.number == 2, "the open transaction (number 2) was ended, then run again"
        assert kept, "the commit was intercepted"
        assert store.dialect.retries == 2, "looked up: still open (so its backend was ended), then aborted"
        with pytest.raises(psycopg.OperationalError):
            kept[0].execute("SELECT 1")  # that backend is gone
    assert numbers(url) == [1, 2]


# -- what is not retried, and for how long -----------------------------------------------------


def test_a_statement_error_is_not_retried(url: str) -> None:
    calls = 0

    def body(cur: Cursor) -> None:
        nonlocal calls
        calls += 1
        cur.execute("SELECT * FROM no_such_table")

    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        started = time.monotonic()
        with pytest.raises(StateStoreError, match="not a launcher database"):
            store.dialect.write(body)
        assert calls == 1
        assert store.dialect.retries == 0
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda u: u.replace("launcher@", "nobody@"), 'role "nobody" does not exist'),
        (lambda u: u.rsplit("/", 1)[0] + "/no_such_db", 'database "no_such_db" does not exist'),
    ],
    ids=["unknown-role", "unknown-database"],
)
def test_a_connection_refused_for_good_is_not_retried(url: str, change: Callable[[str], str], message: str) -> None:
    started = time.monotonic()
    with pytest.raises(StateStoreError, match="cannot connect to the PostgreSQL state store") as caught:
        PostgresCoordinator(change(url), reconnect_seconds=30)
    assert message in str(caught.value)
    assert time.monotonic() - started < 5, "said at once, not after the reconnect budget"


def test_conflicts_are_retried_a_few_times_then_reported(url: str) -> None:
    calls = 0

    def body(cur: Cursor) -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return calls

    def always(cur: Cursor) -> None:
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with PostgresCoordinator(url, reconnect_seconds=30) as store:
        assert store.dialect.write(body) == 3
        with pytest.raises(StateStoreError, match="collided with others"):
            store.dialect.write(always)


def test_a_server_that_stays_down_fails_after_the_budget_saying_what_to_do(server: Restartable, url: str) -> None:
    with PostgresCoordinator(url, reconnect_seconds=2) as store:
        task = store.create_task(new_task())
        server.stop()
        started = time.monotonic()
        with pytest.raises(StateStoreError) as caught:
            store.get_task(task.id)
        waited = time.monotonic() - started
    text = str(caught.value)
    assert 1.0 <= waited <= 5.0, f"gave up after {waited:.2f}s for a 2 s budget"
    assert "lost the connection to the PostgreSQL state store" in text or "cannot connect" in text, text
    assert "retried for 2s" in text
    assert caught.value.hint is not None
    assert "reconnect_seconds" in caught.value.hint
    assert "LAUNCHER_RECONNECT_SECONDS" in caught.value.hint
    print(f"gave up after {waited:.2f}s (budget 2 s)")


def test_closing_the_store_ends_a_call_that_waits_for_the_server(server: Restartable, url: str) -> None:
    store = PostgresCoordinator(url, reconnect_seconds=60)
    task = store.create_task(new_task())
    server.stop()
    thread, outcome = in_thread(lambda: store.get_task(task.id))
    wait_for(
        lambda: store.dialect.retries >= 1, timeout=DEADLINE_S, what="the call to wait for the server", interval=0.01
    )
    store.close()
    thread.join(DEADLINE_S)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), StateStoreError)
    assert "closed" in str(outcome["error"])
    assert outcome["seconds"] < 30


def test_the_budget_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHER_RECONNECT_SECONDS", "7.5")
    with PostgresCoordinator(url) as store:
        assert store.dialect.reconnect_seconds == 7.5
    monkeypatch.setenv("LAUNCHER_RECONNECT_SECONDS", "soon")
    with pytest.raises(Exception, match="LAUNCHER_RECONNECT_SECONDS"):
        PostgresCoordinator(url)
