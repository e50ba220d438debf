"""Human3.6M cameras and the camera geometry used by the loaders (§1.3-§1.5).

The intrinsic and extrinsic tables are the public Human3.6M calibration as distributed with
VideoPose3D (restated here as data). Quaternions are (w, x, y, z); translations are stored in mm
as published and converted to metres by `camera_extrinsics`, because the 3D data is in metres.
"""

from __future__ import annotations

import numpy as np

H36M_CAMERA_IDS: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")

# Per camera (fixed order above): center (px), focal_length (px), radial k1..k3, tangential
# p1 p2, image resolution.
H36M_INTRINSICS: tuple[dict, ...] = (
    {
        "id": "54138969",
        "center": (512.54150390625, 515.4514770507812),
        "focal_length": (1145.0494384765625, 1143.7811279296875),
        "radial_distortion": (-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043),
        "tangential_distortion": (-0.0009756988729350269, -0.00142447161488235),
        "res_w": 1000,
        "res_h": 1002,
    },
    {
        "id": "55011271",
        "center": (508.8486328125, 508.0649108886719),
        "focal_length": (1149.6756591796875, 1147.5916748046875),
        "radial_distortion": (-0.1942136287689209, 0.2404085397720337, 0.006819975562393665),
        "tangential_distortion": (-0.0016190266469493508, -0.0027408944442868233),
        "res_w": 1000,
        "res_h": 1000,
    },
    {
        "id": "58860488",
        "center": (519.8158569335938, 501.40264892578125),
        "focal_length": (1149.1407470703125, 1148.7989501953125),
        "radial_distortion": (-0.2083381861448288, 0.25548800826072693, -0.0024604974314570427),
        "tangential_distortion": (0.0014843869721516967, -0.0007599993259645998),
        "res_w": 1000,
        "res_h": 1000,
    },
    {
        "id": "60457274",
        "center": (514.9682006835938, 501.88201904296875),
        "focal_length": (1145.5113525390625, 1144.77392578125),
        "radial_distortion": (-0.198384091258049, 0.21832367777824402, -0.008947807364165783),
        "tangential_distortion": (-0.0005872055771760643, -0.0018133620033040643),
        "res_w": 1000,
        "res_h": 1002,
    },
)

# subject -> 4 x (orientation quaternion (w, x, y, z), translation (mm)). S2-S4 have none.
# fmt: off
H36M_EXTRINSICS: dict[str, tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]] = {
    "S1": (
        ((0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088),
         (1841.1070556640625, 4955.28466796875, 1563.4454345703125)),
        ((0.6157187819480896, -0.764836311340332, -0.14833825826644897, 0.11794740706682205),
         (1761.278564453125, -5078.0068359375, 1606.2650146484375)),
        ((0.14651472866535187, -0.14647851884365082, 0.7653023600578308, -0.6094175577163696),
         (-1846.7777099609375, 5215.04638671875, 1491.972412109375)),
        ((0.5834008455276489, -0.7853162288665771, 0.14548823237419128, -0.14749594032764435),
         (-1794.7896728515625, -3722.698974609375, 1574.8927001953125)),
    ),
    "S5": (
        ((0.1467377245426178, -0.162370964884758, -0.7551892995834351, 0.6178938746452332),
         (2097.3916015625, 4880.94482421875, 1605.732421875)),
        ((0.6159758567810059, -0.7626792192459106, -0.15728192031383514, 0.1189815029501915),
         (2031.7008056640625, -5167.93310546875, 1612.923095703125)),
        ((0.14291371405124664, -0.12907841801643372, 0.7678384780883789, -0.6110143065452576),
         (-1620.5948486328125, 5171.65869140625, 1496.43701171875)),
        ((0.5920479893684387, -0.7814217805862427, 0.1274748593568802, -0.15036417543888092),
         (-1637.1737060546875, -3867.3173828125, 1547.033203125)),
    ),
    "S6": (
        ((0.1337897777557373, -0.15692396461963654, -0.7571090459823608, 0.6198879480361938),
         (1935.4517822265625, 4950.24560546875, 1618.0838623046875)),
        ((0.6147197484970093, -0.7628812789916992, -0.16174767911434174, 0.11819244921207428),
         (1969.803955078125, -5128.73876953125, 1632.77880859375)),
        ((0.1529948115348816, -0.13529130816459656, 0.7646096348762512, -0.6112781167030334),
         (-1769.596435546875, 5185.361328125, 1476.993408203125)),
        ((0.5916101336479187, -0.7804774045944214, 0.12832270562648773, -0.1561593860387802),
         (-1721.668701171875, -3884.13134765625, 1540.4879150390625)),
    ),
    "S7": (
        ((0.1435241848230362, -0.1631336808204651, -0.7548328638076782, 0.6188824772834778),
         (1974.512939453125, 4926.3544921875, 1597.8326416015625)),
        ((0.6141672730445862, -0.7638262510299683, -0.1596645563840866, 0.1177929937839508),
         (1937.0584716796875, -5119.7900390625, 1631.5665283203125)),
        ((0.14550060033798218, -0.12874816358089447, 0.7660516500473022, -0.6127139329910278),
         (-1741.8111572265625, 5208.24951171875, 1464.8245849609375)),
        ((0.5912848114967346, -0.7821764349937439, 0.12445473670959473, -0.15196487307548523),
         (-1734.7105712890625, -3832.42138671875, 1548.5830078125)),
    ),
    "S8": (
        ((0.14110587537288666, -0.15589867532253265, -0.7561917304992676, 0.619644045829773),
         (2150.65185546875, 4896.1611328125, 1611.9046630859375)),
        ((0.6169601678848267, -0.7647668123245239, -0.14846350252628326, 0.11158157885074615),
         (2219.965576171875, -5148.453125, 1613.0440673828125)),
        ((0.1471444070339203, -0.13377119600772858, 0.7670128345489502, -0.6100369691848755),
         (-1571.2215576171875, 5137.0185546875, 1498.1761474609375)),
        ((0.5927824378013611, -0.7825870513916016, 0.12147816270589828, -0.14631995558738708),
         (-1476.913330078125, -3896.7412109375, 1547.97216796875)),
    ),
    "S9": (
        ((0.15540587902069092, -0.15548215806484222, -0.7532095313072205, 0.6199594736099243),
         (2044.45849609375, 4935.1171875, 1481.2275390625)),
        ((0.618784487247467, -0.7634735107421875, -0.14132238924503326, 0.11933968216180801),
         (1990.959716796875, -5123.810546875, 1568.8048095703125)),
        ((0.13357827067375183, -0.1367100477218628, 0.7689454555511475, -0.6100738644599915),
         (-1670.9921875, 5211.98583984375, 1528.387939453125)),
        ((0.5879399180412292, -0.7823407053947449, 0.1427614390850067, -0.14794869720935822),
         (-1696.04345703125, -3827.099853515625, 1591.4127197265625)),
    ),
    "S11": (
        ((0.15232472121715546, -0.15442320704460144, -0.7547563314437866, 0.6191070079803467),
         (2098.440185546875, 4926.5546875, 1500.278564453125)),
        ((0.6189449429512024, -0.7600917220115662, -0.15300633013248444, 0.1255258321762085),
         (2083.182373046875, -4912.1728515625, 1561.07861328125)),
        ((0.14943228662014008, -0.15650227665901184, 0.7681233882904053, -0.6026304364204407),
         (-1609.8153076171875, 5177.3359375, 1537.896728515625)),
        ((0.5894251465797424, -0.7818877100944519, 0.13991211354732513, -0.14715361595153809),
         (-1590.738037109375, -3854.1689453125, 1578.017578125)),
    ),
}
# fmt: on


def normalize_screen_coordinates(x: np.ndarray, w: float, h: float) -> np.ndarray:
    """Maps pixel coordinates to the reference's normalised screen coordinates (§1.5).

    `u' = u / w * 2 - 1`, `v' = v / w * 2 - h / w`: both axes are divided by the width, so u'
    spans [-1, 1] and v' spans [-h/w, h/w].

    Args:
      x: (..., 2) pixel coordinates.
      w: image width in pixels.
      h: image height in pixels.

    Returns:
      (..., 2) normalised coordinates, same floating dtype as `x` (float32 for integer input).
    """
    x = np.asarray(x)
    if x.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) coordinates, got shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    # The reference divides in the array's dtype, subtracts the float64 offset list and stores
    # back into the float32 array; doing the same keeps results bit-identical.
    scaled = x.astype(dtype) / dtype.type(w) * dtype.type(2)
    return (scaled.astype(np.float64) - np.array([1.0, h / w])).astype(dtype)


def image_coordinates(x: np.ndarray, w: float, h: float) -> np.ndarray:
    """Inverse of `normalize_screen_coordinates`: normalised (..., 2) -> pixels (..., 2)."""
    x = np.asarray(x)
    if x.shape[-1] != 2:
        raise ValueError(f"expected (..., 2) coordinates, got shape {x.shape}")
    dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
    return ((x.astype(np.float64) + np.array([1.0, h / w])) * w / 2).astype(dtype)


def _check_cam_idx(cam_idx: int) -> None:
    if not 0 <= cam_idx < len(H36M_INTRINSICS):
        raise ValueError(f"camera index must be 0..3 (order {H36M_CAMERA_IDS}), got {cam_idx}")


def camera_intrinsic_vector(subject: str, cam_idx: int, normalized: bool = True) -> np.ndarray:
    """The 9-vector `[fx, fy, cx, cy, k1, k2, k3, p1, p2]` of one camera (§1.3), float32.

    Args:
      subject: H36M subject ('S1', ...); accepted for symmetry with the reference tables (the
        intrinsics are shared by all subjects).
      cam_idx: camera index 0..3 in `H36M_CAMERA_IDS` order.
      normalized: True (the reference default, `--crop_uv 0`): centre normalised with
        `normalize_screen_coordinates` and focal length divided by res_w / 2. False: pixels.
    """
    del subject  # intrinsics do not depend on the subject
    _check_cam_idx(cam_idx)
    cam = H36M_INTRINSICS[cam_idx]
    center = np.asarray(cam["center"], np.float32)
    focal = np.asarray(cam["focal_length"], np.float32)
    if normalized:
        center = normalize_screen_coordinates(center, cam["res_w"], cam["res_h"])
        focal = focal / np.float32(cam["res_w"]) * np.float32(2)
    vec = np.concatenate(
        [
            focal,
            center,
            np.asarray(cam["radial_distortion"], np.float32),
            np.asarray(cam["tangential_distortion"], np.float32),
        ]
    )  # (9,)
    return vec.astype(np.float32)


def camera_resolution(cam_idx: int) -> tuple[int, int]:
    """(res_w, res_h) of camera `cam_idx`."""
    _check_cam_idx(cam_idx)
    return H36M_INTRINSICS[cam_idx]["res_w"], H36M_INTRINSICS[cam_idx]["res_h"]


def camera_extrinsics(subject: str, cam_idx: int) -> tuple[np.ndarray, np.ndarray]:
    """Orientation quaternion (4,) (w, x, y, z) and translation (3,) in **metres**, float32."""
    _check_cam_idx(cam_idx)
    if subject not in H36M_EXTRINSICS:
        raise KeyError(
            f"no camera extrinsics for subject {subject!r}; known: {sorted(H36M_EXTRINSICS)}"
        )
    quat, trans_mm = H36M_EXTRINSICS[subject][cam_idx]
    trans = np.asarray(trans_mm, np.float32) / np.float32(1000)  # mm -> m
    return np.asarray(quat, np.float32), trans.astype(np.float32)


def qinv(q: np.ndarray) -> np.ndarray:
    """Inverse of unit quaternions (..., 4) (w, x, y, z): the conjugate (w, -x, -y, -z)."""
    q = np.asarray(q)
    return q * np.array([1, -1, -1, -1], dtype=q.dtype)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotates vectors v (..., 3) by unit quaternions q (4,) or (..., 4) (w, x, y, z).

    `v + 2 * (w * (u x v) + u x (u x v))` with u = (x, y, z), as in §1.4.
    """
    q = np.asarray(q)
    v = np.asarray(v)
    w = q[..., :1]
    u = np.broadcast_to(q[..., 1:], v.shape)
    uv = np.cross(u, v)
    uuv = np.cross(u, uv)
    return v + 2 * (w * uv + uuv)


def world_to_camera(x: np.ndarray, r_quat: np.ndarray, t: np.ndarray) -> np.ndarray:
    """World -> camera frame: `qrot(qinv(q), X - t)` (§1.4), float32 in and out.

    Args:
      x: (..., 3) world coordinates (metres for H36M).
      r_quat: (4,) camera orientation (w, x, y, z).
      t: (3,) camera position in the same unit as `x`.
    """
    x = np.asarray(x, np.float32)
    q = qinv(np.asarray(r_quat, np.float32))
    return qrot(q, x - np.asarray(t, np.float32)).astype(np.float32)


def camera_to_world(x: np.ndarray, r_quat: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Camera -> world frame, the inverse of `world_to_camera`: `qrot(q, X) + t`."""
    x = np.asarray(x, np.float32)
    q = np.asarray(r_quat, np.float32)
    return (qrot(q, x) + np.asarray(t, np.float32)).astype(np.float32)


def project_to_2d(x_cam: np.ndarray, intrinsic9: np.ndarray) -> np.ndarray:
    """Projects camera-frame points with the full H36M distortion model (as VideoPose3D).

    With `xy = clip(X[:2] / Z, -1, 1)`, `r2 = |xy|^2`:
    `radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3`, `tan = p1 x + p2 y`,
    `xy' = xy * (radial + tan) + (p1, p2) * r2`, result `f * xy' + c`. The output unit follows
    the intrinsics: normalised screen coordinates for the normalised 9-vector, pixels for the
    pixel one (`camera_intrinsic_vector(..., normalized=False)`).

    Args:
      x_cam: (..., 3) points in the camera frame (Z > 0).
      intrinsic9: (9,) or (..., 9) `[fx, fy, cx, cy, k1, k2, k3, p1, p2]`, broadcast over the
        leading axes of `x_cam` minus the point axis (e.g. (N, 9) with (N, J, 3)).

    Returns:
      (..., 2) projected coordinates.
    """
    x_cam = np.asarray(x_cam)
    cam = np.asarray(intrinsic9, dtype=x_cam.dtype)
    if cam.ndim > 1:
        cam = cam.reshape(cam.shape[:-1] + (1,) * (x_cam.ndim - cam.ndim) + (9,))  # (..., 1, 9)
    f, c, k, p = cam[..., 0:2], cam[..., 2:4], cam[..., 4:7], cam[..., 7:9]
    xy = np.clip(x_cam[..., :2] / x_cam[..., 2:3], -1, 1)
    r2 = np.sum(xy**2, axis=-1, keepdims=True)
    radial = 1 + np.sum(k * np.concatenate([r2, r2**2, r2**3], axis=-1), axis=-1, keepdims=True)
    tan = np.sum(p * xy, axis=-1, keepdims=True)
    xy_d = xy * (radial + tan) + p * r2
    return f * xy_d + c
