"""MLflow model registry: aliases ``champion``/``challenger``, promotion gates, model cards,
compare, drift, rollback and the global fallback (see docs/registry.md).

Training sets the ``challenger`` alias as it registers (``crm_predict.training.tracking``);
``crm-predict registry resolve`` reads ``crm_predict.registry.lifecycle.resolve_model(client, name, segment)``.
"""
