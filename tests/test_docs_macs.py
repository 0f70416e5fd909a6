"""docs/backbones.md's MACs tables are what ``python -m extract.backbones.table`` prints."""

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from extract import ExtractError  # noqa: E402
from extract.backbones import SUPPORTED  # noqa: E402
from extract.backbones.table import main, markdown  # noqa: E402

pytestmark = pytest.mark.torch

DOCS = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"
# one per family: counting all of them takes ~20 s, these take a few
CHECKED = ("resnet18", "convnextv2_atto", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "mobilenetv3_small_100")


def _rows(text, name):
    return [line for line in text.splitlines() if line.startswith(f"| `{name}` |")]


def test_documented_rows_match_a_fresh_count():
    fresh = markdown(CHECKED)
    docs = DOCS.read_text()
    for name in CHECKED:
        assert _rows(fresh, name) and _rows(docs, name) == _rows(fresh, name), name
    assert len(_rows(fresh, "vit_tiny_patch16_224")) == 1 + 3  # summary + first, middle, last position
    for name in SUPPORTED:  # every supported model is documented, summary and exits
        assert len(_rows(docs, name)) >= 2, name


def test_the_script_prints_the_table_and_refuses_unknown_names(capsys):
    assert main(["mobilenetv3_small_100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| name | family |") and "| `mobilenetv3_small_100` | timm MobileNetV3 | 10 |" in out
    assert main(["vgg16"]) == 2
    assert "vgg16" in capsys.readouterr().err
    with pytest.raises(ExtractError, match="vgg16"):
        markdown(["vgg16"])
