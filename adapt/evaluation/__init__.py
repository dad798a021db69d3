"""Evaluation stage: predictions gathered across processes and their metrics (`scoring`, `metrics`),
domain-shift diagnostics (`diagnostics`), and re-scoring a finished run (`rerun`)."""
