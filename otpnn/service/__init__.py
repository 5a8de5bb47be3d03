"""``otpnn serve``: training jobs behind an HTTP JSON API, under one supervision tree.

- :mod:`store`: the state directory (job records, checkpoints, reports, weights), atomic JSON;
- :mod:`jobs`: the JobManager (queue, job states, the service's supervision tree, resume);
- :mod:`schema`: the request models (also the OpenAPI document's job config);
- :mod:`app`: the FastAPI app factory; :mod:`auth`, :mod:`limits`, :mod:`metrics`: its pieces.
"""

from otpnn.service.app import create_app
from otpnn.service.jobs import JobManager

__all__ = ["JobManager", "create_app"]
