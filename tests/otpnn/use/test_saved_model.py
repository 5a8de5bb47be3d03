"""Train -> save -> predict / evaluate / export, as a user does it: real subprocesses, real files.

The saved model predicts what its training's evaluation counted; a checkpoint reads with the same
loader; the PyTorch export has nn.Linear's (out, in) layout; the ONNX export, run by onnxruntime,
predicts what otpnn predicts on the whole test set (synthetic here, MNIST where it is present).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.export import onnx_model
from otpnn.model import params_sha256
from otpnn.reference import train_reference
from otpnn.saved_model import Model, load_model

SMALL = [
    "--dataset", "synthetic", "--synthetic-train", "768", "--synthetic-test", "256",
    "--batch-size", "64", "--seed", "7", "--epochs", "2", "--workers", "2",
    "--backend", "thread", "--quiet",
]  # fmt: skip


def otpnn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpnn", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trained")
    paths = {"model": tmp / "model.safetensors", "report": tmp / "r.json", "ck": tmp / "ck"}
    run = otpnn("train", *SMALL, "--save", str(paths["model"]), "--report", str(paths["report"]),
                "--checkpoint-dir", str(paths["ck"]))  # fmt: skip
    assert run.returncode == 0, run.stderr
    return paths


def synthetic_test_set() -> tuple[np.ndarray, np.ndarray]:
    cfg = TrainConfig(dataset="synthetic", synthetic_train=768, synthetic_test=256, seed=7)
    data = load_dataset(cfg)
    return data.test_images, data.test_labels


def test_the_saved_model_holds_the_trained_weights_and_their_config(trained) -> None:
    model = load_model(trained["model"])
    report = json.loads(trained["report"].read_text())
    assert params_sha256(model.params) == report["final"]["params_sha256"]
    assert model.sizes == (784, 128, 64, 10)
    assert model.activation == "relu"
    assert model.config is not None
    assert model.config.seed == 7
    images, labels = synthetic_test_set()
    _, accuracy = model.loss_and_accuracy(images, labels)
    assert accuracy == report["final"]["test_accuracy"]
    predicted = model.logits(images).argmax(axis=1)
    assert np.mean(predicted == labels) == accuracy


def test_a_checkpoint_reads_with_the_same_loader(trained) -> None:
    from_checkpoint = load_model(trained["ck"] / "checkpoint.safetensors")
    saved = load_model(trained["model"])
    assert from_checkpoint.sizes == saved.sizes
    assert np.array_equal(from_checkpoint.params, saved.params)


def test_predict_a_png_a_paper_like_png_and_an_idx_file(trained, tmp_path) -> None:
    from PIL import Image

    images, _ = synthetic_test_set()
    expected = load_model(trained["model"]).logits(images[:3]).argmax(axis=1)
    Image.fromarray(images[0].reshape(28, 28)).save(tmp_path / "digit.png")
    paper = Image.fromarray(255 - images[1].reshape(28, 28))  # dark digit on light
    paper.save(tmp_path / "paper.jpg", quality=100)
    idx = tmp_path / "three-images-idx3-ubyte"
    idx.write_bytes(b"\0\0\x08\x03" + np.array([3, 28, 28], ">u4").tobytes() + images[:3].tobytes())
    run = otpnn("predict", str(trained["model"]), str(tmp_path / "digit.png"),
                str(tmp_path / "paper.jpg"), str(idx), "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["class"] for r in rows] == [expected[0], expected[1], *expected]
    assert rows[2]["image"] == f"{idx}[0]"
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-5 for r in rows)
    human = otpnn("predict", str(trained["model"]), str(tmp_path / "paper.jpg"))
    assert f"paper.jpg: {expected[1]} (p=" in human.stdout
    assert "inverted" in human.stdout


def test_evaluate_prints_loss_accuracy_confusion_and_draws_it(trained, tmp_path) -> None:
    report = json.loads(trained["report"].read_text())
    png = tmp_path / "cm.png"
    run = otpnn("evaluate", str(trained["model"]), "--confusion-png", str(png))
    assert run.returncode == 0, run.stderr
    assert f"accuracy {report['final']['test_accuracy']:.4f}" in run.stdout
    assert f"loss {report['epochs'][-1]['test_loss']:.4f}" in run.stdout
    rows = run.stdout.split("predicted class):\n")[1].splitlines()[1:11]
    counts = np.array([[int(v) for v in row.split()[1:]] for row in rows])
    assert counts.sum() == 256
    assert np.trace(counts) == round(report["final"]["test_accuracy"] * 256)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "{report}", "x.png"], "not a safetensors file"),
        (["predict", "{model}", "{report}"], "not a readable image"),
        (["predict", "{model}", "missing.png"], "no such file"),
        (["export", "{model}", "out.bin", "--format", "tflite"], "'tflite' is not one of"),
    ],
)
def test_bad_inputs_are_one_message_and_exit_2(trained, args, message) -> None:
    run = otpnn(*(a.format(**{k: str(v) for k, v in trained.items()}) for a in args))
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_the_torch_export_is_nn_linear_layout(trained, tmp_path) -> None:
    out = tmp_path / "torch.safetensors"
    assert otpnn("export", str(trained["model"]), str(out), "--format", "torch").returncode == 0
    tensors = load_file(out)
    assert {k: v.shape for k, v in tensors.items()} == {
        "0.weight": (128, 784), "0.bias": (128,), "2.weight": (64, 128), "2.bias": (64,),
        "4.weight": (10, 64), "4.bias": (10,),
    }  # fmt: skip
    images, _ = synthetic_test_set()
    a = images / np.float32(255)
    for i in (0, 2, 4):  # what nn.Linear computes: x @ W.T + b
        a = a @ tensors[f"{i}.weight"].T + tensors[f"{i}.bias"]
        a = np.maximum(a, 0) if i < 4 else a
    model = load_model(trained["model"])
    assert np.array_equal(a.argmax(axis=1), model.logits(images).argmax(axis=1))


def check_onnx_against_otpnn(model: Model, images: np.ndarray, path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    path.write_bytes(onnx_model(model).SerializeToString())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(
        ["probabilities"], {"pixels": (images / np.float32(255)).astype(np.float32)}
    )
    ours = model.probabilities(images)
    assert np.array_equal(probs.argmax(axis=1), ours.argmax(axis=1))
    np.testing.assert_allclose(probs, ours, atol=1e-5)


def test_onnx_export_predicts_what_otpnn_predicts_on_the_test_set(trained, tmp_path) -> None:
    pytest.importorskip("onnx")
    images, _ = synthetic_test_set()
    check_onnx_against_otpnn(load_model(trained["model"]), images, tmp_path / "m.onnx")
    run = otpnn("export", str(trained["model"]), str(tmp_path / "cli.onnx"), "--format", "onnx")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "m.onnx").read_bytes()


@pytest.mark.slow
def test_onnx_export_on_the_mnist_test_set(mnist_dir, tmp_path) -> None:
    pytest.importorskip("onnx")
    cfg = TrainConfig(data_dir=str(mnist_dir), epochs=1, hidden=(64,))
    data = load_dataset(cfg)
    result = train_reference(cfg, data)
    model = Model(result.params, cfg.layer_sizes, cfg.activation, cfg)
    check_onnx_against_otpnn(model, data.test_images, tmp_path / "mnist.onnx")


def test_a_save_path_that_cannot_be_written_is_one_message_and_exit_2(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = otpnn("train", *SMALL, "--epochs", "1", "--save", str(blocker / "model.safetensors"))
    assert run.returncode == 2
    assert f"--save {blocker / 'model.safetensors'}" in run.stderr
    assert "Traceback" not in run.stderr
