"""The ONNX frontend: float ONNX -> float IR (docs/convert.md).

- ``api.py``: ``import_onnx``, ``convert`` and ``lower`` (exported as ``boldc.import_onnx``
  and ``boldc.convert``); onnx is imported only when they run.
- ``onnx.py``: the only module importing onnx: reading, opset and validity checks,
  input shapes, generic constant folding.
- ``graph.py``: the plain-Python graph the rest works on; ``importer.py``: the driver;
  ``nn_handlers.py``, ``tensor_handlers.py`` and ``resize_handlers.py``: one handler per ONNX op type.
- ``summary.py``: the table ``boldc convert`` prints.
"""
