"""An image that cannot be decoded is one error naming its file, with and without DataLoader workers."""

import os

import pytest

torch = pytest.importorskip("torch")

import _extract_tiny as tiny  # noqa: E402
from extract import ExtractError  # noqa: E402
from extract.cli import main  # noqa: E402
from extract.data import UnreadableImageError, image_folder, load_image  # noqa: E402

TINY = ["--import", "_extract_tiny"]


def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: int(len(data) * keep)])


@pytest.fixture
def folder(tmp_path):
    """A tiny ImageFolder (train and val, 2 classes x 3 images) whose val/class1/img1.png is truncated."""
    root = tiny.make_image_folder(tmp_path / "data", classes=2, per_class=3)
    bad = os.path.join(root, "val", "class1", "img1.png")
    truncate(bad)
    return root, bad


def test_unreadable_files_name_themselves(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "ok.jpg", quality=90)
    assert load_image(str(tmp_path / "ok.jpg")).size == (40, 30)
    cases = {"cut.jpg": None, "cut.png": None, "text.png": b"not an image at all\n", "empty.jpeg": b""}
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "cut.jpg")
    Image.effect_noise((64, 64), 40).convert("RGB").save(tmp_path / "cut.png")
    truncate(tmp_path / "cut.jpg", 0.6)
    truncate(tmp_path / "cut.png", 0.6)
    for name, content in cases.items():
        path = str(tmp_path / name)
        if content is not None:
            open(path, "wb").write(content)
        with pytest.raises(UnreadableImageError) as info:
            load_image(path)
        message = str(info.value)
        assert isinstance(info.value, ExtractError) and repr(path) in message and "\n" not in message, message
    with pytest.raises(UnreadableImageError, match="missing.png"):
        load_image(str(tmp_path / "missing.png"))


def test_worker_rebuilt_error_keeps_only_its_message():
    own = "image file '/d/val/a/x.png' is unreadable: image file is truncated (3 bytes not processed)"
    text = (
        "Caught UnreadableImageError in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "/x/worker.py", line 349, in _worker_loop\n    data = fetcher.fetch(index)\n'
        f"extract.data.UnreadableImageError: {own}\n"
    )
    assert str(UnreadableImageError(text)) == own
    assert str(UnreadableImageError(own)) == own
    odd = "Caught something else.\nOriginal Traceback\nValueError: x\n"
    assert str(UnreadableImageError(odd)) == odd  # not its own: nothing dropped


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_raises_one_line_naming_the_file(folder, workers):
    root, bad = folder
    data = image_folder(root, "val", tiny.transform(None))
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=workers)
    with pytest.raises(UnreadableImageError) as info:
        list(loader)
    message = str(info.value)
    assert message.startswith(f"image file {bad!r} is unreadable: ") and "\n" not in message, message


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cli_reports_one_error_line_naming_the_file(folder, tmp_path, capsys, workers):
    root, bad = folder
    code = main([
        "tinynet", *TINY, "--data", str(root), "--weights", "none", "--out", str(tmp_path / "run"), "--epochs", "1",
        "--batch-size", "4", "--workers", workers, "--exit-types", "mlp1", "--device", "cpu", "--quiet",
    ])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"error: image file {bad!r} is unreadable: "), err
    assert "Traceback" not in err
