"""``otpnn predict``, ``otpnn evaluate`` and ``otpnn export``: use a trained model.

MODEL is what ``otpnn train --save`` wrote, the service's ``model.safetensors`` or a checkpoint
(see otpnn.saved_model). Exit 0 done; 2 a bad argument, model, image or data file (one message
naming it, no traceback).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from otpnn.checkpoint import CheckpointError
from otpnn.config import DATASETS, TrainConfig
from otpnn.data import DataError, load_dataset
from otpnn.export import FORMATS, ExportError, export_onnx, export_torch
from otpnn.images import INVERT_CHOICES, load_digits
from otpnn.saved_model import Model, load_model


class InputError(click.ClickException):
    """A bad model, image or data file: the message goes to stderr, exit 2, no traceback."""

    exit_code = 2


def _model(path: str) -> Model:
    try:
        return load_model(path)
    except CheckpointError as e:
        raise InputError(str(e)) from None


model_argument = click.argument("model", type=click.Path(dir_okay=False))


@click.command("predict")
@model_argument
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--invert",
    type=click.Choice(INVERT_CHOICES),
    default="auto",
    show_default=True,
    help="Make a picture white-on-black like MNIST; auto: when its border is light.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict_command(model: str, images: tuple[str, ...], invert: str, as_json: bool) -> None:
    """Classify digit IMAGES (PNG or JPEG, resized to 28x28; or IDX image files) with MODEL:
    the class and the ten probabilities of each."""
    net = _model(model)
    try:
        digits = [d for path in images for d in load_digits(path, invert)]
    except DataError as e:
        raise InputError(str(e)) from None
    probs = net.probabilities(np.stack([d.pixels for d in digits]))
    for digit, p in zip(digits, probs, strict=True):
        label = int(p.argmax())
        if as_json:
            row = {
                "image": digit.name,
                "class": label,
                "probabilities": [round(float(v), 6) for v in p],
            }
            click.echo(json.dumps(row))
            continue
        note = " (inverted: dark digit on light)" if digit.inverted else ""
        click.echo(f"{digit.name}: {label} (p={p[label]:.4f}){note}")
        click.echo("  " + " ".join(f"{k}:{v:.4f}" for k, v in enumerate(p)))


@click.command("evaluate")
@model_argument
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    help="Test set [default: the one the model was trained on, else mnist].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    help="Directory with the MNIST files [default: the model's own, else the usual search].",
)
@click.option(
    "--confusion-png",
    type=click.Path(dir_okay=False),
    help="Also draw the confusion matrix into this PNG (needs matplotlib).",
)
def evaluate_command(
    model: str, dataset: str | None, data_dir: str | None, confusion_png: str | None
) -> None:
    """Test loss, accuracy and confusion matrix of MODEL on a test set (the model's own
    synthetic set is regenerated from its config)."""
    net = _model(model)
    trained = net.config or TrainConfig()
    config = TrainConfig(
        **{
            **trained.to_dict(),
            "dataset": dataset or trained.dataset,
            "data_dir": data_dir or trained.data_dir,
        }
    )
    try:
        data = load_dataset(config, download=False)
    except DataError as e:
        raise InputError(str(e)) from None
    loss, accuracy = net.loss_and_accuracy(data.test_images, data.test_labels)
    predicted = net.logits(data.test_images).argmax(axis=1)
    matrix = confusion_matrix(data.test_labels, predicted)
    click.echo(f"test set: {data.name}, {len(data.test_labels)} images")
    click.echo(f"loss {loss:.4f}, accuracy {accuracy:.4f}")
    click.echo("confusion matrix (rows: true class, columns: predicted class):")
    click.echo(format_matrix(matrix))
    if confusion_png:
        plot_confusion(matrix, confusion_png, f"{Path(model).name}: accuracy {accuracy:.4f}")
        click.echo(f"figure: {confusion_png}")


@click.command("export")
@model_argument
@click.argument("out", type=click.Path(dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    required=True,
    help="torch: safetensors for nn.Sequential of nn.Linear layers; onnx: an ONNX graph.",
)
def export_command(model: str, out: str, fmt: str) -> None:
    """Write MODEL for another framework to OUT (see README, "Use a trained model")."""
    net = _model(model)
    try:
        (export_torch if fmt == "torch" else export_onnx)(net, out)
    except ExportError as e:
        raise InputError(str(e)) from None
    click.echo(f"wrote {out} ({fmt}, layers {' -> '.join(map(str, net.sizes))}, {net.activation})")


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return counts


def format_matrix(counts: np.ndarray) -> str:
    width = max(len(str(int(counts.max()))), 3)
    head = " " * 4 + " ".join(f"{k:>{width}}" for k in range(counts.shape[1]))
    rows = [
        f"{t:>3} " + " ".join(f"{int(v):>{width}}" for v in row) for t, row in enumerate(counts)
    ]
    return "\n".join([head, *rows])


def plot_confusion(counts: np.ndarray, path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--confusion-png needs matplotlib: pip install 'otpnn[plot]'") from None
    fig, ax = plt.subplots(figsize=(6, 5.4))
    image = ax.imshow(counts, cmap="Blues")
    for (t, p), v in np.ndenumerate(counts):
        dark = v > counts.max() / 2
        ax.text(
            p, t, str(v), ha="center", va="center", fontsize=7, color="white" if dark else "black"
        )
    ax.set(
        xlabel="predicted class",
        ylabel="true class",
        title=title,
        xticks=range(10),
        yticks=range(10),
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
