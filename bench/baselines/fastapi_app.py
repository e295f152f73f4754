"""Baseline: a plain FastAPI + onnxruntime server, one request = one model run (no batching).

uvicorn bench.baselines.fastapi_app:app --port 8001
"""

from fastapi import FastAPI
from pydantic import BaseModel

from bench.baselines.model import Model

app = FastAPI()
model = Model()


class PredictRequest(BaseModel):
    inputs: str | list[str]


@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}


@app.post("/predict")
def predict(request: PredictRequest):
    # A sync handler: FastAPI runs it in its thread pool, as a typical service would.
    single = isinstance(request.inputs, str)
    texts = [request.inputs] if single else request.inputs
    results = model.predict(texts)
    return results[0] if single else results
