import io

import numpy as np
import pytest
from PIL import Image

from sphinx_vi.images import ImageError, ImageTooLargeError, load_image


def _save(img: Image.Image, path, fmt="PNG", **kw):
    img.save(path, fmt, **kw)
    return path


def test_rgb_png_loads(tmp_path):
    p = _save(Image.new("RGB", (7, 5), (10, 20, 30)), tmp_path / "a.png")
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (7, 5) and img.getpixel((0, 0)) == (10, 20, 30)


def test_missing_empty_and_non_image_files_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.png: file not found"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: file is empty \(0 bytes\)"):
        load_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    with pytest.raises(ImageError, match="notes.png: not a recognised image format"):
        load_image(text)
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_truncated_jpeg_is_a_clear_error(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg: image data is truncated or corrupt"):
        load_image(p)


def test_sixteen_bit_png_is_scaled_to_eight_bit(tmp_path):
    arr = np.full((4, 4), 65535, dtype=np.uint16)
    arr[0, 0] = 0
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    img = load_image(p)
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (255, 255, 255) and img.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_palette_and_rgba_convert(tmp_path):
    cmyk = _save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), tmp_path / "c.jpg", "JPEG")
    r, g, b = load_image(cmyk).getpixel((1, 1))
    assert r > 200 and g < 60 and b < 60  # red
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 255] + [0] * 765)
    assert load_image(_save(pal, tmp_path / "p.png")).getpixel((0, 0)) == (0, 0, 255)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent → white background
    assert load_image(_save(rgba, tmp_path / "t.png")).getpixel((0, 0)) == (255, 255, 255)
    gray = Image.new("L", (4, 4), 77)
    assert load_image(gray).getpixel((0, 0)) == (77, 77, 77)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    p = tmp_path / "rot.jpg"
    img.save(p, "JPEG", exif=exif)
    assert load_image(p).size == (20, 40)


def test_pixel_limit_refuses_before_decoding(tmp_path):
    p = _save(Image.new("RGB", (300, 300)), tmp_path / "big.png")
    with pytest.raises(ImageTooLargeError, match=r"big.png: image is 300x300 = 90,000 pixels, above the limit of 10,000"):
        load_image(p, max_pixels=10_000)
    assert load_image(p, max_pixels=None).size == (300, 300)


@pytest.mark.parametrize(
    "arr",
    [
        np.zeros((5, 6), np.uint8),
        np.zeros((5, 6, 1), np.uint8),
        np.zeros((5, 6, 3), np.uint8),
        np.zeros((5, 6, 4), np.uint8),
        np.ones((5, 6, 3), np.float32),
        np.full((5, 6), 65535, np.uint16),
        np.ones((5, 6), bool),
    ],
)
def test_arrays_of_common_layouts(arr):
    img = load_image(arr)
    assert img.mode == "RGB" and img.size == (6, 5)


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.zeros((5, 6, 2), np.uint8), "expected an array of shape"),
        (np.zeros((2, 5, 6, 3), np.uint8), "expected an array of shape"),
        (np.full((5, 6), np.nan, np.float32), "NaN"),
        (np.full((5, 6), -3, np.int32), "unsupported array dtype"),
    ],
)
def test_bad_arrays(arr, match):
    with pytest.raises(ImageError, match=match):
        load_image(arr)


def test_bytes_and_wrong_types():
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, "PNG")
    assert load_image(buf.getvalue()).size == (3, 3)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="expected a path"):
        load_image(12)  # type: ignore[arg-type]
