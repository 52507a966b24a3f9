"""The public `import pneumo` surface."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pneumo


def test_import_pneumo_does_not_load_torch() -> None:
    # a deployment that only reads configs or, later, runs ONNX must not pay for torch
    code = "import sys, pneumo; pneumo.load_config('seed'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_public_functions_stay_functions_after_their_modules_load() -> None:
    import pneumo.evaluation.evaluate  # noqa: F401
    import pneumo.inference.predict  # noqa: F401
    import pneumo.training  # noqa: F401

    import pneumo.evaluation.calibrate  # noqa: F401
    import pneumo.deploy.onnx  # noqa: F401
    import pneumo.inference.batch  # noqa: F401
    import pneumo.service.app  # noqa: F401
    import pneumo.training.assemble  # noqa: F401

    for name in ("train", "evaluate", "predict", "predict_archive", "calibrate", "ensemble", "export", "serve", "load_model", "discover"):
        assert callable(getattr(pneumo, name)), name
    assert set(pneumo.__all__) >= {"train", "evaluate", "predict", "load_model", "load_config", "PneumoError"}


def test_help_pneumo_lists_the_whole_api() -> None:
    """`help(pneumo)` shows the lazily loaded functions too, not only what `import pneumo` loads at once."""
    import pydoc

    text = pydoc.render_doc(pneumo, renderer=pydoc.plaintext)
    functions = text[text.index("FUNCTIONS") :]
    for name in ("train(", "evaluate(", "predict(", "load_model(", "discover(", "load_config("):
        assert name in functions, name


def test_the_top_level_api_is_one_function_per_command() -> None:
    commands = {"train", "evaluate", "predict", "predict_archive", "calibrate", "ensemble", "export", "serve"}
    assert commands <= set(dir(pneumo)) and all(callable(getattr(pneumo, name)) for name in commands)
    assert not {"Any", "import_module", "importlib", "annotations"} & set(dir(pneumo))
    for name in commands:  # keyword-only after the first argument (scikit-learn's convention)
        parameters = list(inspect.signature(getattr(pneumo, name)).parameters.values())
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[1:]), name
