"""gunicorn's access log without the open pixel and the click redirect.

A line of gunicorn's access log holds the client's address, its user agent and the
path, and the path of `/o/<token>.gif` and `/r/<token>/` names one delivery (one email
to one reader). The email's footer promises that no address or device is kept with an
open or a click: so those requests are not written to the access log at all. Every other
request is logged as gunicorn always does. Used by the Procfile's web line and
deploy/broadside-web.service (`--logger-class config.gunicorn_logging.AccessLogger`).
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

# The same prefixes as newsletter.services.tracking (not imported: gunicorn's master
# process loads this before Django is set up).
UNLOGGED_PATH_PREFIXES = ("/o/", "/r/")


class AccessLogger(Logger):
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if str(environ.get("PATH_INFO", "")).startswith(UNLOGGED_PATH_PREFIXES):
            return
        super().access(resp, req, environ, request_time)
