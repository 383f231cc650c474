"""The dashboard (`orchestrator web`): the status snapshot, batches and their jobs in a
browser, live, with the control actions behind a token.

`app` is the routes and the JSON API; `hub` the reads shared by every open page; `guard`
the token, CSRF and host checks; `access` where it listens and its token; `server` the
socket and uvicorn; `timing` the `Server-Timing` header; `static/` the page.

May import: the core, control, dispatch, schedules, status.
"""
