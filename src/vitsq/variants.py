"""The one grammar for naming a model variant on the command line: ``[LABEL=]SPEC[@BACKEND]``.

``vitsq bench``, ``vitsq eval`` and ``vitsq serve`` all take variants in this form:

* ``joe``                 the embedded voice on its own backend (``auto``)
* ``joe@onnx``            the same model on ONNX Runtime
* ``int8=out/q@onnx``     an artifact folder on ONNX Runtime, shown as ``int8``

``SPEC`` is anything :func:`vitsq.load` accepts (a name or a path); ``BACKEND`` is one of
:data:`vitsq.synth.BACKENDS`, or omitted for ``auto`` (the model's own backend). The label shown in
tables defaults to the text itself, except that an absolute path is shortened to its file name, so
result files never carry the layout of the machine that made them.

This module imports nothing from vitsq at import time, so any command can use it without cycles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from vitsq.errors import InputError

log = logging.getLogger(__name__)

#: The backend of a variant that names none: the model's own (``vitsq.load``'s default).
AUTO = "auto"
GRAMMAR = "[LABEL=]SPEC[@BACKEND]"


def _backends() -> tuple[str, ...]:
    from vitsq.synth import BACKENDS

    return tuple(BACKENDS)


def _is_absolute(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or text.startswith("~")


@dataclass(frozen=True)
class Variant:
    """One model variant: ``label`` (shown in tables), ``spec`` (for :func:`vitsq.load`), ``backend``.

    ``backend`` is ``"auto"`` when the text named none.
    """

    label: str
    spec: str
    backend: str = AUTO

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments selecting this variant's backend in :func:`vitsq.load` (none for auto)."""
        return {} if self.backend == AUTO else {"backend": self.backend}

    def load(self, **kwargs: Any) -> Any:
        """``vitsq.load(spec, backend=...)`` with ``kwargs`` (device, threads, ...)."""
        from vitsq.registry import load

        return load(self.spec, **self.load_kwargs(), **kwargs)

    def __str__(self) -> str:
        body = self.spec if self.backend == AUTO else f"{self.spec}@{self.backend}"
        return body if self.label == default_label(self.spec, self.backend, body) else f"{self.label}={body}"


def default_label(spec: str, backend: str, text: str) -> str:
    """The label of a variant written without ``LABEL=``: ``text``, or for an absolute path its
    file name (with ``@backend``), so no machine's folder layout lands in results."""
    if not _is_absolute(spec):
        return text
    name = Path(spec).expanduser().name or spec
    return name if backend == AUTO else f"{name}@{backend}"


def parse_variant(text: Any, *, legacy_prefix: bool = False) -> Variant:
    """Parse ``[LABEL=]SPEC[@BACKEND]`` into a :class:`Variant`.

    ``legacy_prefix`` also accepts the deprecated ``BACKEND:SPEC`` form (``vitsq eval`` took it),
    logging a deprecation warning; elsewhere that form is refused with the right spelling.
    """
    backends = _backends()
    raw = str(text).strip()
    if not raw:
        raise InputError(f"empty model variant: use {GRAMMAR}, e.g. joe, joe@onnx, int8=out/q@onnx")
    label, body = None, raw
    if "=" in raw:
        label, _, body = (s.strip() for s in raw.partition("="))
        if not label or not body:
            raise InputError(f"variant {raw!r}: use LABEL=SPEC[@BACKEND] with both parts non-empty")
    backend = AUTO
    head, sep, tail = body.partition(":")
    if sep and head in backends and tail:
        if not legacy_prefix:
            raise InputError(f"variant {raw!r}: write the backend after the spec, {tail}@{head} "
                             f"(the grammar is {GRAMMAR})")
        log.warning("variant %r: the %s:SPEC form is deprecated; write %s@%s", raw, head, tail, head)
        body, backend = tail, head
    elif "@" in body:
        spec, _, be = body.rpartition("@")
        if be not in backends:
            raise InputError(f"variant {raw!r}: unknown backend {be!r} after '@'; valid backends are "
                             f"{', '.join(backends)} (or none, for the model's own)")
        if not spec:
            raise InputError(f"variant {raw!r}: nothing before '@{be}': give a model name or path")
        body, backend = spec, be
    if label is None:
        shown = raw if not (sep and head in backends and tail) else f"{body}@{backend}"
        label = default_label(body, backend, shown)
    return Variant(label=label, spec=body, backend=backend)
