"""Evaluation kit: VFHQ/KEEP-style degradation and fidelity, identity, landmark and temporal metrics.

Everything streams frame by frame, so memory stays flat over a clip except for the per-frame metric arrays.
Metrics that need weights the user has not supplied are skipped with a one-line reason in the report.
"""

__all__: list[str] = []
