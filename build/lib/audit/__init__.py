"""ethicrec audit: fairness metrics (Fairlearn), harm classifier, policy, the
in-path audit stage, the audit log and `python -m audit.report`."""
