"""Export: ONNX (bare, Piper voice, Vosk folder) and ExecuTorch programs.

Entry point: :func:`vitsq.export.api.export` (``vitsq.export``). Importing this package is cheap
(no torch); the writers import their runtimes when called.
"""
