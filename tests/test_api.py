"""The public `import pneumo` surface."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pneumo
from pneumo.errors import PneumoError, short


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


# --- every public function checks its arguments at its entry (issue 28) -------------------------

# a call of each function that its own checks would let through, up to the work itself: each case
# below swaps one argument for a wrong one, which must be refused before any work, naming it
_FIRST = {
    "predict": ["x.jpeg"],
    "evaluate": "data",
    "calibrate": "labelled",
    "ensemble": ["runs/a"],
    "predict_archive": "scans",
    "train": "config",  # replaced by a real Config in the test
    "load_model": None,
    "discover": "data",
    "serve": None,
    "load_config": "seed",
    "export": None,
}
_NAN, _HUGE = float("nan"), 2**63
_BAD_ARGUMENTS = [
    ("predict", "model", 123),
    ("predict", "model", b"runs/seed"),
    ("predict", "batch_size", 0),
    ("predict", "batch_size", -1),
    ("predict", "batch_size", True),
    ("predict", "batch_size", 2.0),
    ("predict", "batch_size", _HUGE),
    ("predict", "abstain", "no"),
    ("predict", "strict", None),
    ("predict", "inputs", ["a" * 5000]),
    ("evaluate", "data", None),
    ("evaluate", "data", b"data"),
    ("evaluate", "data", ["data"]),
    ("evaluate", "data", ""),
    ("evaluate", "model", 123),
    ("evaluate", "split", 3),
    ("evaluate", "n_boot", -1),
    ("evaluate", "n_boot", True),
    ("evaluate", "n_boot", _NAN),
    ("evaluate", "n_boot", _HUGE),
    ("evaluate", "seed", -1),
    ("evaluate", "plots_dir", 3),
    ("evaluate", "cache_dir", "a\x00b"),
    ("evaluate", "progress", "yes"),
    ("evaluate", "shifts", 1),
    ("evaluate", "strict", None),
    ("calibrate", "labelled", 3),
    ("calibrate", "out", None),
    ("calibrate", "model", []),
    ("calibrate", "unlabeled", b"site"),
    ("calibrate", "prevalence", _NAN),
    ("calibrate", "prevalence", True),
    ("calibrate", "prevalence", "0.3"),
    ("calibrate", "split", ["test"]),
    ("calibrate", "min_per_class", 0),
    ("calibrate", "n_boot", 1.5),
    ("calibrate", "overwrite", "no"),
    ("calibrate", "progress", 0),
    ("ensemble", "members", {"a": 1}),
    ("ensemble", "members", []),
    ("ensemble", "members", [3]),
    ("ensemble", "out", 3),
    ("ensemble", "data", 3.5),
    ("ensemble", "outliers", b"films"),
    ("ensemble", "calibration", ["shift"]),
    ("ensemble", "threshold", _NAN),
    ("ensemble", "threshold", 1.5),
    ("ensemble", "threshold", "otsu"),
    ("ensemble", "threshold", True),
    ("ensemble", "n_boot", -1),
    ("ensemble", "overwrite", "no"),
    ("ensemble", "log", "print"),
    ("predict_archive", "source", 3),
    ("predict_archive", "out", b"results.csv"),
    ("predict_archive", "model", 123),
    ("predict_archive", "batch_size", 0),
    ("predict_archive", "batch_size", -1),
    ("predict_archive", "batch_size", _HUGE),
    ("predict_archive", "workers", -1),
    ("predict_archive", "workers", 1.0),
    ("predict_archive", "resume", "no"),
    ("predict_archive", "strict", 1),
    ("predict_archive", "backend", ["onnx"]),
    ("predict_archive", "abstain", "no"),
    ("train", "config", {"epochs": 1}),
    ("train", "config", "seed"),
    ("train", "config", 3),
    ("train", "out", None),
    ("train", "out", 3),
    ("train", "overwrite", "no"),
    ("train", "progress", None),
    ("train", "log", "print"),
    ("train", "n_boot", -1),
    ("train", "resume", "no"),
    ("train", "resume", np.array([True, False])),
    ("train", "mlflow", 3),
    ("train", "tensorboard", "no"),
    ("load_model", "path", 123),
    ("load_model", "path", b"runs/seed"),
    ("load_model", "backend", ["onnx"]),
    ("load_model", "checks", "no"),
    ("load_model", "device", "gpu"),
    ("load_model", "device", 0),
    ("discover", "source", None),
    ("discover", "source", "a" * 5000),
    ("discover", "source", "a\x00b"),
    ("serve", "model", 3),
    ("serve", "host", 3),
    ("serve", "port", "8000"),
    ("serve", "port", 70000),
    ("serve", "port", True),
    ("serve", "max_upload_mb", float("inf")),
    ("serve", "max_upload_mb", 0),
    ("serve", "max_pixels", 0),
    ("load_config", "source", 3),
    ("load_config", "source", b"seed"),
    ("load_config", "overrides", "epochs=2"),
    ("load_config", "overrides", 5),
    ("export", "model", 123),
    ("export", "out", 123),
    ("export", "out", b"model.onnx"),
    ("export", "data", ["a", "b"]),
    ("export", "int8", "yes"),
    ("export", "progress", None),
]


@pytest.mark.parametrize(("function", "argument", "value"), _BAD_ARGUMENTS, ids=lambda v: short(v)[:30])
def test_a_wrong_argument_is_refused_at_the_entry_naming_it(
    function: str, argument: str, value: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line that starts with the argument's name and says what was given; nothing written, nothing started."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("serve started listening"))
    call = getattr(pneumo, function)
    parameters = list(inspect.signature(call).parameters)
    first = pneumo.load_config("seed", ["epochs=1"]) if function == "train" else _FIRST[function]
    kwargs: dict[str, object] = (
        {"out": tmp_path / "out" / ("results.csv" if function == "predict_archive" else "")} if "out" in parameters else {}
    )
    if argument == parameters[0]:
        first = value
    else:
        kwargs[argument] = value
    with pytest.raises(PneumoError) as err:
        call(first, **kwargs)
    message = str(err.value)
    assert message.startswith(argument) and "\n" not in message and len(message) < 400, message
    assert not (tmp_path / "out").exists()


def test_numpy_scalars_are_numbers_and_flags() -> None:
    """What a notebook computes (np.int64, np.bool_) is accepted where an int or a bool is."""
    config = pneumo.load_config("seed", overrides=("epochs=2",))  # a tuple of overrides, as a list
    assert config.epochs == 2
    from pneumo.errors import check_flag, check_whole

    assert check_whole("batch_size", np.int64(8), minimum=1) == 8 and check_flag("strict", np.bool_(True)) is True
