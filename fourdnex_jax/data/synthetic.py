"""Deterministic procedural 4D scenes and a vectorised NumPy ray caster (the embedded default training data).

A scene (all randomness from one integer seed, :func:`make_scene`) holds a checkered floor (the plane y = 0), a
textured sky dome (a sphere of radius ``dome_radius`` around the origin, :data:`DOME_RADIUS` by default: every ray
hits something), 3-5 textured primitives
(spheres and boxes rotated about the vertical axis), most of them moving on smooth periodic paths (rolling,
bouncing, sliding, spinning), one or none static, and a camera on a smooth orbit/dolly trajectory looking at the
scene centre. :func:`render` casts one ray per pixel for all frames at once and returns exact geometry.

Conventions are those of :mod:`fourdnex_jax.geometry.se3`: OpenCV cameras, world y axis pointing DOWN (objects
stand at y < 0 on the floor y = 0), pixel centres at integer coordinates, principal point at the exact image centre
((W-1)/2, (H-1)/2). Camera rays are ``d = R (K^-1 [u, v, 1])`` (not normalised), so the ray parameter of a hit IS
its z-depth: ``xyz_world = o + depth * d`` holds to rounding, and back-projecting ``depth`` with ``K`` and
``c2w`` reproduces ``xyz_world`` (tested).

Splits: ``train`` uses seeds [0, 10^9), ``heldout`` seeds [10^9, ...): :func:`split_seed`.
Default size: 49 frames at 64 x 96 (the tiny model's 8 x 12 latent per modality, 13 latent frames).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fourdnex_jax.geometry import intrinsics, normalize, se3

SPLIT_OFFSETS = {"train": 0, "heldout": 1_000_000_000}
DEFAULT_FRAMES, DEFAULT_HEIGHT, DEFAULT_WIDTH = 49, 64, 96
DOME_RADIUS = 40.0
# The sky is most of every frame's bounding box, so the dome radius sets the reference normalisation's scale (about
# 21 m at radius 40): at radius 12 an error of 0.01 in the normalised pointmap costs 1.4 px on the foreground at
# 64 x 96 instead of 3.6 px (docs/tiny_model.md), which is what lets a tiny VAE + DiT reach registrable geometry.
TINY_DOME_RADIUS = 12.0
# The shipped tiny model's frame size (checkpoints/tiny: trained, sampled and evaluated at 32 x 48).
TINY_HEIGHT, TINY_WIDTH = 32, 48

PALETTE = {  # named colours, so captions describe what is rendered
    "red": (200, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
    "orange": (240, 130, 30), "purple": (130, 50, 170), "cyan": (40, 190, 200), "white": (235, 235, 235),
    "pink": (240, 120, 170), "brown": (130, 80, 40),
}
FLOORS = {"grey": ((90, 90, 90), (170, 170, 170)), "beige": ((150, 130, 100), (210, 195, 160)),
          "dark green": ((40, 80, 40), (80, 130, 70)), "blue": ((50, 60, 110), (110, 120, 170))}
SKIES = {"clear blue": ((170, 200, 240), (60, 110, 200)), "sunset": ((250, 180, 120), (120, 70, 140)),
         "overcast": ((200, 200, 205), (140, 140, 150))}
MOTIONS = ("rolling", "bouncing", "sliding", "spinning")


def split_seed(split: str, index: int) -> int:
    """Seed of clip ``index`` of ``split`` ('train' or 'heldout'); the two ranges never overlap."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {sorted(SPLIT_OFFSETS)}, got {split!r}")
    if not 0 <= index < 1_000_000_000:
        raise ValueError(f"index {index} out of range")
    return SPLIT_OFFSETS[split] + index


@dataclasses.dataclass(frozen=True)
class Primitive:
    kind: str            # 'sphere' | 'box'
    colour: str
    size: tuple          # sphere: (r,); box: half extents (a, b, c)
    base: tuple          # (x, z) position on the floor
    motion: str          # one of MOTIONS, or 'static'
    amp: tuple           # (ax, az) path amplitude
    freq: float          # cycles per clip
    phase: float
    spin: float          # radians per clip about the vertical axis
    checks: int          # texture frequency


@dataclasses.dataclass(frozen=True)
class Scene:
    seed: int
    floor: str
    floor_check: float
    sky: str
    sky_stripes: int
    light: tuple
    objects: tuple
    cam_radius: float
    cam_height: float
    cam_azimuth: float
    cam_sweep: float
    cam_dolly: float
    target: tuple
    fov_deg: float

    def caption(self) -> str:
        parts = []
        for o in self.objects:
            shape = "ball" if o.kind == "sphere" else "box"
            parts.append(f"a {o.colour} {shape} " + ("standing still" if o.motion == "static" else o.motion))
        objs = ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else parts[0]
        move = "orbits to the left" if self.cam_sweep > 0 else "orbits to the right"
        if abs(self.cam_dolly) > 0.12:
            move += " while moving " + ("away" if self.cam_dolly > 0 else "closer")
        return (f"A synthetic 3D scene with {objs} on a {self.floor} checkered floor under a {self.sky} sky. "
                f"The camera {move}.")


def make_scene(seed: int) -> Scene:
    """All random choices of one clip, drawn from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 6))
    colours = rng.choice(list(PALETTE), size=n, replace=False)
    static_idx = int(rng.integers(0, n)) if rng.random() < 0.5 else -1
    objs = []
    angles = rng.permutation(n) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
    for i in range(n):
        kind = "sphere" if rng.random() < 0.55 else "box"
        size = (float(rng.uniform(0.35, 0.7)),) if kind == "sphere" else tuple(rng.uniform(0.3, 0.6, 3).round(4))
        rad = rng.uniform(0.6, 2.2)
        motion = "static" if i == static_idx else str(rng.choice(MOTIONS if kind == "sphere" else
                                                                   ("sliding", "spinning", "bouncing")))
        objs.append(Primitive(kind=kind, colour=str(colours[i]), size=tuple(float(s) for s in size),
                              base=(float(rad * np.cos(angles[i])), float(rad * np.sin(angles[i]))), motion=motion,
                              amp=tuple(float(a) for a in rng.uniform(-0.8, 0.8, 2)),
                              freq=float(rng.uniform(0.5, 1.5)), phase=float(rng.uniform(0, 2 * np.pi)),
                              spin=float(rng.uniform(-3, 3)), checks=int(rng.integers(3, 7))))
    light = rng.normal(size=3) * 0.3 + np.array([0.4, -1.0, 0.5])  # direction to the light; y down: above
    return Scene(seed=seed, floor=str(rng.choice(list(FLOORS))), floor_check=float(rng.uniform(0.4, 0.9)),
                 sky=str(rng.choice(list(SKIES))), sky_stripes=int(rng.integers(6, 16)),
                 light=tuple(float(v) for v in light / np.linalg.norm(light)), objects=tuple(objs),
                 cam_radius=float(rng.uniform(5.0, 7.0)), cam_height=float(rng.uniform(1.0, 2.5)),
                 cam_azimuth=float(rng.uniform(0, 2 * np.pi)),
                 cam_sweep=float(rng.uniform(0.2, 0.7) * rng.choice([-1, 1])),
                 cam_dolly=float(rng.uniform(-0.2, 0.2)),
                 target=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.9, -0.4)), float(rng.uniform(-0.4, 0.4))),
                 fov_deg=float(rng.uniform(50, 70)))


# -- motion ------------------------------------------------------------------------------------------------------
def object_state(o: Primitive, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (T, 3) and yaw angle (T,) of a primitive at normalised times ``tau`` in [0, 1]."""
    w = 2 * np.pi * o.freq * tau + o.phase
    half_h = o.size[0] if o.kind == "sphere" else o.size[1]
    x = np.full_like(tau, o.base[0])
    z = np.full_like(tau, o.base[1])
    y = np.full_like(tau, -half_h)
    yaw = np.zeros_like(tau)
    if o.motion in ("rolling", "sliding"):
        x = x + o.amp[0] * np.sin(w)
        z = z + o.amp[1] * np.sin(w + 1.0)
        if o.motion == "rolling":  # spin in proportion to the distance travelled
            yaw = (o.amp[0] * np.sin(w) + o.amp[1] * np.sin(w + 1.0)) / max(half_h, 1e-3)
    elif o.motion == "bouncing":
        y = y - 0.9 * np.abs(np.sin(w))
        x = x + 0.3 * o.amp[0] * tau
    elif o.motion == "spinning":
        yaw = o.spin * tau * 2
        x = x + 0.2 * o.amp[0] * np.sin(w)
    return np.stack([x, y, z], -1), yaw


def camera_path(scene: Scene, num_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """c2w (T, 4, 4) of a smooth orbit + dolly around ``scene.target`` and the shared intrinsics (3, 3)."""
    tau = np.linspace(0.0, 1.0, num_frames)
    s = tau * tau * (3 - 2 * tau)  # smoothstep: starts and ends at rest
    az = scene.cam_azimuth + scene.cam_sweep * s
    r = scene.cam_radius * (1 + scene.cam_dolly * s)
    pos = np.stack([r * np.cos(az), np.full_like(tau, -scene.cam_height), r * np.sin(az)], -1)
    target = np.asarray(scene.target)[None] + np.stack([0.2 * np.sin(np.pi * tau), 0 * tau, 0 * tau], -1)
    c2w = se3.look_at(pos, target)
    f = (width / 2) / np.tan(np.radians(scene.fov_deg) / 2)
    K = intrinsics.intrinsics_matrix(f, f, (width - 1) / 2, (height - 1) / 2)
    return c2w, K


# -- ray casting -------------------------------------------------------------------------------------------------
_EPS = 1e-6


def _sphere_hit(o, d, dd, c, r):
    oc = o - c  # (T, 1, 3)
    b = np.einsum("tnk,tnk->tn", d, np.broadcast_to(oc, d.shape))
    cc = np.einsum("tnk,tnk->tn", oc, oc) - r * r
    disc = b * b - dd * cc
    root = np.sqrt(np.maximum(disc, 0.0))
    t = (-b - root) / dd
    return np.where((disc > 0) & (t > _EPS), t, np.inf)


def _rot_y(yaw):  # (T,) -> (T, 3, 3), rotation about the vertical axis
    c, s = np.cos(yaw), np.sin(yaw)
    z, one = np.zeros_like(yaw), np.ones_like(yaw)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, one, z], -1), np.stack([-s, z, c], -1)], -2)


def _box_hit(o, d, c, yaw, half):
    rt = np.swapaxes(_rot_y(yaw), -1, -2)  # world -> local
    ol = np.einsum("tij,tnj->tni", rt, o - c)
    dl = np.einsum("tij,tnj->tni", rt, d)
    dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    t1, t2 = (-half - ol) / dl, (half - ol) / dl
    tmin, tmax = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    return np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)


def _checker(*coords) -> np.ndarray:
    return (sum(np.floor(c) for c in coords) % 2).astype(np.float64)


def render(scene: Scene, num_frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT,
           width: int = DEFAULT_WIDTH, dome_radius: float = DOME_RADIUS) -> dict[str, np.ndarray]:
    """Ray-casts every frame (the sky dome of radius ``dome_radius``, larger than the camera orbit). Returns ``images``
    (T, H, W, 3) uint8, ``depths`` (T, H, W) float32 z-depth,
    ``xyz_world`` (T, H, W, 3) float32, ``intrinsics`` (T, 3, 3) and ``cam_c2w`` (T, 4, 4) float64,
    ``dynamic_mask`` (T, H, W) bool (pixels of moving objects) and ``object_id`` (T, H, W) int8
    (-2 sky, -1 floor, i >= 0 object i)."""
    t_, n = num_frames, height * width
    c2w, K = camera_path(scene, t_, height, width)
    u, v = se3.pixel_grid(height, width)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(1, n, 3)
    d = np.einsum("tij,tnj->tni", c2w[:, :3, :3], np.broadcast_to(d_cam, (t_, n, 3)))  # (T, N, 3), z_cam = 1
    o = c2w[:, None, :3, 3]  # (T, 1, 3)
    dd = np.einsum("tnk,tnk->tn", d, d)
    tau = np.linspace(0.0, 1.0, t_)

    hits = []
    states = [object_state(ob, tau) for ob in scene.objects]
    for ob, (cen, yaw) in zip(scene.objects, states):
        if ob.kind == "sphere":
            hits.append(_sphere_hit(o, d, dd, cen[:, None, :], ob.size[0]))
        else:
            hits.append(_box_hit(o, d, cen[:, None, :], yaw, np.asarray(ob.size)))
    t_floor = np.where(d[..., 1] > 1e-9, -o[..., 1] / np.where(d[..., 1] > 1e-9, d[..., 1], 1.0), np.inf)
    t_floor = np.where(t_floor > _EPS, t_floor, np.inf)
    # dome: the camera is inside, take the far root
    b = np.einsum("tnk,tnk->tn", d, np.broadcast_to(o, d.shape))
    cc = np.einsum("tk,tk->t", o[:, 0], o[:, 0])[:, None] - dome_radius ** 2
    t_dome = (-b + np.sqrt(b * b - dd * cc)) / dd
    all_t = np.stack(hits + [t_floor, t_dome])  # (K + 2, T, N)
    which = np.argmin(all_t, axis=0)
    depth = np.take_along_axis(all_t, which[None], 0)[0]
    p = o + depth[..., None] * d  # world hit points

    light = np.asarray(scene.light)
    albedo = np.zeros((t_, n, 3))
    normal = np.zeros((t_, n, 3))
    nobj = len(scene.objects)
    for i, (ob, (cen, yaw)) in enumerate(zip(scene.objects, states)):
        sel = which == i
        if not sel.any():
            continue
        tt = np.nonzero(sel)[0]
        local = np.einsum("mji,mj->mi", _rot_y(yaw[tt]), p[sel] - cen[tt])  # R^T (p - c): object coordinates
        if ob.kind == "sphere":
            r = ob.size[0]
            nl = local / r
            lon = np.arctan2(nl[:, 0], nl[:, 2]) / (2 * np.pi) * (2 * ob.checks)
            lat = np.arccos(np.clip(nl[:, 1], -1, 1)) / np.pi * ob.checks
            pattern = _checker(lon, lat)
            normal[sel] = (p[sel] - cen[tt]) / r
        else:
            half = np.asarray(ob.size)
            q = local / half
            ax = np.argmax(np.abs(q), -1)
            nl = np.zeros_like(q)
            nl[np.arange(len(q)), ax] = np.sign(q[np.arange(len(q)), ax])
            normal[sel] = np.einsum("mij,mj->mi", _rot_y(yaw[tt]), nl)
            pattern = _checker(*(local * ob.checks / (2 * half.max())).T)
        base = np.asarray(PALETTE[ob.colour], np.float64)
        albedo[sel] = base * (0.65 + 0.35 * pattern[:, None])
    sel = which == nobj  # floor
    ca, cb = (np.asarray(c, np.float64) for c in FLOORS[scene.floor])
    chk = _checker(p[sel][:, 0] / scene.floor_check, p[sel][:, 2] / scene.floor_check)[:, None]
    shadow = np.ones(sel.sum())
    tt = np.nonzero(sel)[0]
    for ob, (cen, _) in zip(scene.objects, states):  # soft blob shadows under the objects
        rad = ob.size[0] if ob.kind == "sphere" else max(ob.size[0], ob.size[2])
        dist2 = (p[sel][:, 0] - cen[tt, 0]) ** 2 + (p[sel][:, 2] - cen[tt, 2]) ** 2
        shadow *= 1 - 0.45 * np.exp(-dist2 / (rad * rad)) * np.exp(cen[tt, 1] + rad)  # fades as objects rise
    albedo[sel] = (ca * (1 - chk) + cb * chk) * shadow[:, None]
    normal[sel] = (0.0, -1.0, 0.0)
    shade = 0.35 + 0.65 * np.clip(np.einsum("tnk,k->tn", normal, light), 0, 1)
    rgb = albedo * shade[..., None]
    sel = which == nobj + 1  # sky: unlit gradient with azimuthal stripes
    if sel.any():
        dn = d[sel] / np.linalg.norm(d[sel], axis=-1, keepdims=True)
        elev = np.clip(-dn[:, 1], 0, 1)[:, None]
        lo, hi = (np.asarray(c, np.float64) for c in SKIES[scene.sky])
        stripes = 0.9 + 0.1 * np.sin(np.arctan2(dn[:, 2], dn[:, 0]) * scene.sky_stripes)[:, None]
        rgb[sel] = (lo * (1 - elev) + hi * elev) * stripes
    moving = np.array([ob.motion != "static" for ob in scene.objects] + [False, False])
    object_id = np.where(which < nobj, which, np.where(which == nobj, -1, -2)).astype(np.int8)
    shape = (t_, height, width)
    return {
        "images": np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(shape + (3,)),
        "depths": depth.astype(np.float32).reshape(shape),
        "xyz_world": p.astype(np.float32).reshape(shape + (3,)),
        "intrinsics": np.broadcast_to(K, (t_, 3, 3)).copy(),
        "cam_c2w": c2w,
        "dynamic_mask": moving[which].reshape(shape),
        "object_id": object_id.reshape(shape),
    }


def generate_clip(split: str, index: int, num_frames: int = DEFAULT_FRAMES, height: int = DEFAULT_HEIGHT,
                  width: int = DEFAULT_WIDTH, dome_radius: float = DOME_RADIUS
                  ) -> tuple[str, dict[str, np.ndarray], str]:
    """(clip_id, rendered arrays, caption) of clip ``index`` of ``split``."""
    scene = make_scene(split_seed(split, index))
    return f"synth_{split}_{index:06d}", render(scene, num_frames, height, width, dome_radius), scene.caption()


# -- pointmap videos with ground truth (the geometry evaluation's input) ---------------------------------------------
def pointmap_sequence(index: int = 0, split: str = "heldout", frames: int = 13, height: int = 48, width: int = 64,
                      normalization: str = "sequence", noise: float = 0.0, dynamic_offset: float = 0.0,
                      outliers: float = 0.0, seed: int = 0, dome_radius: float = DOME_RADIUS,
                      sky_valid: bool = False) -> tuple[dict, dict]:
    """Scene ``index`` of ``split`` as a model output would look, and its ground truth: rendered, re-expressed in
    the first camera's frame, normalised (``normalization``) and optionally corrupted the way a generative model
    errs: Gaussian noise proportional to depth on every point (``noise``), *inconsistent moving objects* (each
    moving object's points displaced per frame by a random 3D offset off their pixel rays, ``dynamic_offset`` x
    their median depth), plus a fraction ``outliers`` of gross outliers.

    Returns (inputs, truth). ``sky_valid``: keep the sky dome's points (a model output has them); else they are
    invalid. inputs: ``xyz`` float32 (T,H,W,3), ``valid``, ``rgb`` uint8. truth: ``K`` (3,3),
    ``c2w`` (T,4,4) relative to camera 0 in *normalised* units (translation / scale), ``depth`` (T,H,W) metric,
    ``scale``, ``centers`` (T,3), ``dynamic`` (T,H,W), ``xyz_metric`` (T,H,W,3) in camera-0 frame,
    ``object_id`` (T,H,W)."""
    _, r, _ = generate_clip(split, index, frames, height, width, dome_radius)
    c2w = se3.relative_to_first(r["cam_c2w"])
    w2c0 = np.linalg.inv(r["cam_c2w"][0])
    xyz = se3.transform_points(w2c0, r["xyz_world"].astype(np.float64).reshape(-1, 3)).reshape(r["xyz_world"].shape)
    # the sky dome is far and uninformative; a model would not place it reliably (unless asked to keep it)
    valid = np.ones(r["object_id"].shape, bool) if sky_valid else r["object_id"] != -2
    rng = np.random.default_rng(seed)
    noisy = xyz.copy()
    depth = r["depths"].astype(np.float64)
    if noise > 0:
        noisy += rng.normal(size=xyz.shape) * (noise * depth)[..., None]
    if dynamic_offset > 0:
        for t in range(frames):
            for o in np.unique(r["object_id"][t]):
                if o < 0:
                    continue
                m = (r["object_id"][t] == o) & r["dynamic_mask"][t]
                if m.any():
                    off = rng.normal(size=3)
                    noisy[t][m] += dynamic_offset * off / np.linalg.norm(off) * np.median(depth[t][m])
    if outliers > 0:
        m = rng.random(valid.shape) < outliers
        noisy[m] += rng.normal(size=(int(m.sum()), 3)) * depth[m][:, None] * 0.3
    xyz_n, centers, scale = normalize.normalize(noisy, valid, normalization)
    c2w_n = c2w.copy()
    c2w_n[:, :3, 3] /= scale
    inputs = {"xyz": xyz_n, "valid": valid, "rgb": r["images"]}
    truth = {"K": r["intrinsics"][0], "c2w": c2w_n, "depth": depth, "scale": scale, "centers": centers,
             "dynamic": r["dynamic_mask"], "xyz_metric": xyz, "object_id": r["object_id"]}
    return inputs, truth
