"""`ddpm serve`: a local web page to generate images from a trained run (app.py), with a FIFO job queue (jobs.py),
request checking (request.py), prompt resolution (prompt.py) and the generation itself (generate.py)."""

from ddpm.serve.app import create_app, serve
from ddpm.serve.prompt import Conditioning, resolve_request
from ddpm.serve.request import GenerateRequest, Limits, parse_request

__all__ = ["Conditioning", "GenerateRequest", "Limits", "create_app", "parse_request", "resolve_request", "serve"]
