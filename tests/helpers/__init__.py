"""What the tests share: copies of the workflow and their MLflow stores (workflow), and the real
services some tests start, an `mlflow server` and a one-node SLURM (services)."""
