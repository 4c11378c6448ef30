"""What ``MaltiMiddleware(app)(scope, receive, send)`` returns.

``__call__`` returns the request's awaitable (it is a compiled method with the compiled
module, a plain function without): with the compiled module a ``_speedups.Call`` (no coroutine frame of the middleware in the request's await
chain), else the ``_serve`` coroutine. Servers, asyncio and anyio must take either as they
took an ``async def __call__``'s coroutine, and recording must not change.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys

import anyio
import pytest
import uvicorn.config

from malti_sdk import MaltiMiddleware

pytestmark = pytest.mark.usefixtures("request_path")


class Boom(Exception):
    pass


def rows(system):
    return [(r[1], r[2]) for r in system.batch_sender.buffer.rows]


@pytest.fixture
def system(make_system):
    return make_system(malti_url="http://127.0.0.1:9", batch_interval=3600, shutdown_timeout=0, clean_mode=False)


def scope(path="/x"):
    return {"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"", "headers": []}


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message):
    pass


async def ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})
    return "ignored"  # ASGI apps return None; the middleware returns None either way


def test_servers_take_call_for_a_coroutine_function(system):
    app = MaltiMiddleware(ok, telemetry_system=system)
    assert asyncio.iscoroutinefunction(MaltiMiddleware.__call__)
    assert asyncio.iscoroutinefunction(app.__call__)  # how uvicorn tells ASGI 3 from 2
    if sys.version_info >= (3, 12):  # inspect.markcoroutinefunction exists from 3.12
        assert inspect.iscoroutinefunction(app.__call__)
    config = uvicorn.config.Config(app)
    config.load()
    assert config.interface == "asgi3"


async def test_call_is_called_as_a_method_in_every_way(system):
    """With the compiled module __call__ is a CallMethod reading the middleware's own app
    and _cell; bound, unbound, by keyword, from a subclass's super(), it records as the
    Python function does, and answers wrong arguments and a missing app as it did."""
    app = MaltiMiddleware(ok, telemetry_system=system)
    assert list(inspect.signature(MaltiMiddleware.__call__).parameters) == ["self", "scope", "receive", "send"]
    assert MaltiMiddleware.__call__.__qualname__ == "MaltiMiddleware.__call__"
    assert "MaltiMiddleware.__call__" in repr(MaltiMiddleware.__call__)
    await MaltiMiddleware.__call__(app, scope("/unbound"), receive, send)
    await app.__call__(scope("/bound"), receive, send)
    await app(scope=scope("/keywords"), receive=receive, send=send)

    class Wrapping(MaltiMiddleware):
        async def __call__(self, scope, receive, send):
            scope["path"] = "/wrapped"
            await super().__call__(scope, receive, send)

    await Wrapping(ok, telemetry_system=system)(scope("/x"), receive, send)

    async def created(scope, receive, send):
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.app = created  # replaced after construction: the new one is called
    await app(scope("/replaced"), receive, send)
    assert rows(system) == [("<unmatched>", 201)] * 4 + [("<unmatched>", 202)]
    with pytest.raises(TypeError):
        app(scope("/x"), receive)
    with pytest.raises(TypeError):
        app(scope("/x"), receive, send, None)
    with pytest.raises(TypeError):
        MaltiMiddleware.__call__()

    class NoInit(MaltiMiddleware):
        def __init__(self):
            pass  # a subclass that skips ours and sets no app

    with pytest.raises(AttributeError):  # compiled: when called; Python: when awaited
        await NoInit()(scope("/x"), receive, send)
    assert len(rows(system)) == 5


async def test_app_or_cell_replaced_during_the_call(system):
    """make_call() runs Python code (the scope's look-ups, the app itself) while it holds
    the middleware's app and _cell: a replacement must not free them under it."""

    class Root(str):
        def __bool__(self):
            middleware.app = None  # drops the app about to be called
            garbage.extend(bytearray(80) for _ in range(2000))
            return False

    class Cell(list):  # not recycled through the list free list
        pass

    def replacing_app(scope, receive, send):
        middleware._cell = None  # drops the cell the Call is about to keep
        garbage.extend(bytearray(64) for _ in range(2000))
        return ok(scope, receive, send)

    class App:
        async def __call__(self, scope, receive, send):
            await ok(scope, receive, send)

    garbage = []
    middleware = MaltiMiddleware(App(), telemetry_system=system)
    try:
        await middleware({**scope("/a"), "root_path": Root("")}, receive, send)
    except TypeError:  # the Python path reads self.app later: None, not callable
        pass
    middleware = MaltiMiddleware(replacing_app, telemetry_system=system)
    middleware._cell = Cell([None])
    awaitable = middleware(scope("/b"), receive, send)
    gc.collect()
    await awaitable
    assert rows(system)[-1] == ("<unmatched>", 201)


async def test_the_middleware_copies_pickles_and_wraps(system):
    import copy
    import functools
    import pickle

    app = MaltiMiddleware(ok, auto_inject_lifespan=False)
    for twin in (copy.copy(app), copy.deepcopy(app), pickle.loads(pickle.dumps(app))):
        assert twin.app is ok and twin.auto_inject_lifespan is False
    twin = copy.copy(MaltiMiddleware(ok, telemetry_system=system))
    await twin(scope("/copied"), receive, send)
    assert rows(system) == [("<unmatched>", 201)]

    class Decorated(MaltiMiddleware):
        @functools.wraps(MaltiMiddleware.__call__)
        def __call__(self, scope, receive, send):
            return super().__call__(scope, receive, send)

    decorated = Decorated(ok, telemetry_system=system)
    assert asyncio.iscoroutinefunction(decorated.__call__)
    config = uvicorn.config.Config(decorated)
    config.load()
    assert config.interface == "asgi3"
    await decorated(scope("/decorated"), receive, send)
    assert len(rows(system)) == 2


def test_asyncio_run_takes_the_call(system):
    awaitable = MaltiMiddleware(ok, telemetry_system=system)(scope(), receive, send)
    assert asyncio.iscoroutine(awaitable) and inspect.isawaitable(awaitable)
    assert asyncio.run(awaitable) is None
    assert rows(system) == [("<unmatched>", 201)]


async def test_tasks_gather_and_anyio_take_the_call(system):
    app = MaltiMiddleware(ok, telemetry_system=system)
    task = asyncio.create_task(app(scope(), receive, send))
    assert "MaltiMiddleware." in repr(task)
    assert await task is None
    assert await asyncio.gather(app(scope(), receive, send), app(scope(), receive, send)) == [None, None]
    async with anyio.create_task_group() as group:
        group.start_soon(app, scope(), receive, send)
    assert rows(system) == [("<unmatched>", 201)] * 4


async def test_nested_middlewares_each_record(system):
    app = MaltiMiddleware(MaltiMiddleware(ok, telemetry_system=system), telemetry_system=system)
    assert await app(scope(), receive, send) is None
    assert rows(system) == [("<unmatched>", 201)] * 2


async def test_an_app_raising_when_called_raises_when_awaited_and_is_recorded(system):
    error = Boom("at call")

    def raising(scope, receive, send):  # not async: raises before any awaitable exists
        raise error

    awaitable = MaltiMiddleware(raising, telemetry_system=system)(scope(), receive, send)
    assert rows(system) == []
    with pytest.raises(Boom) as caught:
        await awaitable
    assert caught.value is error
    assert rows(system) == [("<unmatched>", 500)]


async def test_other_awaitables_are_awaited_and_non_awaitables_fail_as_await_does(system):
    def future_app(scope, receive, send):
        future = asyncio.get_running_loop().create_future()
        future.set_result("from a future")
        return future

    assert await MaltiMiddleware(future_app, telemetry_system=system)(scope(), receive, send) is None
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        await MaltiMiddleware(lambda s, r, se: None, telemetry_system=system)(scope(), receive, send)
    # no response was sent by either: the server answers 500
    assert rows(system) == [("<unmatched>", 500)] * 2


async def test_cancellation_propagates_and_records_nothing(system):
    started = asyncio.Event()

    async def slow(scope, receive, send):
        started.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(MaltiMiddleware(slow, telemetry_system=system)(scope(), receive, send))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rows(system) == []


async def test_an_app_that_handles_a_thrown_exception_completes_and_is_recorded(system):
    started = asyncio.Event()

    async def handles(scope, receive, send):
        try:
            started.set()
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return "handled"

    task = asyncio.create_task(MaltiMiddleware(handles, telemetry_system=system)(scope(), receive, send))
    await started.wait()
    task.cancel()
    assert await task is None
    assert rows(system) == [("<unmatched>", 503)]


async def test_an_exception_after_the_response_started_is_recorded_and_the_same_object(system):
    error = Boom("late")

    async def late(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    with pytest.raises(Boom) as caught:
        await MaltiMiddleware(late, telemetry_system=system)(scope(), receive, send)
    assert caught.value is error
    assert rows(system) == [("<unmatched>", 500)]


def test_close_abandons_the_request_and_records_nothing(system):
    awaitable = MaltiMiddleware(ok, telemetry_system=system)(scope(), receive, send)
    awaitable.close()
    awaitable.close()  # again: nothing left to close
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        awaitable.send(None)
    assert rows(system) == []


def test_driven_by_hand_it_behaves_as_a_coroutine(system):
    """send/throw as asyncio's Task and a server's await chain use them."""
    app = MaltiMiddleware(ok, telemetry_system=system)
    awaitable = app(scope(), receive, send)
    with pytest.raises(StopIteration) as stop:
        awaitable.send(None)  # ok() never suspends: it runs to its end at once
    assert stop.value.value is None
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        awaitable.send(None)
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        awaitable.throw(Boom("after"))

    class Suspends:
        def __await__(self):
            return (yield "suspended")

    async def twice(scope, receive, send):
        value = await Suspends()
        try:
            await Suspends()
        except Boom:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            assert value == "first answer"

    awaitable = MaltiMiddleware(twice, telemetry_system=system)(scope(), receive, send)
    assert awaitable.send(None) == "suspended"
    assert awaitable.send("first answer") == "suspended"
    with pytest.raises(StopIteration) as stop:
        awaitable.throw(Boom("handled by the app"))
    assert stop.value.value is None
    assert rows(system) == [("<unmatched>", 201), ("<unmatched>", 202)]


def test_resuming_it_from_inside_itself_is_refused(system):
    holder = {}

    async def reentrant(scope, receive, send):
        with pytest.raises(ValueError, match="already executing"):
            holder["awaitable"].send(None)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    awaitable = holder["awaitable"] = MaltiMiddleware(reentrant, telemetry_system=system)(scope(), receive, send)
    with pytest.raises(StopIteration):
        awaitable.send(None)
    assert rows(system) == [("<unmatched>", 200)]
    del holder["awaitable"], awaitable


def test_an_awaitable_never_awaited_is_freed_with_the_usual_warning(system):
    app = MaltiMiddleware(ok, telemetry_system=system)
    with pytest.warns(RuntimeWarning, match="was never awaited"):
        app(scope(), receive, send)
        gc.collect()
    assert rows(system) == []


def test_a_call_in_a_reference_cycle_is_collected(system):
    import weakref

    class Marker:
        pass

    marker = Marker()
    request = {**scope(), "marker": marker}
    request["awaitable"] = MaltiMiddleware(ok, telemetry_system=system)(request, receive, send)
    request["awaitable"].close()  # (no never-awaited warning)
    alive = weakref.ref(marker)
    del marker, request
    gc.collect()
    assert alive() is None


async def test_the_middleware_keeps_its_attributes_inline(system):
    """CPython 3.11+ specialises __call__'s reads of self.app and self._cell only while the
    middleware's attributes stay inline in the object: once its __dict__ was asked for (as
    _routes once did), each became a generic look-up on every request. An object whose
    attributes are inline shows the collector their values; one with a __dict__, the dict."""
    import platform

    if platform.python_implementation() != "CPython" or sys.version_info < (3, 11):
        pytest.skip("inline attributes are CPython 3.11+'s")
    if sys.version_info >= (3, 13) and MaltiMiddleware.__base__.__module__ == "malti_sdk._speedups":
        # 3.13 keeps attributes inline only for classes whose bases add no C fields; the
        # compiled path reads app and _cell from those fields, not through attributes
            pytest.skip("3.13+: a subclass of the compiled base keeps a __dict__")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def user(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/users/{user_id}", user)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    for i in range(20):  # the full path (route index, snapshot), then the common case
        await app({**scope(f"/users/{i}"), "app": app}, receive, send)
    layer = app.middleware_stack
    while not isinstance(layer, MaltiMiddleware):
        layer = layer.app
    assert layer._snapshot is not None and layer._route_resolver is not None
    assert not any(type(referent) is dict for referent in gc.get_referents(layer))
    assert rows(system)[-1] == ("/users/{user_id}", 200)


class _Steps:
    """An iterator with neither throw() nor close(): what some awaitables' __await__ returns."""

    def __init__(self, *values):
        self.values = list(values)

    def __iter__(self):
        return self

    def __next__(self):
        if not self.values:
            raise StopIteration
        return self.values.pop(0)


class _AwaitsSteps:
    def __init__(self, *values):
        self.values = values

    def __await__(self):
        return _Steps(*self.values)


def test_an_awaitable_apps_iterator_is_resumed_as_await_resumes_it(system):
    app = MaltiMiddleware(lambda s, r, se: _AwaitsSteps("one", "two"), telemetry_system=system)
    awaitable = app(scope(), receive, send)
    assert awaitable.send(None) == "one"
    assert awaitable.send(None) == "two"
    with pytest.raises(StopIteration):
        awaitable.send(None)  # it ended without a response: 500, as the server answers
    # throw() into an iterator without throw(): raised where the app is awaited
    awaitable = app(scope(), receive, send)
    assert awaitable.send(None) == "one"
    error = Boom("thrown")
    with pytest.raises(Boom) as caught:
        awaitable.throw(error)
    assert caught.value is error
    # close() of one without close(): let go of, nothing recorded
    awaitable = app(scope(), receive, send)
    assert awaitable.send(None) == "one"
    awaitable.close()
    assert rows(system) == [("<unmatched>", 500)] * 2


async def test_awaitables_that_cannot_be_awaited_fail_when_awaited(system):
    import types

    class ReturnsList:
        def __await__(self):
            return [1]  # not an iterator

    @types.coroutine
    def generator_based(scope, receive, send):
        yield from asyncio.sleep(0).__await__()

    for returns, error in [(lambda s, r, se: ReturnsList(), "non-iterator"), (lambda s, r, se: 42, "can't be used")]:
        awaitable = MaltiMiddleware(returns, telemetry_system=system)(scope(), receive, send)
        with pytest.raises(TypeError, match=error):
            await awaitable
    assert await MaltiMiddleware(generator_based, telemetry_system=system)(scope(), receive, send) is None
    assert rows(system) == [("<unmatched>", 500)] * 3


def test_a_cycle_through_an_awaitables_iterator_is_collected(system, request_path):
    """A request whose app keeps the request's awaitable, returns an awaitable that is not a
    coroutine and ignores the GeneratorExit of its finalizer once: collected, no crash (an
    extra coroutine wrapped around such awaitables made CPython 3.11 crash here)."""
    holder = {}

    class Suspend:
        def __await__(self):
            return (yield "suspended")

    async def inner():
        kept = holder["awaitable"]  # noqa: F841  the app refers to its own request's awaitable
        try:
            await Suspend()
        except GeneratorExit:
            pass
        await Suspend()

    async def outer():
        await inner()

    class Wrapped:
        def __init__(self, coroutine):
            self.coroutine = coroutine

        def __await__(self):
            return self.coroutine.__await__()

    awaitable = holder["awaitable"] = MaltiMiddleware(lambda s, r, se: Wrapped(outer()), telemetry_system=system)(
        scope(), receive, send
    )
    assert awaitable.send(None) == "suspended"
    holder.clear()
    del awaitable
    unraisable = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in unraisable] == [RuntimeError]  # "coroutine ignored GeneratorExit"
    # the collector's order decides whether that RuntimeError reaches the middleware first
    assert rows(system) in ([], [("<unmatched>", 500)])


class _Suspend:
    def __await__(self):
        return (yield "suspended")


class _no_warnings:
    def __enter__(self):
        import warnings

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self.catcher.__exit__(*exc)
        assert [str(w.message) for w in self.caught] == []


def test_before_it_starts_it_refuses_values_and_raises_what_is_thrown(system):
    app = MaltiMiddleware(ok, telemetry_system=system)
    awaitable = app(scope(), receive, send)
    with pytest.raises(TypeError, match="can't send non-None value to a just-started coroutine"):
        awaitable.send("value")
    with pytest.raises(StopIteration):  # the refusal changed nothing: it still runs the request
        awaitable.send(None)
    error = Boom("before")
    awaitable = app(scope(), receive, send)
    with _no_warnings():  # the app's coroutine, closed, does not warn it was never awaited
        with pytest.raises(Boom) as caught:
            awaitable.throw(error)
        assert caught.value is error
        awaitable = app(scope(), receive, send)
        awaitable.close()
        with pytest.raises(RuntimeError, match="cannot reuse"):
            awaitable.send(None)
        gc.collect()
    assert rows(system) == [("<unmatched>", 201)]  # only the request that ran


@pytest.mark.parametrize(
    "cleanup, raised, recorded",
    [
        ("raises", Boom, [("<unmatched>", 500)]),  # an Exception out of the app: a failed request
        ("ignores", RuntimeError, [("<unmatched>", 500)]),  # "coroutine ignored GeneratorExit"
        ("interrupts", KeyboardInterrupt, []),
        ("quiet", None, []),
    ],
)
def test_close_of_a_started_request(system, cleanup, raised, recorded):
    async def app(scope, receive, send):
        try:
            await _Suspend()
        except GeneratorExit:
            if cleanup == "raises":
                raise Boom("cleanup failed")
            if cleanup == "interrupts":
                raise KeyboardInterrupt
            if cleanup == "ignores":
                await _Suspend()
            raise

    awaitable = MaltiMiddleware(app, telemetry_system=system)(scope(), receive, send)
    assert awaitable.send(None) == "suspended"
    if raised is None:
        assert awaitable.close() is None
    else:
        with pytest.raises(raised):
            awaitable.close()
    with pytest.raises(RuntimeError, match="cannot reuse"):  # ended either way
        awaitable.send(None)
    assert rows(system) == recorded


async def test_a_scope_without_a_type_fails_when_awaited(system):
    awaitable = MaltiMiddleware(ok, telemetry_system=system)({"method": "GET"}, receive, send)
    with pytest.raises(KeyError, match="type"):
        await awaitable
    assert rows(system) == []


async def test_a_failure_of_the_common_case_is_logged_with_its_traceback(system, caplog):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    class State(dict):
        def __contains__(self, key):
            raise ValueError("state look-up failed")

    async def user(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/users/{user_id}", user)])
    app.add_middleware(MaltiMiddleware, telemetry_system=system)
    await app({**scope("/users/1"), "app": app}, receive, send)  # the full path: the snapshot
    caplog.set_level("DEBUG", logger="malti_sdk")
    await app({**scope("/users/2"), "app": app, "state": State(x=1)}, receive, send)
    assert system.get_stats()["dropped"].get("error") == 1
    failures = [r for r in caplog.records if r.getMessage() == "Malti: could not record a request"]
    assert failures and failures[0].exc_info and failures[0].exc_info[0] is ValueError


def test_its_state_reads_as_a_coroutines(system):
    """inspect.getcoroutinestate() (anyio asks it of the tasks it cancels) and cr_frame."""
    started = {}

    async def app(scope, receive, send):
        started["state"] = inspect.getcoroutinestate(holder["awaitable"])
        await _Suspend()

    holder = {}
    awaitable = holder["awaitable"] = MaltiMiddleware(app, telemetry_system=system)(scope(), receive, send)
    assert inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
    assert awaitable.send(None) == "suspended"
    assert started["state"] == inspect.CORO_RUNNING
    assert inspect.getcoroutinestate(awaitable) == inspect.CORO_SUSPENDED
    assert awaitable.cr_frame is not None
    awaitable.close()
    assert inspect.getcoroutinestate(awaitable) == inspect.CORO_CLOSED
    assert awaitable.cr_frame is None


async def test_anyio_cancels_a_task_group_running_requests(system):
    started = anyio.Event()

    async def slow(scope, receive, send):
        started.set()
        await anyio.sleep(30)

    app = MaltiMiddleware(slow, telemetry_system=system)
    async with anyio.create_task_group() as group:
        group.start_soon(app, scope(), receive, send)
        group.start_soon(app, scope(), receive, send)
        await started.wait()
        group.cancel_scope.cancel()
    assert rows(system) == []


@pytest.mark.parametrize("app_continues", [False, True])
def test_a_thrown_generator_exit_closes_the_app_first(system, app_continues):
    """As a coroutine awaiting another: GeneratorExit thrown in closes the awaited one."""

    async def app(scope, receive, send):
        try:
            await _Suspend()
        except GeneratorExit:
            if app_continues:
                await _Suspend()  # "coroutine ignored GeneratorExit": a failed request
            raise

    awaitable = MaltiMiddleware(app, telemetry_system=system)(scope(), receive, send)
    assert awaitable.send(None) == "suspended"
    with pytest.raises(RuntimeError if app_continues else GeneratorExit):
        awaitable.throw(GeneratorExit)
    assert rows(system) == ([("<unmatched>", 500)] if app_continues else [])


def test_it_can_be_weakly_referenced_as_a_coroutine_can(system):
    import weakref

    awaitable = MaltiMiddleware(ok, telemetry_system=system)(scope(), receive, send)
    alive = weakref.ref(awaitable)
    assert alive() is awaitable and awaitable.cr_origin is None
    awaitable.close()
    del awaitable
    assert alive() is None


def test_a_class_thrown_is_made_as_a_coroutine_makes_it(system):
    class Refuses(Exception):
        def __init__(self, *args):
            raise LookupError("cannot make it")

    app = MaltiMiddleware(lambda s, r, se: _AwaitsSteps("one", "two"), telemetry_system=system)
    for thrown, raised in [((Boom,), Boom), ((Boom, "text"), Boom), ((Refuses,), LookupError)]:
        awaitable = app(scope(), receive, send)  # (an iterator without throw(): made here)
        assert awaitable.send(None) == "one"
        with pytest.raises(raised):
            awaitable.throw(*thrown)
        awaitable = app(scope(), receive, send)  # not started: raised before anything ran
        with pytest.raises(raised):
            awaitable.throw(*thrown)
    awaitable = app(scope(), receive, send)
    with pytest.raises(TypeError, match="deriving from BaseException"):
        awaitable.throw(42)
    with pytest.raises(StopIteration):  # refused arguments leave it as it was: it still runs
        awaitable.send(None), awaitable.send(None), awaitable.send(None)
    assert rows(system) == [("<unmatched>", 500)] * 4  # those that had started
