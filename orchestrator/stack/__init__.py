"""Running it here: the whole stack on one machine, and how other commands find it.

`local` starts and stops Redis, a conductor, a worker per pool and the dashboard as
child processes (`up`); `record` is how other commands find a running `up`;
`redis_server` the embedded Redis; `demo` the newcomer's first run.

May import: the core, dispatch, scaling, status, verify, web.
"""
