"""Backends: one :class:`~vitsq.synth.Synthesizer` implementation per runtime.

:mod:`vitsq.backends.torch` (PyTorch FP32/INT8), :mod:`vitsq.backends.onnx` (ONNX Runtime),
:mod:`vitsq.backends.executorch` (ExecuTorch ``.pte`` programs). Each module imports its runtime
when it is imported, so import the one you need (``vitsq.load`` does this for you).
"""
