"""`ddpm serve`: a local web page to generate images from a trained run (app.py), with a FIFO job queue (jobs.py),
request checking (request.py), Host/Origin checks and the threat model (guard.py), prompt resolution (prompt.py) and
the generation itself (generate.py)."""

from ddpm.serve.app import check_port, create_app, serve
from ddpm.serve.guard import Access
from ddpm.serve.prompt import Conditioning, resolve_request
from ddpm.serve.request import GenerateRequest, Limits, parse_request

__all__ = ["Access", "Conditioning", "GenerateRequest", "Limits", "check_port", "create_app", "parse_request",
           "resolve_request", "serve"]
