"""decode_image: real RG1 chest radiograph, DICOM pixel semantics, PNG/JPEG, and every kind of bad input."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from fixtures.cxr_files import gradient, make_dicom, png_header_only, save_png
from radjepa_cli.data.decode import DecodeError, decode_image, dicom_meta
from radjepa_cli.data.embedded import rg1_dicom


def test_rg1_real_radiograph_has_radiographic_polarity():
    img = decode_image(rg1_dicom("UNCR"))  # MONOCHROME1, 15-bit CR, PA chest
    assert img.dtype == np.float32 and img.shape == (1955, 1841)
    assert 0.0 <= img.min() and img.max() <= 1.0
    h, w = img.shape
    rows = slice(int(0.25 * h), int(0.55 * h))
    lungs = np.concatenate([img[rows, int(0.2 * w):int(0.35 * w)].ravel(), img[rows, int(0.65 * w):int(0.8 * w)].ravel()])
    spine = img[rows, int(0.46 * w):int(0.54 * w)]
    assert lungs.mean() + 0.15 < spine.mean(), (lungs.mean(), spine.mean())


def test_rg1_jpeg2000_lossless_decodes_to_the_same_pixels():
    pytest.importorskip("openjpeg")  # pylibjpeg-openjpeg: pydicom's JPEG 2000 plugin
    np.testing.assert_array_equal(decode_image(rg1_dicom("J2KR")), decode_image(rg1_dicom("UNCR")))


def test_monochrome1_is_inverted_and_monochrome2_is_not(tmp_path):
    v = (gradient() * 4095).astype(np.int64)
    m2 = decode_image(make_dicom(tmp_path / "m2.dcm", v, photometric="MONOCHROME2"))
    m1 = decode_image(make_dicom(tmp_path / "m1.dcm", v, photometric="MONOCHROME1"))
    assert m2[:, 0].max() < 0.01 and m2[:, -1].min() > 0.99  # min-max scaled, rising
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_inverse_presentation_lut_flips_monochrome2(tmp_path):
    import pydicom
    v = (gradient() * 4095).astype(np.int64)
    path = make_dicom(tmp_path / "inv.dcm", v)
    ds = pydicom.dcmread(path)
    ds.PresentationLUTShape = "INVERSE"
    ds.save_as(path)
    np.testing.assert_allclose(decode_image(path), 1.0 - decode_image(make_dicom(tmp_path / "m2.dcm", v)), atol=1e-6)


def test_signed_pixels_rescale_and_window(tmp_path):
    # signed 12-bit stored values -2048..2047 (two's complement within BitsStored)
    v = np.round(gradient() * 4095 - 2048).astype(np.int64)
    img = decode_image(make_dicom(tmp_path / "s.dcm", v, bits_stored=12, signed=True))
    assert np.all(np.diff(img[0]) >= 0) and img[0, 0] == 0.0 and img[0, -1] == 1.0  # no sign-bit wrap-around
    # window on rescaled values: slope 2, intercept -100 → HU-like range -4196..3994; window centre 0 width 1000
    img = decode_image(make_dicom(tmp_path / "w.dcm", v, bits_stored=12, signed=True, rescale=(2.0, -100.0),
                                  window=(0.0, 1000.0)))
    x = v[0] * 2.0 - 100.0
    expected = np.clip((x - (0 - 0.5)) / (1000 - 1) + 0.5, 0, 1)
    np.testing.assert_allclose(img[0], expected, atol=1e-5)


def test_voi_lut_sequence_is_applied(tmp_path):
    v = (gradient(8, 16) * 15).astype(np.int64)             # stored values 0..15
    lut = (np.arange(16)[::-1] * 4000).astype(np.int64)      # a decreasing 16-bit LUT
    img = decode_image(make_dicom(tmp_path / "lut.dcm", v, bits_stored=8, voi_lut=lut))
    np.testing.assert_allclose(img[0], lut[v[0]] / 65535.0, atol=1e-6)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_bit_depths(tmp_path, bits):
    g = gradient(20, 50)
    img = decode_image(save_png(tmp_path / f"g{bits}.png", g, bits))
    assert img.dtype == np.float32 and img.shape == (20, 50)
    np.testing.assert_allclose(img, g, atol=1 / (2 ** bits - 1))


def test_jpeg_and_rgb_exports(tmp_path):
    g = (gradient(32, 32) * 255).astype(np.uint8)
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    img = decode_image(tmp_path / "rgb.jpg")
    assert img.shape == (32, 32) and abs(img[:, -1].mean() - 1.0) < 0.05 and img[:, 0].mean() < 0.05


def test_bad_inputs_name_the_file_and_the_problem(tmp_path):
    import pydicom.data
    cases = {
        "empty.png": ("", "empty file"),
        "text.png": ("hello world", "not a PNG"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(DecodeError, match=reason) as e:
            decode_image(tmp_path / name)
        assert str(tmp_path / name) in str(e.value)
    with pytest.raises(DecodeError, match="40000x40000.*max-megapixels"):
        decode_image(png_header_only(tmp_path / "bomb.png", 40000, 40000))
    with pytest.raises(DecodeError, match="max-megapixels limit of 0.001"):
        decode_image(save_png(tmp_path / "ok.png", gradient(40, 40)), max_megapixels=0.001)
    full = save_png(tmp_path / "full.png", np.random.default_rng(0).random((64, 64)))
    (tmp_path / "cut.png").write_bytes(full.read_bytes()[:300])
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(tmp_path / "cut.png")
    with pytest.raises(DecodeError, match="Modality CT is not a projection radiograph"):
        decode_image(pydicom.data.get_testdata_file("CT_small.dcm"))
    dcm = make_dicom(tmp_path / "full.dcm", (gradient() * 4095).astype(np.int64)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(dcm[:-500])
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(tmp_path / "cut.dcm")
    with pytest.raises(DecodeError, match="cannot read|empty"):
        decode_image(tmp_path / "missing.png")
    (tmp_path / "text.dcm").write_text("not dicom at all")
    with pytest.raises(DecodeError, match="not a DICOM file"):
        decode_image(tmp_path / "text.dcm")


def test_dicom_bomb_checked_from_header_before_decoding(tmp_path, monkeypatch):
    path = make_dicom(tmp_path / "big.dcm", (gradient(64, 64) * 4095).astype(np.int64))
    import radjepa_cli.data.decode as dec
    monkeypatch.setattr(dec, "_dicom_pixels", lambda *a: pytest.fail("pixels decoded before the size check"))
    with pytest.raises(DecodeError, match="64x64"):
        decode_image(path, max_megapixels=0.001)


def test_missing_codec_names_the_package(tmp_path):
    # JPEG-LS: no pydicom plugin here (pylibjpeg-libjpeg / pyjpegls are not installed)
    from pydicom.uid import JPEGLSLossless
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder
    if JPEGLSLosslessDecoder.is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    path = make_dicom(tmp_path / "jls.dcm", np.zeros((8, 8), np.int64), transfer_syntax=JPEGLSLossless,
                      pixel_bytes=b"\xff\xd8\xff\xf7garbage")
    with pytest.raises(DecodeError, match="pylibjpeg"):
        decode_image(path)


def test_decode_error_pickles_with_its_reason():
    e = pickle.loads(pickle.dumps(DecodeError("/x/y.png", "empty file (0 bytes)")))
    assert e.path == "/x/y.png" and e.reason == "empty file (0 bytes)" and "y.png" in str(e)


def test_dicom_meta_keeps_no_identifiers(tmp_path):
    import pydicom
    ds = pydicom.dcmread(make_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.int64), view="AP"))
    meta = dicom_meta(ds)
    assert meta == {"view": "AP", "modality": "DX", "body_part": "CHEST"}
    blob = repr(meta)
    for secret in ("Doe", "PAT-SECRET", "19500101", "ACC-SECRET", "Secret Hospital", ds.StudyInstanceUID):
        assert secret not in blob
