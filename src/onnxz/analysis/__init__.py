"""The research as a tool: study a model's weights (``onnxz analyze``) and compare
quantizers on it by real file size and fidelity (``onnxz sweep``).

Needs the ``analysis`` extra (scipy) for the distribution fits and the ``plot`` extra
(matplotlib) for figures; the rest of onnxz needs neither. Import the submodules:
:mod:`onnxz.analysis.analyze`, :mod:`onnxz.analysis.sweep`, :mod:`onnxz.analysis.plots`.
"""
