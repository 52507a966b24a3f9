"""Files in, verdicts out, with either backend.

- `base`: the `Model` every backend is (metadata, threshold, probabilities, input checks) and the result types;
- `torch_backend` (PyTorch checkpoint) and `onnx_backend` (onnxruntime export), side by side, neither importing the other;
- `checks` (rule checks on what a file says) and `features` (distance in the model's features);
- `classify`: the one loop from decoded images to `Prediction`s; `predict`: paths and model names in;
- `formats`: JSON and CSV; `batch` and `ray_batch`: archives too large for memory.

`import pneumo.inference` is light; `pneumo.inference.predict.predict` needs torch only for a checkpoint.
"""
