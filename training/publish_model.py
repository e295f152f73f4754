"""Publish a model directory as a new MLflow model version, and point an alias at it.

    MLFLOW_TRACKING_URI=http://mlflow:5000 python training/publish_model.py \
        models/news-topic-e5-small --name news-topic --alias champion

Logs the directory's files (ONNX variants, tokenizer.json, config.json, ...) as the artifacts
of a new run, registers them as the next version of NAME, and (with --alias) moves the alias
to it. A newscls started with `model.uri: models:/NAME@ALIAS` picks the version up at its next
registry poll (model.poll_interval), on SIGHUP, or on POST /admin/reload. Prints the version
as JSON. Needs only the `mlflow` package (scripts/setup-mlflow.sh installs a pinned one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, help="a model directory newscls can serve")
    ap.add_argument("--name", required=True, help="registered model name")
    ap.add_argument("--alias", help="alias to move to the new version, e.g. champion")
    ap.add_argument("--experiment", default="newscls-models", help="experiment the upload run goes to")
    args = ap.parse_args()

    onnx = list(args.model_dir.glob("*.onnx")) + list(args.model_dir.glob("onnx/*.onnx"))
    missing = [f for f in ("tokenizer.json", "config.json") if not (args.model_dir / f).is_file()]
    if not onnx or missing:
        raise SystemExit(f"{args.model_dir}: not a model directory (needs an ONNX file, tokenizer.json, config.json)")

    mlflow.set_experiment(args.experiment)
    client = MlflowClient()
    with mlflow.start_run(run_name=f"publish {args.name}") as run:
        mlflow.log_artifacts(str(args.model_dir), artifact_path="model")
    try:
        client.create_registered_model(args.name)
    except mlflow.exceptions.MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e):
            raise
    version = client.create_model_version(args.name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    if args.alias:
        client.set_registered_model_alias(args.name, args.alias, version.version)
    print(json.dumps({"name": args.name, "version": version.version, "alias": args.alias,
                      "run_id": run.info.run_id}))


if __name__ == "__main__":
    sys.exit(main())
