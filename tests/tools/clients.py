"""Other servers' real Python clients against newscls; prints what they got as one JSON object.

Usage: python clients.py BASE_URL MODEL_NAME. huggingface_hub's InferenceClient (the client of
TEI and of the Hugging Face Inference API) and tritonclient (KServe v2 / Open Inference Protocol),
unchanged: the Rust test asserts on the output.
"""

import json
import sys

import numpy as np
import tritonclient.http as triton
from huggingface_hub import InferenceClient

base, model = sys.argv[1], sys.argv[2]
texts = json.loads(sys.stdin.read())
out = {}


def pairs(elements):
    return [[e.label, e.score] for e in elements]


at_base = InferenceClient(base_url=base)
at_predict = InferenceClient(model=base + "/predict")
out["hf_base"] = [pairs(at_base.text_classification(t)) for t in texts]
out["hf_base_top_k"] = [pairs(at_base.text_classification(t, top_k=2)) for t in texts]
out["hf_predict"] = [pairs(at_predict.text_classification(t)) for t in texts]
out["hf_predict_top_k"] = [pairs(at_predict.text_classification(t, top_k=1)) for t in texts]
out["hf_sigmoid"] = [pairs(at_base.text_classification(t, function_to_apply="sigmoid")) for t in texts]

client = triton.InferenceServerClient(url=base.removeprefix("http://"))
out["triton_live"] = client.is_server_live()
out["triton_ready"] = client.is_server_ready()
out["triton_model_ready"] = client.is_model_ready(model)
out["triton_metadata"] = client.get_model_metadata(model)
tensor = triton.InferInput("text", [len(texts)], "BYTES")
tensor.set_data_from_numpy(np.array(texts, dtype=object), binary_data=False)
result = client.infer(model, [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=False),
                                                triton.InferRequestedOutput("probabilities", binary_data=False)])
out["triton_labels"] = [x.decode() if isinstance(x, bytes) else str(x) for x in result.as_numpy("label").tolist()]
out["triton_probabilities"] = result.as_numpy("probabilities").tolist()

# The way Triton's own examples write it: the client's defaults, binary tensors both ways.
tensor = triton.InferInput("text", [len(texts)], "BYTES")
tensor.set_data_from_numpy(np.array(texts, dtype=object))
result = client.infer(model, [tensor])
out["triton_default_labels"] = [x.decode() for x in result.as_numpy("label").tolist()]
out["triton_default_probabilities"] = result.as_numpy("probabilities").tolist()
result = client.infer(model, [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=True),
                                                triton.InferRequestedOutput("probabilities", binary_data=True)])
out["triton_binary_labels"] = [x.decode() for x in result.as_numpy("label").tolist()]
out["triton_binary_probabilities"] = result.as_numpy("probabilities").tolist()
try:
    client.infer("no-such-model", [tensor])
    out["triton_unknown_model"] = "accepted"
except triton.InferenceServerException as e:  # the protocol's error reaches the client's exception
    out["triton_unknown_model"] = str(e)
print(json.dumps(out))
