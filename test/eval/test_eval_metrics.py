"""Fusion metrics: hand-computed values on tiny arrays, loop-based reference ports, properties, validation."""

from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ivfusion_ros.errors import ConfigError, InputError
from ivfusion_ros.eval import metrics as M

# ----------------------------------------------------------------------------------------------- fixtures


def _scene(rng: np.random.Generator, h: int = 64, w: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured IR/VIS pair (different structures) and their mean as the fused image, all uint8."""
    yy, xx = np.mgrid[:h, :w]
    ir = 110 + 70 * np.sin(xx / 6.0) + rng.normal(0, 6, (h, w))
    ir[h // 4 : h // 2, w // 3 : w // 2] += 60  # a warm blob
    vis = 100 + 60 * np.cos(yy / 5.0) + 30 * ((xx // 8 + yy // 8) % 2) + rng.normal(0, 6, (h, w))
    ir = np.clip(ir, 0, 255).astype(np.uint8)
    vis = np.clip(vis, 0, 255).astype(np.uint8)
    fused = ((ir.astype(np.float64) + vis) / 2.0).round().astype(np.uint8)
    return fused, ir, vis


def _noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 25.0) -> np.ndarray:
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------- hand-computed, 1 image


def test_en_hand_values() -> None:
    half = np.zeros((4, 6), np.uint8)
    half[:, 3:] = 200
    assert M.en(half) == pytest.approx(1.0, abs=1e-12)
    assert M.en(np.full((5, 5), 77, np.uint8)) == 0.0
    quarters = np.repeat(np.array([[0, 1, 2, 3]], np.uint8), 3, axis=0)  # 4 equiprobable levels
    assert M.en(quarters) == pytest.approx(2.0, abs=1e-12)


def test_en_rounds_floats_to_levels() -> None:
    a = np.array([[10.2, 10.4], [200.0, 199.6]])  # levels 10, 10, 200, 200
    assert M.en(a) == pytest.approx(1.0, abs=1e-12)


def test_sd_sf_ag_on_a_2x2_by_hand() -> None:
    f = np.array([[0, 2], [4, 6]], np.uint8)
    assert M.sd(f) == pytest.approx(math.sqrt(5.0))  # mean 3, squared deviations 9, 1, 1, 9
    assert M.sf(f) == pytest.approx(math.sqrt(4.0 + 16.0))  # horizontal steps 2, vertical steps 4
    # np.gradient on a 2x2 is one-sided everywhere: Gx = 2, Gy = 4 at every pixel
    assert M.ag(f) == pytest.approx(math.sqrt((4.0 + 16.0) / 2.0))


def test_sf_ag_on_a_3x3_peak_by_hand() -> None:
    f = np.zeros((3, 3), np.uint8)
    f[1, 1] = 8
    # 4 of the 6 horizontal differences are 0, two are +-8 (row 1); the same vertically
    assert M.sf(f) == pytest.approx(math.sqrt(128 / 6 + 128 / 6))
    # Gradient (central inside, one-sided at borders): the 4 edge-centre pixels have |G| = 8 along one axis,
    # the centre (central difference 0 - 0) and the corners have 0: AG = 4 * sqrt(64 / 2) / 9
    assert M.ag(f) == pytest.approx(4 * math.sqrt(32.0) / 9)
    ramp = np.tile(np.array([0, 3, 6], np.uint8), (3, 1))
    assert M.ag(ramp) == pytest.approx(3 / math.sqrt(2))
    assert M.sf(ramp) == pytest.approx(3.0)


# ------------------------------------------------------------------------- hand-computed, with sources


def test_mi_of_independent_halves_is_the_entropy() -> None:
    a = np.zeros((8, 8), np.uint8)
    a[:, 4:] = 255  # left/right halves
    b = np.zeros((8, 8), np.uint8)
    b[4:, :] = 255  # top/bottom halves: independent of a
    assert M.mi_pair(a, b) == pytest.approx(0.0, abs=1e-12)
    assert M.mi_pair(a, a) == pytest.approx(1.0)
    assert M.mi(a, a, b) == pytest.approx(1.0)  # MI(A, A) + MI(A, B) = H(A) + 0
    assert M.mi(a, a, a) == pytest.approx(2.0)


def test_mi_with_a_source_is_at_least_its_entropy(rng: np.random.Generator) -> None:
    _, ir, vis = _scene(rng)
    assert M.mi(ir, ir, vis) >= M.en(ir) - 1e-12
    assert M.mi(ir, ir, vis) == pytest.approx(M.en(ir) + M.mi_pair(ir, vis))


def test_cc_and_scd_by_hand(rng: np.random.Generator) -> None:
    _, ir, vis = _scene(rng)
    assert M.cc(ir, ir, ir) == pytest.approx(1.0)
    assert M.cc(ir, 255 - ir, 255 - ir) == pytest.approx(-1.0)
    a = (ir // 2).astype(np.uint8)
    b = (vis // 2).astype(np.uint8)
    f = a + b  # F - B = A and F - A = B exactly: both correlations are 1
    assert M.scd(f, a, b) == pytest.approx(2.0)
    # F = A: the difference F - A is constant, which by convention correlates 0; F - B = A - B vs A remains
    d = ir.astype(np.float64) - vis
    expected = np.corrcoef(d.ravel(), ir.astype(np.float64).ravel())[0, 1]
    assert M.scd(ir, ir, vis) == pytest.approx(expected)
    assert M.cc(np.full_like(ir, 9), ir, vis) == 0.0


def test_psnr_by_hand() -> None:
    f = np.zeros((4, 4), np.uint8)
    ir = np.full((4, 4), 10, np.uint8)
    vis = np.full((4, 4), 20, np.uint8)
    assert M.psnr(f, ir, vis) == pytest.approx(10 * math.log10(255**2 / ((100 + 400) / 2)))
    assert M.psnr(ir, ir, ir) == math.inf


# -------------------------------------------------------------------------------------------------- SSIM


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s formula written out: explicit 11x11 windows (no OpenCV, no separability)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    r = np.arange(11) - 5.0
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    wx = sliding_window_view(x, (11, 11))
    wy = sliding_window_view(y, (11, 11))
    mx = np.einsum("ijkl,kl->ij", wx, w)
    my = np.einsum("ijkl,kl->ij", wy, w)
    vx = np.einsum("ijkl,kl->ij", (wx - mx[..., None, None]) ** 2, w)
    vy = np.einsum("ijkl,kl->ij", (wy - my[..., None, None]) ** 2, w)
    cxy = np.einsum("ijkl,kl->ij", (wx - mx[..., None, None]) * (wy - my[..., None, None]), w)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(m.mean())


def test_ssim_matches_an_independent_implementation(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng, 40, 52)
    assert M.ssim_pair(fused, ir) == pytest.approx(_ssim_reference(fused, ir), abs=1e-10)
    assert M.ssim(fused, ir, vis) == pytest.approx(
        _ssim_reference(fused, ir) + _ssim_reference(fused, vis), abs=1e-10
    )


def test_ssim_of_identical_images_is_2(rng: np.random.Generator) -> None:
    _, ir, _ = _scene(rng)
    assert M.ssim_pair(ir, ir) == pytest.approx(1.0, abs=1e-12)
    assert M.ssim(ir, ir, ir) == pytest.approx(2.0, abs=1e-12)


# --------------------------------------------------------------------------------------------------- VIF


def _vifp_reference(ref: np.ndarray, dist: np.ndarray) -> float:
    """vifp_mscale.m written out with explicit 2-D 'valid' windows (np.einsum), no OpenCV."""
    ref = ref.astype(np.float64)
    dist = dist.astype(np.float64)

    def filt(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", sliding_window_view(x, w.shape), w)

    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        r = np.arange(n) - (n - 1) / 2
        w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * (n / 5.0) ** 2))
        w /= w.sum()
        if scale > 1:
            ref = filt(ref, w)[::2, ::2]
            dist = filt(dist, w)[::2, ::2]
        mu1, mu2 = filt(ref, w), filt(dist, w)
        s1 = filt(ref * ref, w) - mu1 * mu1
        s2 = filt(dist * dist, w) - mu2 * mu2
        s12 = filt(ref * dist, w) - mu1 * mu2
        s1[s1 < 0] = 0
        s2[s2 < 0] = 0
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        g[s1 < 1e-10] = 0
        sv[s1 < 1e-10] = s2[s1 < 1e-10]
        s1[s1 < 1e-10] = 0
        g[s2 < 1e-10] = 0
        sv[s2 < 1e-10] = 0
        sv[g < 0] = s2[g < 0]
        g[g < 0] = 0
        sv[sv <= 1e-10] = 1e-10
        num += np.sum(np.log10(1 + g**2 * s1 / (sv + 2.0)))
        den += np.sum(np.log10(1 + s1 / 2.0))
    return float(num / den)


def test_vif_matches_the_reference_port(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng, 48, 56)
    assert M.vif_pair(ir, fused) == pytest.approx(_vifp_reference(ir, fused), rel=1e-9)
    assert M.vif(fused, ir, vis) == pytest.approx(_vifp_reference(ir, fused) + _vifp_reference(vis, fused), rel=1e-9)


def test_vif_of_a_copy_is_1_per_term(rng: np.random.Generator) -> None:
    _, ir, _ = _scene(rng)
    assert M.vif_pair(ir, ir) == pytest.approx(1.0, abs=1e-8)
    assert M.vif(ir, ir, ir) == pytest.approx(2.0, abs=1e-8)
    assert M.vif_pair(np.full((48, 48), 50, np.uint8), ir[:48, :48]) == 1.0  # constant reference: 0/0 -> 1


# -------------------------------------------------------------------------------------------- Qabf / Nabf


def _conv2_same_loop(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB conv2(x, k, 'same') by explicit loops: flipped kernel, zero padding."""
    kf = k[::-1, ::-1]
    p = np.pad(x.astype(np.float64), 1)
    out = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = np.sum(p[i : i + 3, j : j + 3] * kf)
    return out


def _qabf_reference(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """The Xydeas-Petrovic MATLAB code as loops (with the paper's G = 1 on equal strengths)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx, sy = _conv2_same_loop(x, h3), _conv2_same_loop(x, h1)
        ang = np.empty(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                ang[i, j] = math.pi / 2 if sx[i, j] == 0 else math.atan(sy[i, j] / sx[i, j])
        return np.sqrt(sx**2 + sy**2), ang

    def q(gs: np.ndarray, as_: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
        out = np.empty(gs.shape)
        for i in range(gs.shape[0]):
            for j in range(gs.shape[1]):
                s, t = gs[i, j], gf[i, j]
                G = t / s if s > t else (1.0 if s == t and s > 0 else (s / t if t > 0 else 0.0))
                A = 1 - abs(as_[i, j] - af[i, j]) / (math.pi / 2)
                out[i, j] = 0.9994 / (1 + math.exp(-15 * (G - 0.5))) * 0.9879 / (1 + math.exp(-22 * (A - 0.8)))
        return out

    gA, aA = edges(a)
    gB, aB = edges(b)
    gF, aF = edges(f)
    return float(np.sum(q(gA, aA, gF, aF) * gA + q(gB, aB, gF, aF) * gB) / np.sum(gA + gB))


def _nabf_reference(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Kumar's objective_fusion_perform_fn.m (NABF output) as loops."""
    vt = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float) / 8
    ht = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], float) / 8

    def sobel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        e = np.pad(x.astype(np.float64), 1, mode="reflect")  # per_extn_im_fn: mirror without the edge pixel
        gv, gh = np.zeros(x.shape), np.zeros(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                gv[i, j] = np.sum(e[i : i + 3, j : j + 3] * vt)
                gh[i, j] = np.sum(e[i : i + 3, j : j + 3] * ht)
        ang = np.zeros(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                if gv[i, j] == 0 and gh[i, j] == 0:
                    ang[i, j] = 0
                elif gh[i, j] == 0:
                    ang[i, j] = math.copysign(math.pi / 2, gv[i, j])
                else:
                    ang[i, j] = math.atan(gv[i, j] / gh[i, j])
        return np.sqrt(gv**2 + gh**2), ang, gv

    gA, aA, _ = sobel(a)
    gB, aB, _ = sobel(b)
    gF, aF, _ = sobel(f)
    num = den = 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            qs, ws = [], []
            for gs, as_ in ((gA[i, j], aA[i, j]), (gB[i, j], aB[i, j])):
                t = gF[i, j]
                G = 0.0 if gs == 0 or t == 0 else (t / gs if gs > t else gs / t)
                A = abs(abs(as_ - aF[i, j]) - math.pi / 2) * 2 / math.pi
                qg = 0.9999 / (1 + math.exp(-19 * (G - 0.5)))
                qa = 0.9995 / (1 + math.exp(-22 * (A - 0.5)))
                qs.append(math.sqrt(qg * qa))
                ws.append(gs**1.5 if gs >= 2 else 0.001)
            den += ws[0] + ws[1]
            if gF[i, j] > gA[i, j] and gF[i, j] > gB[i, j]:
                num += (1 - qs[0]) * ws[0] + (1 - qs[1]) * ws[1]
    return num / den


def test_qabf_and_nabf_match_loop_ports_of_the_matlab_code(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng, 12, 15)
    noisy = _noisy(fused, rng)
    for f in (fused, noisy, ir):
        assert M.qabf(f, ir, vis) == pytest.approx(_qabf_reference(ir, vis, f), rel=1e-12)
        assert M.nabf(f, ir, vis) == pytest.approx(_nabf_reference(ir, vis, f), rel=1e-12, abs=1e-15)


def test_qabf_of_a_perfect_copy(rng: np.random.Generator) -> None:
    _, ir, vis = _scene(rng)
    perfect = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert perfect == pytest.approx(0.97480, abs=1e-5)
    # F = IR and an all-zero VIS (no edge at all, even at the zero-padded border): only the IR term counts
    assert M.qabf(ir, ir, np.zeros_like(vis)) == pytest.approx(perfect, abs=1e-12)
    assert M.qabf(ir, ir, ir) == pytest.approx(perfect, abs=1e-12)
    # F = IR with a real VIS: a gradient-weighted mix of the perfect IR term and a worse VIS term
    q = M.qabf(ir, ir, vis)
    assert 0.3 < q < perfect
    assert math.isnan(M.qabf(ir, np.zeros_like(ir), np.zeros_like(ir)))


def test_nabf_zero_without_artifacts_and_by_hand_for_a_new_edge(rng: np.random.Generator) -> None:
    _, ir, _ = _scene(rng)
    assert M.nabf(ir, ir, ir) == 0.0
    # Flat black sources, F with one vertical step: Sobel/8 with mirrored borders fires on the two columns
    # beside the step (strength 255 * 4 / 8), orientation pi/2 against the sources' 0 -> A = 0, G = 0.
    h, w = 6, 10
    src = np.zeros((h, w), np.uint8)
    f = np.zeros((h, w), np.uint8)
    f[:, 5:] = 255
    qg = 0.9999 / (1 + math.exp(19 * 0.5))
    qa = 0.9995 / (1 + math.exp(22 * 0.5))
    q = math.sqrt(qg * qa)
    # every pixel has weight 0.001 per source; the 2h artifact pixels lose (1 - q) of both weights
    expected = (2 * h * 2 * 0.001 * (1 - q)) / (h * w * 2 * 0.001)
    assert M.nabf(f, src, src) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------- properties


def test_noise_in_the_fused_image_lowers_the_reference_scores(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng, 96, 128)
    noisy = _noisy(fused, rng)
    clean, dirty = M.fusion_metrics(fused, ir, vis), M.fusion_metrics(noisy, ir, vis)
    for name in ("SSIM", "Qabf", "VIF", "PSNR", "CC"):
        assert dirty[name] < clean[name], name
    assert dirty["Nabf"] > clean["Nabf"]
    assert dirty["SF"] > clean["SF"] and dirty["AG"] > clean["AG"]  # noise looks like detail to these


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32, np.uint16])
def test_uint8_and_other_dtypes_give_identical_results(rng: np.random.Generator, dtype: type) -> None:
    fused, ir, vis = _scene(rng)
    ref = M.fusion_metrics(fused, ir, vis)
    got = M.fusion_metrics(fused.astype(dtype), ir.astype(dtype), vis.astype(dtype))
    assert got == ref


def test_fusion_metrics_equals_the_single_functions_and_keeps_order(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng)
    res = M.fusion_metrics(fused, ir, vis)
    assert list(res) == list(M.METRICS)
    single = {
        "EN": M.en(fused), "SD": M.sd(fused), "SF": M.sf(fused), "AG": M.ag(fused),
        "MI": M.mi(fused, ir, vis), "SCD": M.scd(fused, ir, vis), "CC": M.cc(fused, ir, vis),
        "VIF": M.vif(fused, ir, vis), "Qabf": M.qabf(fused, ir, vis), "Nabf": M.nabf(fused, ir, vis),
        "SSIM": M.ssim(fused, ir, vis), "PSNR": M.psnr(fused, ir, vis),
        "GlareY": M.glare_luminance(fused, ir, vis), "GlareC": M.glare_contrast(fused, ir, vis),
    }  # fmt: skip
    np.testing.assert_equal(res, single)  # NaN equals NaN here (no light effects in the scene)
    subset = M.fusion_metrics(fused, ir, vis, names=["psnr", "EN", "Psnr"])
    assert subset == {"PSNR": single["PSNR"], "EN": single["EN"]} and list(subset) == ["PSNR", "EN"]
    assert M.fusion_metrics(fused, ir, vis, names="qabf") == {"Qabf": single["Qabf"]}


def test_metric_table_directions() -> None:
    assert [k for k, v in M.METRICS.items() if not v] == ["Nabf", "GlareY"]
    assert len(M.METRICS) == 14
    with pytest.raises(TypeError):
        M.METRICS["EN"] = False  # type: ignore[index]


def test_rgb_inputs_are_converted_with_bt601_luma(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng)
    vis_rgb = np.dstack([vis, np.roll(vis, 3, axis=1), 255 - vis])
    fused_rgb = np.dstack([fused, fused // 2, np.roll(fused, 2, axis=0)])
    vis_gray = cv2.cvtColor(vis_rgb, cv2.COLOR_RGB2GRAY)
    fused_gray = cv2.cvtColor(fused_rgb, cv2.COLOR_RGB2GRAY)
    got = M.fusion_metrics(fused_rgb, np.dstack([ir] * 3), vis_rgb)
    assert got == M.fusion_metrics(fused_gray, ir, vis_gray)
    flt = M.to_gray(vis_rgb.astype(np.float64))
    assert np.allclose(flt, 0.299 * vis_rgb[..., 0] + 0.587 * vis_rgb[..., 1] + 0.114 * vis_rgb[..., 2])
    assert np.abs(flt - vis_gray).max() < 0.51  # OpenCV rounds its 14-bit fixed-point weights
    assert M.to_gray(ir[..., None]).shape == ir.shape


def test_fusion_metrics_timing_at_640x480(rng: np.random.Generator) -> None:
    fused, ir, vis = _scene(rng, 480, 640)
    M.fusion_metrics(fused, ir, vis)  # warm-up (OpenCV thread pool, allocator)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        M.fusion_metrics(fused, ir, vis)
        best = min(best, time.perf_counter() - t0)
    print(f"fusion_metrics 640x480, all 12 metrics: {best * 1e3:.0f} ms")
    assert best < 1.0


# ------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.zeros((4, 4, 3), np.uint8),), r"fused: expected a 2-D grayscale array, got shape \(4, 4, 3\)"),
        ((np.zeros((0, 4), np.uint8),), r"fused is empty \(shape \(0, 4\)\)"),
        ((np.full((4, 4), 300.0),), r"fused: values must lie in 0\.\.255 \(8-bit scale\), got 300\.\.300"),
        ((np.full((4, 4), -1),), r"values must lie in 0\.\.255"),
        ((np.full((4, 4), np.nan),), "fused has non-finite values"),
        ((np.zeros((4, 4), bool),), "expected an integer or float array, got dtype bool"),
        (([[1, 2], [3, 4]],), "fused: expected a numpy array, got list"),
    ],
)
def test_single_image_validation(args: tuple, match: str) -> None:
    with pytest.raises(InputError, match=match):
        M.en(*args)


def test_validation_of_triples_and_sizes() -> None:
    a = np.zeros((50, 60), np.uint8)
    with pytest.raises(InputError, match=r"shape mismatch: fused \(50, 60\), ir \(50, 61\), vis \(50, 60\)"):
        M.mi(a, np.zeros((50, 61), np.uint8), a)
    with pytest.raises(InputError, match=r"vis: expected a 2-D grayscale array"):
        M.cc(a, a, np.zeros((50, 60, 3), np.uint8))
    small = np.zeros((30, 60), np.uint8)
    with pytest.raises(InputError, match=r"VIF needs images of at least 41x41 pixels, got 60x30"):
        M.vif(small, small, small)
    with pytest.raises(InputError, match=r"SSIM needs images of at least 11x11 pixels, got 60x10"):
        M.ssim_pair(small[:10], small[:10])
    with pytest.raises(InputError, match=r"SF needs images of at least 2x2 pixels"):
        M.sf(small[:1])
    with pytest.raises(InputError, match=r"ir: expected \(H, W\) gray or \(H, W, 3\) RGB, got shape \(50, 60, 4\)"):
        M.fusion_metrics(a, np.zeros((50, 60, 4), np.uint8), a)
    with pytest.raises(ConfigError, match=r"unknown fusion metric 'QABF2' \(available: EN, SD, "):
        M.fusion_metrics(a, a, a, names=["EN", "QABF2"])


def test_glare_measures_see_a_kept_headlight_and_a_replaced_one() -> None:
    vis = np.full((240, 320), 20.0)
    vis[100:140, 140:180] = 255.0  # a headlight: 1600 px, above the minimum area (0.05 % = 38 px)
    vis[10:14, 10:14] = 255.0  # a street-lamp speck: 16 px, not glare
    ir = np.full_like(vis, 60.0)
    ir[90:150, 130:190] = np.where(np.indices((60, 60)).sum(0) % 8 < 4, 160.0, 40.0)  # the car's thermal shape
    area = M.glare_area(vis)
    assert area[120, 160] and area[95, 135] and not area[12, 12] and not area[5, 300]
    assert area.sum() == (40 + 14) ** 2  # dilated by 15x15: 7 px each side
    assert M.glare_area(vis, core=True).sum() == (40 - 6) ** 2  # eroded by 7x7: 3 px each side
    assert M.glare_contrast(vis, ir, vis) == pytest.approx(0.0, abs=1e-4)  # a kept headlight is flat inside
    kept_y, kept_c = M.glare_luminance(vis, ir, vis), M.glare_contrast(vis, ir, vis)
    repl_y, repl_c = M.glare_luminance(ir, ir, vis), M.glare_contrast(ir, ir, vis)
    assert repl_y < kept_y and repl_c > kept_c
    assert M.glare_luminance(ir, ir, ir) != M.glare_luminance(ir, ir, ir)  # no light effect in IR: NaN
    res = M.fusion_metrics(vis, ir, np.full_like(vis, 20.0), ["GlareY", "GlareC"])
    assert all(np.isnan(v) for v in res.values())
