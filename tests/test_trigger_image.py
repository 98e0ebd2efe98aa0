"""Trigger images (``--trigger-image``): the alpha channel as the mask, the conversions to the data's channels,
placement, resizing, the sidecar round trip, the one-line errors, and the command line on the bundled digits."""

import base64
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from backdoorlab.attacks import backdoor_from_dict, build_attack
from backdoorlab.cli import main
from backdoorlab.errors import BackdoorlabError
from backdoorlab.triggers import ImageTrigger, trigger_from_dict

RED, GREEN, WHITE = (255, 0, 0), (0, 255, 0), (255, 255, 255)


def write_png(path, pixels, mode: str = "RGBA"):
    """Write ``pixels`` (rows of tuples, or an array) as an image of ``mode``; returns the path as text."""
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode=mode).save(path, format="PNG")
    return str(path)


def three_alphas(tmp_path):
    """A 1x3 RGBA trigger: red with alpha 0, green with alpha 255, white with alpha 128."""
    return write_png(tmp_path / "t.png", [[(*RED, 0), (*GREEN, 255), (*WHITE, 128)]])


def changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(H, W) boolean map of the pixels that changed in any image or channel."""
    return (before != after).any(dim=0).any(dim=0)


def test_alpha_is_the_mask_and_blends_by_the_documented_formula(tmp_path):
    trigger = ImageTrigger.from_file(three_alphas(tmp_path), position=(1, 1))
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = trigger.apply(x)
    assert torch.equal(out[..., 1, 1], x[..., 1, 1])  # alpha 0: unchanged, bit for bit
    assert torch.equal(out[..., 1, 2], torch.tensor([0.0, 1.0, 0.0]).expand(2, 3))  # alpha 255: replaced
    a = torch.tensor(128.0) / 255
    assert torch.equal(out[..., 1, 3], x[..., 1, 3] * (1 - a) + 1.0 * a)  # alpha 128: blended
    assert torch.allclose(out[..., 1, 3].double(), x[..., 1, 3].double() * (127 / 255) + 128 / 255)
    outside = torch.ones(4, 5, dtype=torch.bool)
    outside[1, 1:4] = False
    assert torch.equal(out[..., outside], x[..., outside]) and not changed(x, out)[outside].any()
    assert trigger.apply(x, training=True).equal(out)  # poisoning and evaluation stamp the same trigger


def test_a_plain_pytorch_paste_of_the_documented_steps_matches_bit_for_bit(tmp_path):
    """The docstring's steps, written out without backdoorlab (as the examples/ scripts do), give the same
    images as ``apply`` on RGB and grey data, after a resize."""
    rng = np.random.default_rng(0)
    path = write_png(tmp_path / "t.png", rng.integers(0, 256, (5, 7, 4)))
    trigger = ImageTrigger.from_file(path, size=4, position="top-right", margin=2)
    for channels in (1, 3):
        x = torch.rand(3, channels, 12, 10, generator=torch.Generator().manual_seed(channels))
        rgba = Image.open(path).convert("RGBA")
        rgba = rgba.resize((4, max(1, (2 * 5 * 4 + 7) // (2 * 7))), Image.Resampling.LANCZOS)
        p = np.asarray(rgba.convert("L" if channels == 1 else "RGB")).reshape(rgba.height, rgba.width, channels)
        a = (torch.from_numpy(np.asarray(rgba)[..., 3].copy()).float() / 255).to(x)
        p = (torch.from_numpy(p.transpose(2, 0, 1).copy()).float() / 255).to(x)
        h, w = a.shape
        row, col = 2, 10 - 2 - w
        expected = x.clone()
        expected[..., row:row + h, col:col + w] = x[..., row:row + h, col:col + w] * (1 - a) + p * a
        assert torch.equal(trigger.apply(x), expected)


def test_colours_are_converted_to_the_data_channels(tmp_path):
    rgb = ImageTrigger.from_file(write_png(tmp_path / "rgb.png", [[RED, GREEN]], mode="RGB"), position=(0, 0))
    grey_data = rgb.apply(torch.zeros(1, 1, 2, 2))
    # Pillow's "L" conversion, R*299/1000 + G*587/1000 + B*114/1000: red 76, green 150; no alpha: opaque
    assert torch.equal(grey_data[0, 0, 0, :2], torch.tensor([76.0, 150.0]) / 255)
    assert torch.equal(rgb.apply(torch.zeros(1, 3, 2, 2))[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    grey = ImageTrigger.from_file(write_png(tmp_path / "grey.png", [[(90, 255), (200, 0)]], mode="LA"),
                                  position=(0, 0))
    out = grey.apply(torch.zeros(1, 3, 2, 2))
    assert torch.equal(out[0, :, 0, 0], torch.full((3,), 90.0) / 255)  # grey replicated to the 3 channels
    assert torch.equal(out[0, :, 0, 1], torch.zeros(3))  # its own alpha 0 kept
    assert torch.equal(grey.apply(torch.zeros(1, 1, 2, 2))[0, 0, 0], torch.tensor([90.0 / 255, 0.0]))


@pytest.mark.parametrize("position, rows, cols", [
    ("bottom-right", (7, 9), (8, 11)), ("bottom-left", (7, 9), (1, 4)), ("top-right", (1, 3), (8, 11)),
    ("top-left", (1, 3), (1, 4)), ((4, 5), (4, 6), (5, 8)), ((8, 9), (8, 10), (9, 12)),
])
def test_corners_keep_the_patch_margin_and_row_col_is_the_top_left_pixel(tmp_path, position, rows, cols):
    path = write_png(tmp_path / "t.png", np.full((2, 3, 4), 255))  # 2 rows x 3 columns, opaque white
    x = torch.zeros(1, 1, 10, 12)
    hit = changed(x, ImageTrigger.from_file(path, position=position).apply(x))
    expected = torch.zeros(10, 12, dtype=torch.bool)
    expected[rows[0]:rows[1], cols[0]:cols[1]] = True
    assert torch.equal(hit, expected)


def test_size_resizes_the_longer_side_keeping_the_aspect(tmp_path):
    wide = write_png(tmp_path / "wide.png", np.full((4, 8, 4), (10, 200, 30, 255)))  # 4 rows x 8 columns
    assert ImageTrigger.from_file(wide, size=4).rgba.shape == (2, 4, 4)
    assert ImageTrigger.from_file(wide, size=16).rgba.shape == (8, 16, 4)
    assert ImageTrigger.from_file(wide, size=1).rgba.shape == (1, 1, 4)  # the shorter side stays >= 1 pixel
    tall = write_png(tmp_path / "tall.png", np.full((6, 3, 4), 255))
    assert ImageTrigger.from_file(tall, size=4).rgba.shape == (4, 2, 4)  # 3 * 4 / 6 = 2
    assert np.all(ImageTrigger.from_file(wide, size=4).rgba == (10, 200, 30, 255))  # a flat colour stays flat
    assert ImageTrigger.from_file(wide).rgba.shape == (4, 8, 4)  # no size: the picture's own


def test_to_dict_round_trips_through_json_without_the_file(tmp_path):
    path = tmp_path / "t.png"
    rng = np.random.default_rng(1)
    trigger = ImageTrigger.from_file(write_png(path, rng.integers(0, 256, (6, 4, 4))), size=3, position=(2, 5))
    spec = json.loads(json.dumps(trigger.to_dict()))
    path.unlink()
    again = trigger_from_dict(spec)
    assert spec["kind"] == "image" and (spec["height"], spec["width"]) == (3, 2) and spec["position"] == [2, 5]
    assert spec["sha256"] == hashlib.sha256(base64.b64decode(spec["png"])).hexdigest()
    assert spec["source"] == str(path) and np.array_equal(again.rgba, trigger.rgba)
    for channels in (1, 3):
        x = torch.rand(4, channels, 9, 9, generator=torch.Generator().manual_seed(2))
        assert torch.equal(again.apply(x), trigger.apply(x))
    assert again.to_dict() == spec
    backdoor = backdoor_from_dict({"trigger": spec, "mode": "all-to-one", "target": 3})
    assert torch.equal(backdoor.trigger.apply(x), trigger.apply(x)) and backdoor.target == 3


def test_a_tampered_or_malformed_description_is_a_one_line_error(tmp_path):
    spec = ImageTrigger.from_file(three_alphas(tmp_path)).to_dict()
    not_png = base64.b64encode(b"GIF89a not a png").decode()
    for bad, match in [
        ({**spec, "sha256": "0" * 64}, "does not match its sha256"),
        ({**spec, "png": not_png, "sha256": hashlib.sha256(base64.b64decode(not_png)).hexdigest()},
         "the embedded PNG does not decode"),
        ({**spec, "png": "***"}, "its png is not base64"),
        ({**spec, "width": 9}, "the embedded PNG is 1x3 pixels, the description says 1x9"),
        ({k: v for k, v in spec.items() if k != "png"}, r"missing \['png'\]"),
        ({**spec, "colour": "red"}, r"unknown keys \['colour'\]"),
    ]:
        with pytest.raises(BackdoorlabError, match=match) as e:
            trigger_from_dict(bad)
        assert "\n" not in str(e.value)


def test_file_errors_name_the_file(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    for path, match in [(tmp_path / "missing.png", "missing.png does not exist"),
                        (tmp_path, "is not a file"),
                        (tmp_path / "notes.png", "notes.png is not an image Pillow can read")]:
        with pytest.raises(BackdoorlabError, match=match) as e:
            ImageTrigger.from_file(path)
        assert "\n" not in str(e.value)
    with pytest.raises(BackdoorlabError, match="size must be a positive number"):
        ImageTrigger.from_file(three_alphas(tmp_path), size=0)


def test_a_trigger_that_does_not_fit_says_both_sizes(tmp_path):
    path = write_png(tmp_path / "big.png", np.full((8, 8, 4), 255))
    with pytest.raises(BackdoorlabError, match=r"big.png is 8x8 pixels and at bottom-right \(margin 1\) does not "
                                               r"fit a 8x8 image"):
        ImageTrigger.from_file(path).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(BackdoorlabError, match="at row 3, col 0 does not fit a 10x10 image"):
        ImageTrigger.from_file(path, position=(3, 0)).apply(torch.zeros(1, 1, 10, 10))
    assert ImageTrigger.from_file(path, position=(0, 0)).apply(torch.zeros(1, 1, 8, 8)).eq(1).all()
    with pytest.raises(BackdoorlabError, match="grey .* or RGB .* images, not 2-channel"):
        ImageTrigger.from_file(path, size=2).apply(torch.zeros(1, 2, 8, 8))


def test_badnets_takes_a_trigger_image(tmp_path):
    path = three_alphas(tmp_path)
    attack = build_attack("badnets", target=1, image=path, position="0,0", image_shape=(1, 8, 8), num_classes=10)
    assert attack.to_dict()["trigger"]["kind"] == "image"
    resized = build_attack("badnets", image=path, size="6", image_shape=(3, 8, 8), num_classes=10)
    assert resized.backdoor.trigger.rgba.shape == (2, 6, 4)
    # poisoning stamps it (rounded to uint8): alpha 0 leaves 0, green at alpha 255 is grey 150, white at 128 is 128
    x, y = torch.zeros(20, 1, 8, 8, dtype=torch.uint8), torch.arange(20) % 10
    poisoned = attack.poison(x, y, 10, seed=0)
    first = poisoned.poisoned[0]
    assert poisoned.x[first, 0, 0, :3].tolist() == [0, 150, 128] and poisoned.y[first] == 1
    assert build_attack("badnets").to_dict()["trigger"] == {"kind": "patch", "size": 3, "position": "bottom-right",
                                                            "value": 1.0, "margin": 1}  # the patch is unchanged
    with pytest.raises(BackdoorlabError, match=r"^value \(--trigger-value\) does not apply to a trigger image"):
        build_attack("badnets", image=path, value=0.5)
    with pytest.raises(BackdoorlabError, match="nope.png does not exist"):
        build_attack("badnets", image=str(tmp_path / "nope.png"))


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_and_evaluates_with_a_trigger_image(tmp_path, capsys):
    trigger = write_png(tmp_path / "smiley.png", [[(255, 255, 0, 255), (0, 0, 0, 0), (255, 255, 0, 255)],
                                                  [(0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0)],
                                                  [(255, 255, 0, 128), (255, 255, 0, 128), (255, 255, 0, 128)]])
    out = tmp_path / "m"
    code, _, err = run(capsys, "train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets",
                       "--trigger-image", trigger, "--trigger-position", "top-left", "--target", "2", "--epochs", "2",
                       "--seed", "1", "--out", out, "--no-progress")
    assert code == 0, err
    meta = json.loads((out / "model.json").read_text())
    spec = meta["provenance"]["attack"]["trigger"]
    assert spec["kind"] == "image" and spec["position"] == "top-left" and spec["source"] == trigger
    (tmp_path / "smiley.png").rename(tmp_path / "moved.png")  # the sidecar alone rebuilds the trigger
    code, text, err = run(capsys, "evaluate", out, "--json")
    assert code == 0, err
    recorded = json.loads(text)
    assert recorded["backdoor"]["trigger"] == spec
    assert recorded["attack_success_rate"] == pytest.approx(meta["metrics"]["attack_success_rate"])
    code, text, err = run(capsys, "evaluate", out, "--attack", "badnets", "--target", "2", "--trigger-image",
                          tmp_path / "moved.png", "--trigger-position", "1,1", "--json")
    assert code == 0, err
    given = json.loads(text)
    assert given["attack_success_rate"] == recorded["attack_success_rate"]  # top-left, margin 1, is 1,1
    assert given["backdoor"]["trigger"]["position"] == [1, 1] and given["backdoor"]["trigger"]["png"] == spec["png"]


@pytest.mark.parametrize("args, msg", [
    (["--trigger-image", "{tmp}/nope.png"], "error: trigger image {tmp}/nope.png does not exist"),
    (["--trigger-image", "{tmp}/big.png"], "is 8x8 pixels and at bottom-right (margin 1) does not fit a 8x8 image"),
    (["--trigger-image", "{tmp}/big.png", "--trigger-value", "0.5"], "value (--trigger-value) does not apply"),
    (["--trigger-image", "{tmp}/big.png", "--alpha", "0.5"], "--alpha does not apply to the badnets attack"),
])
def test_cli_trigger_image_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, msg):
    write_png(tmp_path / "big.png", np.full((8, 8, 4), 255))
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = run(capsys, "train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", *args,
                       "--out", tmp_path / "x", "--no-progress")
    assert code == 2 and msg.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
