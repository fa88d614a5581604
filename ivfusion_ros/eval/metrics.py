"""Image-fusion quality metrics, computed the way the infrared-visible fusion (IVIF) literature computes them.

Every metric works on 8-bit grayscale intensities on the 0..255 scale, in float64 internally. Inputs may be
``uint8`` or any integer/float array whose values lie in [0, 255] (floats are *not* rescaled: an image in
0..1 must be multiplied by 255 first, a value outside 0..255 raises :class:`InputError`). The same image given
as ``uint8`` or as float gives bit-identical results.

Names follow the literature: ``F`` is the fused image, ``A``/``IR`` the thermal source, ``B``/``VIS`` the visible
source. Reference-based metrics sum (MI, SCD, VIF, SSIM) or average (CC, PSNR's MSE) the two source terms,
so that values line up with the tables of SeAFusion, PIAFusion, CDDFuse, DDFM and VIFB.

Where the published reference codes disagree, this module picks one convention and says which:

=======  ===========================================================================================
EN       Shannon entropy (bits) of the 256-bin histogram; floats are rounded to the nearest level.
SD       Population standard deviation (divide by M*N).
SF       sqrt(mean(horizontal diff^2) + mean(vertical diff^2)), means over the differences (SeAFusion's
         Python evaluator; VIFB's MATLAB divides the same sums by M*N, about 0.1 % lower at 640x480).
AG       mean over all M*N pixels of sqrt((Gx^2 + Gy^2) / 2), Gx/Gy from ``np.gradient`` (central
         differences, one-sided at the border) as SeAFusion/CDDFuse do; VIFB divides the same sum by
         (M-1)(N-1) (+0.4 % at 640x480).
MI       MI(F, IR) + MI(F, VIS) in bits (log2), 256x256 joint histograms (the MATLAB codes; SeAFusion's
         sklearn-based MI is in nats, i.e. ln 2 times this).
SCD      corr(F - VIS, IR) + corr(F - IR, VIS)   (Aslantas & Bendes 2015).
CC       (corr(IR, F) + corr(VIS, F)) / 2.
VIF      VIFP(IR, F) + VIFP(VIS, F), the multi-scale pixel-domain VIF of Sheikh & Bovik (``vifp_mscale.m``):
         4 scales, Gaussian windows of N = 2^(5-s)+1 taps, sigma N/5, 'valid' filtering, dyadic
         decimation, sigma_nsq = 2, eps = 1e-10 guards exactly as the MATLAB code.
Qabf     Xydeas & Petrovic (2000): Sobel with zero padding (MATLAB ``conv2(.., 'same')``), edge weights
         g^L with L = 1, Tg=0.9994 kg=-15 Dg=0.5 Ta=0.9879 ka=-22 Da=0.8.
Nabf     Fusion artifacts, the modified N_m^AB of B. K. Shreyamsha Kumar (SIVP 2013,
         ``objective_fusion_perform_fn.m`` / ``analysis_nabf.m``), with its own Petrovic parameters.
SSIM     SSIM(F, IR) + SSIM(F, VIS), Wang et al. 2004 (``ssim_index.m``): 11x11 Gaussian window sigma
         1.5, K1=0.01, K2=0.03, L=255, mean over the 'valid' region, no automatic downsampling.
PSNR     10 log10(255^2 / ((MSE(F, IR) + MSE(F, VIS)) / 2)); ``inf`` when both MSEs are 0.
GlareY   Light effects (ours, for night scenes): mean F over the *glare area* of VIS, NaN without one.
         The glare area: VIS >= 230 (saturated), 8-connected components of at least 0.05 % of the
         image, dilated by a 15x15 square (the bloom around the source). Lower: less glare kept.
GlareC   Local contrast inside the light sources: mean of the 7x7 local standard deviation of F (box
         windows, reflected borders, grey levels) over the glare components eroded by 7x7 (so every
         window lies in the saturated region, where VIS itself has contrast 0). Higher: structure
         instead of a flat blob. NaN without such pixels.
=======  ===========================================================================================

Degenerate cases, decided here: a correlation with a constant image is 0 (not NaN) so dataset means stay
finite; VIFP with a constant reference (0/0) is 1.0, as in SeAFusion's evaluator; Qabf is NaN when neither
source has a single edge (both sources all zero); PSNR is ``inf`` when F equals both sources.

All computations are vectorised numpy/OpenCV (float64 throughout, so results match the MATLAB/Python references to
~1e-12); :func:`fusion_metrics` on a 640x480 triple takes about 0.25 s on two CPU cores, most of it in the
transcendental functions of VIF, Nabf and Qabf (the test suite times it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import cv2
import numpy as np

from ivfusion_ros.errors import ConfigError, InputError

__all__ = [
    "METRICS",
    "ag",
    "cc",
    "en",
    "fusion_metrics",
    "glare_area",
    "glare_contrast",
    "glare_luminance",
    "mi",
    "mi_pair",
    "nabf",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "ssim_pair",
    "to_gray",
    "vif",
    "vif_pair",
]

#: Every metric, in reporting order, mapped to ``True`` when a higher value is better (Nabf: lower is better).
METRICS: Mapping[str, bool] = MappingProxyType(
    {
        "EN": True,
        "SD": True,
        "SF": True,
        "AG": True,
        "MI": True,
        "SCD": True,
        "CC": True,
        "VIF": True,
        "Qabf": True,
        "Nabf": False,
        "SSIM": True,
        "PSNR": True,
        "GlareY": False,
        "GlareC": True,
    }
)

# Smallest image side the windowed metrics can evaluate ('valid' filtering leaves nothing below these).
_MIN_SIDE = {"SF": 2, "AG": 2, "Qabf": 2, "Nabf": 2, "SSIM": 11, "VIF": 41}

# BT.601 luma, the weights of cv2.COLOR_RGB2GRAY.
_LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------- validation


def _as_image(x: object, what: str) -> np.ndarray:
    """Validate one 2-D grayscale image on the 0..255 scale and return it as float64."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise InputError(f"{what}: expected a 2-D grayscale array, got shape {x.shape}")
    if x.size == 0:
        raise InputError(f"{what} is empty (shape {x.shape})", reason="empty")
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{what}: expected an integer or float array, got dtype {x.dtype}")
    if x.dtype == np.uint8:
        return x.astype(np.float64)
    y = x.astype(np.float64)
    if not np.isfinite(y).all():
        raise InputError(f"{what} has non-finite values (NaN or inf)")
    lo, hi = float(y.min()), float(y.max())
    if lo < 0.0 or hi > 255.0:
        raise InputError(
            f"{what}: values must lie in 0..255 (8-bit scale), got {lo:g}..{hi:g}; clip or rescale first"
        )
    return y


def _check_shapes(**images: np.ndarray) -> None:
    shapes = {k: v.shape for k, v in images.items()}
    if len(set(shapes.values())) > 1:
        raise InputError("shape mismatch: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))


def _check_side(metric: str, x: np.ndarray) -> None:
    need = _MIN_SIDE[metric]
    if min(x.shape) < need:
        raise InputError(f"{metric} needs images of at least {need}x{need} pixels, got {x.shape[1]}x{x.shape[0]}")


def _one(f: np.ndarray) -> np.ndarray:
    return _as_image(f, "fused")


def _three(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    F, A, B = _as_image(f, "fused"), _as_image(ir, "ir"), _as_image(vis, "vis")
    _check_shapes(fused=F, ir=A, vis=B)
    return F, A, B


def to_gray(img: np.ndarray, what: str = "image") -> np.ndarray:
    """Return a 2-D gray view of ``img``: 2-D as is, ``(H, W, 1)`` squeezed, RGB ``(H, W, 3)`` as BT.601 luma.

    ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601, the weights of ``cv2.COLOR_RGB2GRAY``). ``uint8`` RGB goes
    through OpenCV itself, so the result is the rounded ``uint8`` gray that ``cv2.cvtColor`` (or
    ``cv2.imread(.., IMREAD_GRAYSCALE)`` on the same file) gives and that the published evaluations read;
    float RGB is weighted in float64 without rounding. Channels are assumed in RGB order (the package
    convention); a thermal image replicated to three channels comes back unchanged.
    """
    if not isinstance(img, np.ndarray):
        raise InputError(f"{what}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 2:
        return img
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        if img.size == 0:
            raise InputError(f"{what} is empty (shape {img.shape})", reason="empty")
        if img.dtype == np.uint8:
            return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        if np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating):
            return img.astype(np.float64) @ _LUMA
        raise InputError(f"{what}: expected an integer or float array, got dtype {img.dtype}")
    raise InputError(f"{what}: expected (H, W) gray or (H, W, 3) RGB, got shape {img.shape}")


# -------------------------------------------------------------------------------------- shared primitives


def _entropy_of_counts(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram: ``-sum p log2 p`` over the non-empty bins."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _levels(x: np.ndarray) -> np.ndarray:
    """Gray levels 0..255 as integers (floats rounded half to even, like ``np.uint8(np.round(x))``)."""
    return np.rint(x).astype(np.intp).ravel()


def _mi_levels(a: np.ndarray, b: np.ndarray) -> float:
    """MI(a, b) = H(a) + H(b) - H(a, b) in bits, from the 256x256 joint histogram of two level vectors."""
    joint = np.bincount(a * 256 + b, minlength=65536).reshape(256, 256)
    h = _entropy_of_counts(joint.sum(1)) + _entropy_of_counts(joint.sum(0)) - _entropy_of_counts(joint.ravel())
    return max(h, 0.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation ``sum(a' b') / sqrt(sum(a'^2) sum(b'^2))`` (MATLAB ``corr2``); 0 if either is constant.

    Sums are numpy reductions, not ``np.dot``: BLAS threads woken next to OpenCV's pool cost more than the sum.
    """
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b)))
    return float(np.sum(a * b)) / den if den > 0.0 else 0.0


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    d = a - b
    return float(np.mean(d * d))


def _gauss_taps(n: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', n, sigma)``; its outer product is that 2-D window exactly.

    (fspecial also zeroes taps below eps * max; none of the windows used here has such taps.)
    """
    r = (n - 1) / 2.0
    t = np.exp(-(np.arange(n) - r) ** 2 / (2.0 * sigma * sigma))
    return t / t.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable ``filter2(w, x, 'valid')`` with ``w = taps taps^T``: the full filter, cropped to the valid part."""
    r = len(taps) // 2
    y = cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT_101)
    return y[r : x.shape[0] - r, r : x.shape[1] - r]


# ------------------------------------------------------------------------------------ no-reference metrics


def en(f: np.ndarray) -> float:
    """Entropy EN = -sum_l p_l log2 p_l over the 256-bin gray histogram of F, in bits (0 for a constant image).

    Roberts et al. 2008. Float inputs are rounded to the nearest gray level first (``np.rint``).
    """
    F = _one(f)
    return _entropy_of_counts(np.bincount(_levels(F), minlength=256))


def sd(f: np.ndarray) -> float:
    """Standard deviation SD = sqrt(1/(MN) sum (F - mean F)^2) (population, ``np.std``): global contrast."""
    return float(np.std(_one(f)))


def _sf(f: np.ndarray) -> float:
    _check_side("SF", f)
    rf = np.diff(f, axis=1)
    cf = np.diff(f, axis=0)
    return math.sqrt(float(np.mean(rf * rf)) + float(np.mean(cf * cf)))


def sf(f: np.ndarray) -> float:
    """Spatial frequency SF = sqrt(RF^2 + CF^2) (Eskicioglu & Fisher 1995).

    ``RF^2 = mean((F[i, j] - F[i, j-1])^2)`` over the M(N-1) horizontal differences and ``CF^2`` likewise over
    the (M-1)N vertical ones (SeAFusion's convention; needs at least 2x2 pixels).
    """
    return _sf(_one(f))


def _ag(f: np.ndarray) -> float:
    _check_side("AG", f)
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def ag(f: np.ndarray) -> float:
    """Average gradient AG = 1/(MN) sum sqrt((Gx^2 + Gy^2) / 2) (Cui et al. 2015).

    ``Gx, Gy`` are ``np.gradient`` (MATLAB ``gradient``): central differences ``(F[j+1] - F[j-1]) / 2`` inside,
    one-sided differences on the first and last row/column. Needs at least 2x2 pixels.
    """
    return _ag(_one(f))


# ------------------------------------------------------------------------------------- reference metrics


def mi_pair(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information MI(a, b) = H(a) + H(b) - H(a, b) in bits, from the 256x256 joint gray histogram."""
    A, B = _as_image(a, "a"), _as_image(b, "b")
    _check_shapes(a=A, b=B)
    return _mi_levels(_levels(A), _levels(B))


def _mi(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    lf = _levels(f)
    return _mi_levels(lf, _levels(a)) + _mi_levels(lf, _levels(b))


def mi(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """MI = MI(F, IR) + MI(F, VIS), bits (Qu et al. 2002), each term ``H(F) + H(S) - H(F, S)``.

    Since ``MI(F, S) <= min(H(F), H(S))``, ``mi(A, A, B) = H(A) + MI(A, B) >= H(A)``.
    """
    return _mi(*_three(f, ir, vis))


def _scd(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return _corr(f - b, a) + _corr(f - a, b)


def scd(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """Sum of the correlations of differences SCD = corr(F - VIS, IR) + corr(F - IR, VIS).

    Aslantas & Bendes, AEU 2015: ``F - VIS`` approximates what F took from IR and vice versa; range [-2, 2].
    A constant difference image (e.g. F equal to one source) correlates 0.
    """
    return _scd(*_three(f, ir, vis))


def _cc(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return (_corr(a, f) + _corr(b, f)) / 2.0


def cc(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """Correlation coefficient CC = (corr(IR, F) + corr(VIS, F)) / 2 (Pearson, 0 when an image is constant)."""
    return _cc(*_three(f, ir, vis))


def _psnr(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    mse = (_mse(f, a) + _mse(f, b)) / 2.0
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def psnr(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """PSNR = 10 log10(255^2 / MSE) with MSE = (MSE(F, IR) + MSE(F, VIS)) / 2, in dB (fusion convention).

    The peak is the 8-bit range 255, not max(F). Returns ``inf`` when F equals both sources (MSE = 0), the
    mathematical limit; averaging such a value over a data set is the caller's decision.
    """
    return _psnr(*_three(f, ir, vis))


# ------------------------------------------------------------------------------------------------ SSIM

_SSIM_TAPS = _gauss_taps(11, 1.5)
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _ssim_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _filter_valid(x, _SSIM_TAPS), _filter_valid(x * x, _SSIM_TAPS)


def _ssim_from(
    x: np.ndarray, mx: tuple[np.ndarray, np.ndarray], y: np.ndarray, my: tuple[np.ndarray, np.ndarray]
) -> float:
    mu1, e11 = mx
    mu2, e22 = my
    mu12 = mu1 * mu2
    s1 = e11 - mu1 * mu1
    s2 = e22 - mu2 * mu2
    s12 = _filter_valid(x * y, _SSIM_TAPS) - mu12
    num = (2.0 * mu12 + _C1) * (2.0 * s12 + _C2)
    den = (mu1 * mu1 + mu2 * mu2 + _C1) * (s1 + s2 + _C2)
    return float(np.mean(num / den))


def ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two images (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 2004, ``ssim_index.m``).

    ``SSIM = mean over the valid window positions of
    ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with an 11x11 Gaussian
    window (sigma 1.5, normalised), ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, local moments by
    'valid' filtering (no padding, no automatic downsampling). 1.0 for identical images.
    """
    X, Y = _as_image(x, "x"), _as_image(y, "y")
    _check_shapes(x=X, y=Y)
    _check_side("SSIM", X)
    return _ssim_from(X, _ssim_moments(X), Y, _ssim_moments(Y))


def _ssim(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    _check_side("SSIM", f)
    mf = _ssim_moments(f)
    return _ssim_from(f, mf, a, _ssim_moments(a)) + _ssim_from(f, mf, b, _ssim_moments(b))


def ssim(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """SSIM = SSIM(F, IR) + SSIM(F, VIS), each as :func:`ssim_pair` (range up to 2; 2 when F = IR = VIS)."""
    return _ssim(*_three(f, ir, vis))


# ------------------------------------------------------------------------------------------------- VIF

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10
_VIF_TAPS = tuple(_gauss_taps(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5))


def _vif_pyramid(x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scale: the (low-passed, decimated) image, its local mean and local mean of squares."""
    out = []
    for scale, taps in enumerate(_VIF_TAPS, start=1):
        if scale > 1:
            x = _filter_valid(x, taps)[::2, ::2]
        out.append((x, _filter_valid(x, taps), _filter_valid(x * x, taps)))
    return out


def _vifp_from(
    ref: list[tuple[np.ndarray, np.ndarray, np.ndarray]], dist: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> float:
    num = 0.0
    den = 0.0
    eps = _VIF_EPS
    for taps, (r, mu1, e11), (d, mu2, e22) in zip(_VIF_TAPS, ref, dist):
        s1 = np.maximum(e11 - mu1 * mu1, 0.0)
        s2 = np.maximum(e22 - mu2 * mu2, 0.0)
        s12 = _filter_valid(r * d, taps) - mu1 * mu2
        # The guards of vifp_mscale.m, in its order.
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        flat_ref = s1 < eps
        g[flat_ref] = 0.0
        sv[flat_ref] = s2[flat_ref]
        s1[flat_ref] = 0.0
        flat_dist = s2 < eps
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        neg = g < 0.0
        sv[neg] = s2[neg]
        g[neg] = 0.0
        np.maximum(sv, eps, out=sv)
        # vifp_mscale.m sums log10; the base cancels in num / den, and np.log is the cheaper ufunc.
        num += float(np.sum(np.log(1.0 + g * g * s1 / (sv + _VIF_SIGMA_NSQ))))
        den += float(np.sum(np.log(1.0 + s1 / _VIF_SIGMA_NSQ)))
    return num / den if den > 0.0 else 1.0


def vif_pair(ref: np.ndarray, dist: np.ndarray) -> float:
    """Multi-scale pixel-domain VIF (VIFP) of ``dist`` against ``ref`` (Sheikh & Bovik, IEEE TIP 2006).

    At each of 4 scales s (window N = 2^(5-s)+1 taps, sigma N/5; from scale 2 on the images are first
    low-passed with that window and decimated by 2), with local Gaussian moments of the 'valid' region,
    ``g = s_rd / s_r``, ``sv = s_d - g s_rd`` and, summed over positions and scales,
    ``VIFP = sum log10(1 + g^2 s_r / (sv + sigma_nsq)) / sum log10(1 + s_r / sigma_nsq)``, sigma_nsq = 2,
    with the eps = 1e-10 guards of ``vifp_mscale.m``. 1 (up to ~1e-10) when ``dist == ref``; 1.0 when the
    reference is constant (0/0, SeAFusion's convention). Needs images of at least 41x41 pixels.
    """
    R, D = _as_image(ref, "ref"), _as_image(dist, "dist")
    _check_shapes(ref=R, dist=D)
    _check_side("VIF", R)
    return _vifp_from(_vif_pyramid(R), _vif_pyramid(D))


def _vif(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    _check_side("VIF", f)
    pf = _vif_pyramid(f)
    return _vifp_from(_vif_pyramid(a), pf) + _vifp_from(_vif_pyramid(b), pf)


def vif(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """VIF = VIFP(IR, F) + VIFP(VIS, F) (Han et al. 2013 use VIF for fusion; sources are the references)."""
    return _vif(*_three(f, ir, vis))


# ------------------------------------------------------------------------------------------------ Qabf

_QABF_SX = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # h3 of the reference code
_QABF_SY = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])  # h1
_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8
_QABF_L = 1.0


def _qabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength g = sqrt(sx^2 + sy^2) and orientation a = atan(sy / sx) (pi/2 where sx = 0), zero padding.

    MATLAB ``conv2`` flips the kernel, ``filter2D`` does not: both responses change sign, g and a do not.
    """
    sx = cv2.filter2D(x, cv2.CV_64F, _QABF_SX, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(x, cv2.CV_64F, _QABF_SY, borderType=cv2.BORDER_CONSTANT)
    g = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0.0
    a = np.arctan(sy / np.where(zero, 1.0, sx))
    a[zero] = math.pi / 2.0
    return g, a


def _qabf_transfer(gs: np.ndarray, as_: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Edge preservation Q^SF = Q_g Q_a of one source S in F, per pixel."""
    hi = np.maximum(gs, gf)
    G = np.minimum(gs, gf) / np.where(hi > 0.0, hi, 1.0)  # min/max: 1 on ties, 0 where both are 0
    A = 1.0 - np.abs(as_ - af) / (math.pi / 2.0)
    Qg = _TG / (1.0 + np.exp(_KG * (G - _DG)))
    Qa = _TA / (1.0 + np.exp(_KA * (A - _DA)))
    return Qg * Qa


def _qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    _check_side("Qabf", f)
    gA, aA = _qabf_edges(a)
    gB, aB = _qabf_edges(b)
    gF, aF = _qabf_edges(f)
    wA = gA if _QABF_L == 1.0 else gA**_QABF_L
    wB = gB if _QABF_L == 1.0 else gB**_QABF_L
    den = float(np.sum(wA) + np.sum(wB))
    if den == 0.0:
        return math.nan
    num = float(np.sum(_qabf_transfer(gA, aA, gF, aF) * wA) + np.sum(_qabf_transfer(gB, aB, gF, aF) * wB))
    return num / den


def qabf(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """Edge-information transfer Q^AB/F (Xydeas & Petrovic, Electronics Letters 2000).

    Per source S and pixel: Sobel strength g and orientation a (``atan(sy/sx)``, zero-padded borders as MATLAB
    ``conv2(.., 'same')``), ``G = min(gS, gF) / max(gS, gF)``, ``A = 1 - |aS - aF| / (pi/2)``,
    ``Q^SF = Tg / (1 + e^(kg (G - Dg))) * Ta / (1 + e^(ka (A - Da)))`` with Tg=0.9994, kg=-15, Dg=0.5,
    Ta=0.9879, ka=-22, Da=0.8; ``Qabf = sum(Q^AF wA + Q^BF wB) / sum(wA + wB)``, ``w = g^L``, L = 1.

    Perfect transfer gives ``Q^SF = 0.9994/(1+e^-7.5) * 0.9879/(1+e^-4.4) = 0.97480`` (not 1: the constants are
    the paper's). The widely copied MATLAB/Python code sets G = gF (not 1) where gS == gF; with integer images
    (edge strengths 0 or >= 1) that raises Q_g on exact ties by at most 5.5e-4; this follows the paper.
    NaN when both sources are all zero (no edge anywhere).
    """
    return _qabf(*_three(f, ir, vis))


# ------------------------------------------------------------------------------------------------ Nabf

_NABF_SV = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0  # vtemp: d/dx
_NABF_SH = np.array([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]) / 8.0  # htemp: d/dy
_N_TD, _N_WT_MIN = 2.0, 0.001  # edge threshold and the weight below it; weights above are g^1.5
_N_NRG, _N_KG, _N_SG = 0.9999, 19.0, 0.5
_N_NRA, _N_KA, _N_SA = 0.9995, 22.0, 0.5


def _nabf_edges(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kumar's ``sobel_fn``: (kernel / 8) correlation on the mirrored image (``per_extn_im_fn`` = reflect-101).

    Orientation ``atan(gv / gh)``: +-pi/2 where gh = 0 (MATLAB ``atan(+-Inf)``), 0 where both are 0.
    """
    gv = cv2.filter2D(x, cv2.CV_64F, _NABF_SV, borderType=cv2.BORDER_REFLECT_101)
    gh = cv2.filter2D(x, cv2.CV_64F, _NABF_SH, borderType=cv2.BORDER_REFLECT_101)
    g = np.sqrt(gv * gv + gh * gh)
    zero = gh == 0.0
    a = np.arctan(gv / np.where(zero, 1.0, gh))
    a[zero] = np.sign(gv[zero]) * (math.pi / 2.0)
    return g, a


def _nabf_transfer(gs: np.ndarray, as_: np.ndarray, gf: np.ndarray, af: np.ndarray) -> np.ndarray:
    """Kumar's Q^SF = sqrt(Q_g Q_a) with his strength ratio (0 where either is 0) and folded orientation."""
    hi = np.maximum(gs, gf)
    lo = np.minimum(gs, gf)
    G = np.where(lo > 0.0, lo / np.where(hi > 0.0, hi, 1.0), 0.0)
    A = np.abs(np.abs(as_ - af) - math.pi / 2.0) * (2.0 / math.pi)
    Qg = _N_NRG / (1.0 + np.exp(-_N_KG * (G - _N_SG)))
    Qa = _N_NRA / (1.0 + np.exp(-_N_KA * (A - _N_SA)))
    return np.sqrt(Qg * Qa)


def _nabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    _check_side("Nabf", f)
    gA, aA = _nabf_edges(a)
    gB, aB = _nabf_edges(b)
    gF, aF = _nabf_edges(f)
    wA = np.where(gA >= _N_TD, gA * np.sqrt(gA), _N_WT_MIN)  # g^Lg, Lg = 1.5
    wB = np.where(gB >= _N_TD, gB * np.sqrt(gB), _N_WT_MIN)
    artifact = (gF > gA) & (gF > gB)
    loss = (1.0 - _nabf_transfer(gA, aA, gF, aF)) * wA + (1.0 - _nabf_transfer(gB, aB, gF, aF)) * wB
    return float(np.sum(loss[artifact]) / (np.sum(wA) + np.sum(wB)))


def nabf(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """Fusion artifacts N_m^AB, the modified Nabf of B. K. Shreyamsha Kumar (SIVP 7(6), 2013); lower is better.

    Petrovic's edge model with Kumar's parameters: Sobel/8 on the reflect-101-extended image, strength
    ``g``, orientation ``a = atan(gv/gh)``; ``G = min/max`` of the strengths (0 if either is 0),
    ``A = ||aS - aF| - pi/2| * 2/pi``; ``Q^SF = sqrt(Nrg/(1+e^(-kg(G-0.5))) * Nra/(1+e^(-ka(A-0.5))))`` with
    Nrg=0.9999, kg=19, Nra=0.9995, ka=22; weights ``w = g^1.5`` where ``g >= Td = 2``, else 0.001. Then
    ``Nabf = sum over AM [ (1 - Q^AF) wA + (1 - Q^BF) wB ] / sum (wA + wB)`` where the artifact mask AM marks
    pixels whose fused edge is stronger than both source edges (``gF > gA and gF > gB``). This is the
    ``NABF`` output of ``objective_fusion_perform_fn.m`` (Petrovic's original ``(2 - Q^AF - Q^BF)(wA + wB)``
    form, ``NABF1`` there, double counts and is not what fusion papers report). 0 when F has no edge stronger
    than both sources (e.g. F = IR = VIS); at most 1.
    """
    return _nabf(*_three(f, ir, vis))


# ------------------------------------------------------------------------------------------- light effects

#: VIS grey level from which a pixel counts as saturated (a light source), ...
GLARE_LEVEL = 230
#: ... the smallest light source, as a share of the image (street-lamp specks are not glare), ...
GLARE_MIN_AREA = 0.0005
#: ... the side of the square the sources are dilated by (their bloom), and the local-contrast window.
GLARE_DILATE, GLARE_WINDOW = 15, 7


def glare_area(vis: np.ndarray, core: bool = False) -> np.ndarray:
    """Bool mask of the light effects of a visible gray image (see the module table): the sources with their
    bloom (``GlareY``), or with ``core`` the inside of the sources (``GlareC``)."""
    sat = (np.asarray(vis) >= GLARE_LEVEL).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(sat, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= GLARE_MIN_AREA * sat.size
    mask = keep[labels].astype(np.uint8)
    if core:
        return cv2.erode(mask, np.ones((GLARE_WINDOW, GLARE_WINDOW), np.uint8), borderType=cv2.BORDER_REPLICATE) > 0
    return cv2.dilate(mask, np.ones((GLARE_DILATE, GLARE_DILATE), np.uint8)) > 0


def _glare_y(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    m = glare_area(b)
    return float(f[m].mean()) if m.any() else math.nan


def _glare_c(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    m = glare_area(b, core=True)
    if not m.any():
        return math.nan
    k = (GLARE_WINDOW, GLARE_WINDOW)
    mean = cv2.boxFilter(f, cv2.CV_64F, k, borderType=cv2.BORDER_REFLECT_101)
    sq = cv2.boxFilter(f * f, cv2.CV_64F, k, borderType=cv2.BORDER_REFLECT_101)
    return float(np.sqrt(np.maximum(sq - mean * mean, 0.0))[m].mean())


def glare_luminance(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """``GlareY``: mean fused gray level over the glare area of ``vis`` (NaN without light effects)."""
    return _glare_y(*_three(f, ir, vis))


def glare_contrast(f: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """``GlareC``: mean 7x7 local standard deviation of the fused image inside the light sources (NaN without)."""
    return _glare_c(*_three(f, ir, vis))


# ----------------------------------------------------------------------------------------------- all of them

_REFERENCE_FREE = {
    "EN": lambda f: _entropy_of_counts(np.bincount(_levels(f), minlength=256)),
    "SD": lambda f: float(np.std(f)),
    "SF": _sf,
    "AG": _ag,
}
_WITH_SOURCES = {
    "MI": _mi,
    "SCD": _scd,
    "CC": _cc,
    "VIF": _vif,
    "Qabf": _qabf,
    "Nabf": _nabf,
    "SSIM": _ssim,
    "PSNR": _psnr,
    "GlareY": _glare_y,
    "GlareC": _glare_c,
}


def _resolve_names(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(METRICS)
    if isinstance(names, str):
        names = [names]
    lookup = {k.lower(): k for k in METRICS}
    out: list[str] = []
    for n in names:
        key = lookup.get(str(n).lower())
        if key is None:
            raise ConfigError(f"unknown fusion metric {n!r} (available: {', '.join(METRICS)})")
        if key not in out:
            out.append(key)
    return out


def fusion_metrics(
    fused: np.ndarray, ir: np.ndarray, vis: np.ndarray, names: Iterable[str] | None = None
) -> dict[str, float]:
    """Compute the fusion metrics named in ``names`` (default: all of :data:`METRICS`, in that order).

    ``fused``, ``ir`` and ``vis`` may be 2-D gray or ``(H, W, 3)`` RGB (converted with :func:`to_gray`, BT.601
    luma), ``uint8`` or float on the 0..255 scale, all of the same height and width. Names are matched
    case-insensitively and returned in their canonical spelling, in the order asked. Each image is
    validated and converted once; the result equals calling the single-metric functions on the grays.
    """
    wanted = _resolve_names(names)
    F = _as_image(to_gray(fused, "fused"), "fused")
    A = _as_image(to_gray(ir, "ir"), "ir")
    B = _as_image(to_gray(vis, "vis"), "vis")
    _check_shapes(fused=F, ir=A, vis=B)
    out: dict[str, float] = {}
    for name in wanted:
        if name in _REFERENCE_FREE:
            out[name] = _REFERENCE_FREE[name](F)
        else:
            out[name] = _WITH_SOURCES[name](F, A, B)
    return out
