"""ethicrec core: data, models, features, ranking, the pipeline and batch jobs (no transport)."""
