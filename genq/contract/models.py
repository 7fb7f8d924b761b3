"""Model names: what a job, an OpenAI client and a worker call a model, and the errors for a name
that is not served (which names are served is genq.store.models).

A model is known by its *name*, what jobs and OpenAI clients send (vLLM's ``--served-model-name``):
a worker serves one, ``GENQ_MODEL_NAME``, or unset, its model directory's last part (a hub id
stays whole; the built-in default is ``smollm2-135m-instruct``). Each name has its own queue
(:func:`genq.contract.constants.model_queue`) and its own limit of waiting jobs, so that a burst of
one model's jobs neither delays nor refuses another's.
"""

from __future__ import annotations

import re
from pathlib import PurePath

# The model `genq model prepare` makes (worker.model_files), served when GENQ_MODEL is unset.
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"

# Letters, digits and ``. _ - : /`` (hub ids such as ``meta-llama/Llama-3.1-8B-Instruct``).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}"
_NAME = re.compile(NAME_PATTERN)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"model name {name!r}: 1 to 128 letters, digits or '._:/-', starting with a letter "
            "or digit"
        )
    return name


def served_name(model: str | None, name: str | None = None) -> str:
    """The name a worker serves ``model`` (a local directory or a hub id; None: the built-in
    default) under: ``name`` if given, else the directory's last part, else the id itself."""
    if name:
        return check_name(name)
    if model is None:
        return DEFAULT_MODEL_NAME
    return check_name(PurePath(model).name if model.startswith(("/", ".")) else model)


class ModelError(Exception):
    """A job's model is not served here; the message says which are."""


class UnknownModel(ModelError):
    pass


class NoDefaultModel(ModelError):
    pass
