"""``GET /static/{name}``: the dashboard's scripts, styles and the vendored charting library.

Only the files listed in :data:`ASSETS` are served, read once when the app is built, so a name
never reaches the file system. Each answer carries an ETag (its content's hash) and
``Cache-Control: no-cache``: browsers keep the files and ask again with ``If-None-Match``, so an
upgrade is seen at once and an unchanged file costs a ``304``. The pages load them with a
``<script nonce>`` or ``<link nonce>`` of their own answer (``web.pages``): the Content-Security-Policy
does not change, and a script injected without the nonce still cannot run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import falcon

__all__ = ["StaticFiles", "ASSETS", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Public name -> (path under ``web/static``, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "app.css": ("app.css", "text/css; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "overview.js": ("overview.js", "text/javascript; charset=utf-8"),
    "task.js": ("task.js", "text/javascript; charset=utf-8"),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
    # Chart.js 4.6.1 (MIT), the minified UMD build from the npm package; licence next to it.
    "chart.umd.min.js": ("vendor/chart.js/chart.umd.min.js", "text/javascript; charset=utf-8"),
}


@dataclass(frozen=True)
class _Asset:
    data: bytes
    media_type: str
    etag: str


class StaticFiles:
    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.assets = {}
        for name, (path, media_type) in ASSETS.items():
            data = (directory / path).read_bytes()
            self.assets[name] = _Asset(data, media_type, hashlib.sha256(data).hexdigest()[:32])

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """A script or style sheet of the dashboard."""
        asset = self.assets.get(name)
        if asset is None:
            raise falcon.HTTPNotFound(title="Unknown file", description=f"There is no static file {name!r}.")
        resp.etag = asset.etag
        resp.cache_control = ["no-cache"]
        resp.set_header("X-Content-Type-Options", "nosniff")
        if req.if_none_match and any(tag == asset.etag or tag == "*" for tag in req.if_none_match):
            resp.status = falcon.HTTP_304
            return
        resp.content_type = asset.media_type
        resp.data = asset.data
