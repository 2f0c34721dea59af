"""MLflow model registry: aliases ``champion``/``challenger``, promotion gates, model cards,
compare, drift, rollback and the global fallback (see docs/registry.md).

Training calls ``crm_predict.registry.lifecycle.on_new_version(client, name, version)`` after registering;
serving calls ``crm_predict.registry.lifecycle.resolve_model(client, name, segment)``.
"""
