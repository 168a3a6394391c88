"""Deploying a trained run: its scoring pass as ONNX or OpenVINO graphs beside its score's statistics.

- graph.py: the model's scoring pass (and, for a distance score, its per-location split) traced to ONNX.
- manifest.py: the export folder's manifest.json and score.npz, written and checked.
- write.py: export.py's work: load the checkpoint, write the files, check them against PyTorch, publish.
- runtime.py: predict.py's side: an export folder scored with onnxruntime or OpenVINO, as a model.
"""

# --format -> the runtime predict.py scores with (here, light: export.py's parser reads it before torch loads)
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
