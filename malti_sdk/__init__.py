"""Malti SDK: one-line ASGI telemetry middleware, and the metrics query client.

Instrumentation (drop-in for the ``malti-telemetry`` package)::

    from malti_sdk import MaltiMiddleware
    app.add_middleware(MaltiMiddleware)

Reading metrics::

    from malti_sdk import MaltiClient
    with MaltiClient() as client:          # MALTI_URL / MALTI_USER_KEY
        dashboard = client.aggregate(start_time="24h")

The implementation lives in private modules; import only what this package exports.
``malti_sdk.core``, ``malti_sdk.middleware`` and ``malti_sdk.utils`` keep the original
package's import paths.
"""

from ._telemetry import *  # noqa: F403  instrumentation: configure_malti, get_telemetry_system, ...
from ._telemetry import __all__ as _telemetry_all
from ._middleware import *  # noqa: F403  MaltiMiddleware
from ._middleware import __all__ as _middleware_all
from ._exceptions import *  # noqa: F403  error hierarchy of the query client
from ._exceptions import __all__ as _exceptions_all
from ._models import *  # noqa: F403  typed results of the query client
from ._models import __all__ as _models_all
from ._client import *  # noqa: F403  MaltiClient, AsyncMaltiClient
from ._client import __all__ as _client_all

from . import core, middleware, utils  # noqa: E402  the original's modules, as attributes too

__version__ = "0.1.0"

__all__ = [
    *_telemetry_all,
    *_middleware_all,
    *_exceptions_all,
    *_models_all,
    *_client_all,
    "__version__",
]
