"""How a team operates the pipeline: lineage of a registered model, the retraining decision, the DVC remote."""
