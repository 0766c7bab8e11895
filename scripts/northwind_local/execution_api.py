"""Airflow's in-process execution API, made ready once in the process that forks the tasks.

Each task process talks to the execution API in its own process (as ``dag.test()`` does). The API
is a Cadwyn app that builds the routes of every API version it knows on its first request: seconds
of CPU, which each forked task paid before its step could start. Here the parent builds the app
and serves it one request, so every child inherits the finished routes (copy-on-write).
"""

import asyncio

#: A path no route matches: the warm-up request touches neither the DB nor a thread.
WARM_UP_PATH = "/northwind-local/warm-up"


def build_execution_api() -> None:
    """Build the in-process execution API and its routes, before any fork.

    (The API's transport starts a thread, so that part is left to each child.)

    Raises:
        RuntimeError: If the app does not answer the warm-up request with 404.
    """
    from airflow.sdk.execution_time import task_runner  # noqa: F401 - imported once, before forks
    from airflow.sdk.execution_time.supervisor import in_process_api_server

    app = in_process_api_server().app
    statuses = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        statuses.extend([message["status"]] if "status" in message else [])

    # A loop of its own that ends with the request: no thread crosses the fork.
    asyncio.run(app(warm_up_request(), receive, send))
    if statuses != [404]:
        raise RuntimeError(f"the execution API answered its warm-up request with {statuses}")


def warm_up_request() -> dict:
    """The ASGI scope of a GET that no route of the execution API matches."""
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "server": ("in-process.invalid.", 80), "client": None, "root_path": "",
        "path": WARM_UP_PATH, "raw_path": WARM_UP_PATH.encode(), "query_string": b"", "headers": [],
    }
