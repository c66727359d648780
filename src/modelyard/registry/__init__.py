"""Model registry on MLflow: registered bundles, aliases, promotion through gates."""
