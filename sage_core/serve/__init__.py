"""Pipelines as services: a pipeline's requests and responses over HTTP.

``PipelineServer(env).run(port=8890)`` (or ``env.serve(port=8890)``, ``sage serve
SPEC``) runs the pipeline as a long-lived job whose source is the ``http-request``
operator and whose sink is ``http-response``; each request is one item, matched to
its answer by a request id carried through every operator (``envelope.py``).
"""

from __future__ import annotations

from sage_core.serve.autoscale import (
    AutoscaleError,
    Autoscaler,
    Demand,
    ScaleDecision,
    ScaleRange,
)
from sage_core.serve.envelope import Envelope, Marker, ServeError, served_graph
from sage_core.serve.hub import HubNotFound, Outcome, Overloaded, RequestHub
from sage_core.serve.remote import HubServer, HubUnreachable
from sage_core.serve.server import PipelineServer

__all__ = [
    "AutoscaleError",
    "Autoscaler",
    "Demand",
    "Envelope",
    "HubNotFound",
    "HubServer",
    "HubUnreachable",
    "Marker",
    "Outcome",
    "Overloaded",
    "PipelineServer",
    "RequestHub",
    "ScaleDecision",
    "ScaleRange",
    "ServeError",
    "served_graph",
]
