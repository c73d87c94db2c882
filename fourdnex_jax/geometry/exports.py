"""Exports of a registered dynamic point cloud: per-frame PLY, one animated GLB, a self-contained HTML player,
``cameras.json`` / ``transforms.json`` (nerfstudio) and ``depth.npz``.

Axes: every array in memory, ``cameras.json``, ``depth.npz`` and the PLY files use the OpenCV convention, world =
camera 0 (x right, y down, z forward; cameras look down +z); each file says so (cameras.json ``convention``, a PLY
``comment axes`` header line). The GLB is in glTF's own convention (y up, right-handed, cameras look down -z):
``GLTF_FROM_CV`` = diag(1, -1, -1) turns the world (points and cameras) about x, so glTF viewers show the floor
below the sky. ``transforms.json`` holds nerfstudio's OpenGL camera axes (``c2w @ diag(1,-1,-1,1)``) in the OpenCV
world, as its data parser expects.

* PLY: binary little-endian, ``x y z`` float32 + ``red green blue`` uint8, world frame (= camera 0, OpenCV axes).
* GLB (glTF 2.0): one node per frame holding a POINTS mesh (POSITION float32, COLOR_0 normalised uint8) and one
  camera node per *registered* frame (node matrix ``GLTF_FROM_CV @ c2w @ diag(1,-1,-1,1)``: glTF world, glTF
  camera axes), plus the registered cameras' path as a LINE_STRIP; ``extras`` carries the camera
  status (which frames were rejected and why, and whether the camera's ``yfov`` is the estimate or a prior). Frames are
  played by a core-glTF animation: each frame node's scale is
  1 during its time step and 0 otherwise (STEP interpolation), so glTF viewers (Blender, three.js/gltf-viewer,
  Windows 3D Viewer) play the sequence; tools that ignore animations show all frames overlaid.
* HTML: one file, no network, no dependencies: positions quantised to uint16 per axis and colours uint8,
  base64-embedded, drawn with raw WebGL 1 (point sprites), mouse orbit/zoom, play/pause and a frame slider. The
  view is framed from the points' robust bounds (2nd-98th percentiles), starts on the first non-empty frame, and
  the panel says which frames' cameras are unreliable. After its first draw it writes the number of drawn
  (non-background) canvas pixels to ``<body data-drawn-pixels>`` (a headless browser check reads it).
* cameras.json / transforms.json: strict JSON; a rejected frame's camera is ``null`` in cameras.json and left out
  of transforms.json; both say where the intrinsics come from (the estimate or a field-of-view prior).
  transforms.json is written only when at least one camera is registered (nerfstudio cannot load one without
  frames).
  Chosen over a rerun ``.rrd`` because it opens in any browser without installing a ~50 MB SDK/viewer and the
  recording format is tied to the rerun version that wrote it.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np

from fourdnex_jax.media.io import atomic_save_json, atomic_write

GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes -> OpenGL/glTF camera axes (right-multiplied)
GLTF_FROM_CV = GL_FROM_CV  # OpenCV world -> glTF world (y up, z towards camera 0; left-multiplied): the same flip
#: The PLY header's statement of its axes.
PLY_AXES = "axes OpenCV world = camera 0: x right, y down, z forward (camera 0 looks down +z)"


def select_points(points: np.ndarray, colors: np.ndarray, keep: np.ndarray, stride: int = 1,
                  max_points: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One frame's (H, W, 3) points/colours and (H, W) mask -> (N, 3) float32, (N, 3) uint8 after a pixel
    stride and an optional random cap."""
    p = points[::stride, ::stride].reshape(-1, 3)
    c = colors[::stride, ::stride].reshape(-1, 3)
    k = keep[::stride, ::stride].reshape(-1) & np.isfinite(p).all(-1)
    p, c = p[k], c[k]
    if max_points is not None and len(p) > max_points:
        sel = np.sort(np.random.default_rng(seed).choice(len(p), max_points, replace=False))
        p, c = p[sel], c[sel]
    return p.astype(np.float32), c.astype(np.uint8)


def ply_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    n = len(points)
    header = (f"ply\nformat binary_little_endian 1.0\ncomment {PLY_AXES}\n"
              f"element vertex {n}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n").encode()
    rec = np.zeros(n, dtype=[("p", "<f4", 3), ("c", "u1", 3)])
    rec["p"], rec["c"] = points, colors
    return header + rec.tobytes()


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads what :func:`ply_bytes` writes (for tests)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    n = int([ln for ln in data[:end].decode().splitlines() if ln.startswith("element vertex")][0].split()[-1])
    rec = np.frombuffer(data[end:], dtype=[("p", "<f4", 3), ("c", "u1", 3)], count=n)
    return rec["p"].copy(), rec["c"].copy()


def write_ply(path: str | Path, points: np.ndarray, colors: np.ndarray) -> Path:
    blob = ply_bytes(points, colors)
    return atomic_write(Path(path), lambda f: f.write(blob))


# -- GLB ---------------------------------------------------------------------------------------------------------
def glb_bytes(frames: list[tuple[np.ndarray, np.ndarray]], c2w: np.ndarray, K: np.ndarray, image_size, fps: float = 8.0,
              registered: np.ndarray | None = None, extras: dict | None = None) -> bytes:
    """frames: per frame (points (N, 3) float32 world/OpenCV, colours (N, 3) uint8); c2w (T, 4, 4) OpenCV; K (3, 3)
    the camera's intrinsics (estimate or prior); ``registered`` (T,) bool: only those frames get a camera node and
    a point on the camera path (default all); ``extras`` (JSON-ready) is merged into the asset's ``extras``.
    Written in glTF axes (module docstring): points and cameras are turned by ``GLTF_FROM_CV``."""
    flip = np.diag(GLTF_FROM_CV)[:3].astype(np.float32)
    h, w = image_size
    buf = bytearray()
    views, accessors, meshes, nodes = [], [], [], []

    def add(arr: np.ndarray, comp: int, typ: str, target=None, normalized=False, minmax=False) -> int:
        while len(buf) % 4:
            buf.append(0)
        data = np.ascontiguousarray(arr).tobytes()
        view = {"buffer": 0, "byteOffset": len(buf), "byteLength": len(data)}
        if target:
            view["target"] = target
        views.append(view)
        buf.extend(data)
        acc = {"bufferView": len(views) - 1, "componentType": comp, "count": int(len(arr)), "type": typ}
        if normalized:
            acc["normalized"] = True
        if minmax:
            acc["min"] = [float(x) for x in np.min(arr, 0).reshape(-1)]
            acc["max"] = [float(x) for x in np.max(arr, 0).reshape(-1)]
        accessors.append(acc)
        return len(accessors) - 1

    t = len(frames)
    for i, (p, c) in enumerate(frames):
        if len(p) == 0:
            p, c = np.zeros((1, 3), np.float32), np.zeros((1, 3), np.uint8)
        rgba = np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1)
        pa = add(p.astype(np.float32) * flip, 5126, "VEC3", 34962, minmax=True)
        ca = add(rgba, 5121, "VEC4", 34962, normalized=True)
        meshes.append({"name": f"frame_{i:05d}", "primitives": [{"attributes": {"POSITION": pa, "COLOR_0": ca},
                                                                  "mode": 0}]})
        nodes.append({"name": f"frame_{i:05d}", "mesh": i, "scale": [1.0, 1.0, 1.0] if i == 0 else [0.0, 0.0, 0.0]})
    yfov = float(2 * np.arctan(h / 2 / K[1, 1]))
    if not (np.isfinite(yfov) and 0 < yfov < np.pi):
        raise ValueError(f"glb_bytes: K gives a vertical field of view of {yfov} rad; pass a plausible K "
                         "(geometry.status.fov_prior_intrinsics)")
    cams = [{"type": "perspective", "perspective": {"yfov": yfov, "aspectRatio": w / h, "znear": 0.01}}]
    reg = np.ones(t, bool) if registered is None else np.asarray(registered, bool)
    for i in np.flatnonzero(reg):
        m = (GLTF_FROM_CV @ np.asarray(c2w[i], np.float64) @ GL_FROM_CV).T.reshape(-1)  # column-major
        nodes.append({"name": f"camera_{i:05d}", "camera": 0, "matrix": [float(x) for x in m]})
    if reg.sum() >= 2:
        path_acc = add(np.asarray(c2w[reg, :3, 3], np.float32) * flip, 5126, "VEC3", 34962, minmax=True)
        meshes.append({"name": "camera_path", "primitives": [{"attributes": {"POSITION": path_acc}, "mode": 3}]})
        nodes.append({"name": "camera_path", "mesh": len(meshes) - 1})
    times = np.arange(t, dtype=np.float32) / fps
    tin = add(times, 5126, "SCALAR", minmax=True)
    channels, samplers = [], []
    for i in range(t):
        vals = np.zeros((t, 3), np.float32)
        vals[i] = 1.0
        samplers.append({"input": tin, "output": add(vals, 5126, "VEC3"), "interpolation": "STEP"})
        channels.append({"sampler": i, "target": {"node": i, "path": "scale"}})
    gltf = {"asset": {"version": "2.0", "generator": "fourdnex_jax.geometry.exports"},
            "scene": 0, "scenes": [{"nodes": list(range(len(nodes)))}], "nodes": nodes, "meshes": meshes,
            "cameras": cams, "accessors": accessors, "bufferViews": views,
            "buffers": [{"byteLength": len(buf)}],
            "animations": [{"name": "play", "channels": channels, "samplers": samplers}] if t > 1 else [],
            "extras": {"axes": "glTF (x right, y up, z towards camera 0, which looks down -z): the OpenCV world of "
                               "camera 0 (cameras.json, PLY) with y and z negated",
                       **(extras or {})}}
    if t <= 1:
        del gltf["animations"]
    js = json.dumps(gltf, separators=(",", ":"), allow_nan=False).encode()
    js += b" " * (-len(js) % 4)
    while len(buf) % 4:
        buf.append(0)
    total = 12 + 8 + len(js) + 8 + len(buf)
    return (struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
            + struct.pack("<II", len(buf), 0x004E4942) + bytes(buf))


def read_glb_json(path: str | Path) -> dict:
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack("<III", data[:12])
    if magic != 0x46546C67 or version != 2 or total != len(data):
        raise ValueError("not a glTF 2.0 binary")
    n, kind = struct.unpack("<II", data[12:20])
    return json.loads(data[20:20 + n])


# -- HTML player ---------------------------------------------------------------------------------------------------
_HTML = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>body{margin:0;background:#111;color:#ddd;font:13px sans-serif;overflow:hidden}
#ui{position:absolute;left:8px;top:8px;background:rgba(0,0,0,.5);padding:6px;border-radius:4px;max-width:60vw}
#cams{color:#fc6}
canvas{display:block;width:100vw;height:100vh}</style></head><body><canvas id="c"></canvas>
<div id="ui"><button id="play">pause</button> <input id="sl" type="range" min="0" value="0"> <span id="lab"></span>
 size <input id="ps" type="range" min="1" max="8" value="2"><br>drag: rotate, shift+drag: pan, wheel: zoom
<div id="cams"></div></div>
<script>
const META=__META__;
function b64(s){const b=atob(s),a=new Uint8Array(b.length);for(let i=0;i<b.length;i++)a[i]=b.charCodeAt(i);return a;}
const P=new Uint16Array(b64(META.pos).buffer),C=b64(META.col),off=META.offsets;
const cv=document.getElementById('c'),gl=cv.getContext('webgl');
const vs=`attribute vec3 p;attribute vec3 c;uniform mat4 M;uniform vec3 lo,ext;uniform float ps;varying vec3 vc;
void main(){vec3 w=lo+p/65535.0*ext;gl_Position=M*vec4(w,1.0);gl_PointSize=ps;vc=c;}`;
const fs=`precision mediump float;varying vec3 vc;void main(){gl_FragColor=vec4(vc,1.0);}`;
function sh(t,s){const o=gl.createShader(t);gl.shaderSource(o,s);gl.compileShader(o);return o;}
const pr=gl.createProgram();gl.attachShader(pr,sh(gl.VERTEX_SHADER,vs));gl.attachShader(pr,sh(gl.FRAGMENT_SHADER,fs));
gl.linkProgram(pr);gl.useProgram(pr);
const pb=gl.createBuffer();gl.bindBuffer(gl.ARRAY_BUFFER,pb);gl.bufferData(gl.ARRAY_BUFFER,P,gl.STATIC_DRAW);
const lp=gl.getAttribLocation(pr,'p');gl.enableVertexAttribArray(lp);
const cb=gl.createBuffer();gl.bindBuffer(gl.ARRAY_BUFFER,cb);gl.bufferData(gl.ARRAY_BUFFER,C,gl.STATIC_DRAW);
const lc=gl.getAttribLocation(pr,'c');gl.enableVertexAttribArray(lc);
gl.uniform3fv(gl.getUniformLocation(pr,'lo'),META.lo);gl.uniform3fv(gl.getUniformLocation(pr,'ext'),META.ext);
const uM=gl.getUniformLocation(pr,'M'),uP=gl.getUniformLocation(pr,'ps');gl.enable(gl.DEPTH_TEST);
let yaw=0,pitch=0,dist=META.half[2]+Math.max(META.half[1],META.half[0]*innerHeight/innerWidth)/Math.tan(META.fov/2)*1.05,tgt=META.target.slice(),frame=META.first,playing=true,last=0,counted=false;
document.getElementById('cams').textContent=META.cameras;
const sl=document.getElementById('sl');sl.max=off.length-2;
function mul(a,b){const r=new Array(16).fill(0);for(let i=0;i<4;i++)for(let j=0;j<4;j++)for(let k=0;k<4;k++)r[j*4+i]+=a[k*4+i]*b[j*4+k];return r;}
function view(){// OpenCV world (y down, z forward) seen by an orbiting camera; output clip space
 const cy=Math.cos(yaw),sy=Math.sin(yaw),cp=Math.cos(pitch),sp=Math.sin(pitch);
 const R=[cy,sp*sy,-cp*sy,0, 0,cp,sp,0, sy,-sp*cy,cp*cy,0, 0,0,0,1];// rotation, column-major
 const T=[1,0,0,0,0,1,0,0,0,0,1,0,-tgt[0],-tgt[1],-tgt[2],1];
 const Z=[1,0,0,0,0,1,0,0,0,0,1,0,0,0,dist,1];
 const F=[1,0,0,0,0,-1,0,0,0,0,-1,0,0,0,0,1];// OpenCV camera -> OpenGL camera
 const a=cv.width/cv.height,f=1/Math.tan(META.fov/2),n=dist*0.01,fa=dist*100;
 const Pm=[f/a,0,0,0,0,f,0,0,0,0,(fa+n)/(n-fa),-1,0,0,2*fa*n/(n-fa),0];
 return mul(Pm,mul(F,mul(Z,mul(R,T))));}
function draw(){cv.width=innerWidth;cv.height=innerHeight;gl.viewport(0,0,cv.width,cv.height);
 gl.clearColor(.07,.07,.07,1);gl.clear(gl.COLOR_BUFFER_BIT|gl.DEPTH_BUFFER_BIT);
 gl.uniformMatrix4fv(uM,false,new Float32Array(view()));gl.uniform1f(uP,+document.getElementById('ps').value);
 gl.bindBuffer(gl.ARRAY_BUFFER,pb);gl.vertexAttribPointer(lp,3,gl.UNSIGNED_SHORT,false,0,off[frame]*6);
 gl.bindBuffer(gl.ARRAY_BUFFER,cb);gl.vertexAttribPointer(lc,3,gl.UNSIGNED_BYTE,true,0,off[frame]*3);
 gl.drawArrays(gl.POINTS,0,off[frame+1]-off[frame]);
 if(!counted){counted=true;// drawn pixels of the first frame, for a headless check (module docstring)
  const px=new Uint8Array(cv.width*cv.height*4);gl.readPixels(0,0,cv.width,cv.height,gl.RGBA,gl.UNSIGNED_BYTE,px);
  let n=0;for(let i=0;i<px.length;i+=4)if(Math.abs(px[i]-18)+Math.abs(px[i+1]-18)+Math.abs(px[i+2]-18)>6)n++;
  document.body.dataset.drawnPixels=n;document.body.dataset.firstFrame=frame;}
 document.getElementById('lab').textContent='frame '+frame+'/'+(off.length-2)+' ('+(off[frame+1]-off[frame])+
  ' points'+(META.notes[frame]?'; camera rejected: '+META.notes[frame]:'')+')';sl.value=frame;}
function tick(t){if(!last)last=t;if(playing&&t-last>1000/META.fps){frame=(frame+1)%(off.length-1);last=t;}draw();requestAnimationFrame(tick);}
document.getElementById('play').onclick=e=>{playing=!playing;e.target.textContent=playing?'pause':'play';};
sl.oninput=()=>{frame=+sl.value;playing=false;document.getElementById('play').textContent='play';};
let drag=null;cv.onmousedown=e=>drag=[e.clientX,e.clientY,e.shiftKey];onmouseup=()=>drag=null;
onmousemove=e=>{if(!drag)return;const dx=e.clientX-drag[0],dy=e.clientY-drag[1];drag[0]=e.clientX;drag[1]=e.clientY;
 if(drag[2]){const s=dist*0.002;tgt[0]-=dx*s*Math.cos(yaw);tgt[2]-=dx*s*Math.sin(yaw);tgt[1]-=dy*s;}
 else{yaw+=dx*0.005;pitch=Math.max(-1.5,Math.min(1.5,pitch-dy*0.005));}};
cv.onwheel=e=>{dist*=Math.exp(e.deltaY*0.001);e.preventDefault();};
requestAnimationFrame(tick);
</script></body></html>
"""


def html_viewer(frames: list[tuple[np.ndarray, np.ndarray]], fov_y: float, fps: float = 8.0,
                title: str = "4D point cloud", notes: list | None = None, cameras: str = "") -> str:
    """Self-contained HTML player (see module docstring). frames: per frame (points (N, 3), colours (N, 3));
    ``fov_y`` (radians) the viewing camera's vertical field of view; ``notes`` per frame None or why its camera
    is unreliable (shown with the frame); ``cameras`` one line about the cameras (shown in the panel)."""
    if not (np.isfinite(fov_y) and 0 < fov_y < np.pi):
        raise ValueError(f"html_viewer: fov_y must be in (0, pi) radians, got {fov_y}")
    allp = np.concatenate([p for p, _ in frames]) if frames else np.zeros((0, 3), np.float32)
    allp = allp[np.isfinite(allp).all(-1)] if len(allp) else allp
    lo = allp.min(0) if len(allp) else np.zeros(3)
    ext = np.maximum((allp.max(0) - lo) if len(allp) else np.ones(3), 1e-9)
    q = np.round((allp - lo) / ext * 65535).astype("<u2") if len(allp) else np.zeros((0, 3), "<u2")
    col = np.concatenate([c for _, c in frames]) if frames else np.zeros((0, 3), np.uint8)
    counts = [len(p) for p, _ in frames]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
    # frame the robust bounds (a few far outliers must not shrink the cloud to a dot): the viewer looks along +z at
    # their centre from the distance where their x / y half-extents fill the view (the canvas aspect is known there)
    blo, bhi = (np.percentile(allp, 2, axis=0), np.percentile(allp, 98, axis=0)) if len(allp) else (-np.ones(3),
                                                                                                   np.ones(3))
    half = np.maximum((bhi - blo) / 2, 1e-6)
    meta = {"pos": base64.b64encode(q.tobytes()).decode(), "col": base64.b64encode(col.tobytes()).decode(),
            "offsets": offsets, "lo": [float(x) for x in lo], "ext": [float(x) for x in ext], "fps": fps,
            "fov": float(fov_y), "target": [float(x) for x in (blo + bhi) / 2],
            "half": [float(x) for x in half],
            "first": next((i for i, n in enumerate(counts) if n), 0),
            "notes": list(notes) if notes is not None else [None] * len(frames), "cameras": cameras}
    return _HTML.replace("__TITLE__", title).replace("__META__", json.dumps(meta, allow_nan=False))


# -- cameras -------------------------------------------------------------------------------------------------------
def _c2w_or_none(c2w: np.ndarray, ok: bool):
    return np.asarray(c2w).tolist() if ok and np.isfinite(c2w).all() else None


def cameras_dict(reg, image_size) -> dict:
    """cameras.json of a :class:`~fourdnex_jax.geometry.register.Registration`: the verdict
    (:meth:`~fourdnex_jax.geometry.status.CameraStatus.to_dict`: state, message, intrinsics with their source,
    per frame status / reason / numbers), ``scene_4d`` (whether the frames form one 4D scene,
    :meth:`~fourdnex_jax.geometry.consistency.ClipVerdict.to_dict`), ``K`` (what exports use), ``cam_to_world`` per
    frame (``null`` where
    rejected). Strict JSON."""
    h, w = image_size
    st = reg.status
    out = {"image_size": [int(h), int(w)], "K": np.asarray(st.K).tolist(),
           "cam_to_world": [_c2w_or_none(c, bool(ok)) for c, ok in zip(reg.c2w, st.registered)],
           "convention": "OpenCV (x right, y down, z forward), camera-to-world, world = camera 0; pixel centres at "
           "integer coordinates; null = rejected (see frames[i].reason)",
           "normalization": reg.normalization,
           "units": "metric (de-normalised)" if reg.normalization == "metric" else "normalised pointmap units",
           "timings_s": reg.timings, "per_frame_offsets": np.asarray(reg.offsets).tolist()}
    verdict = st.to_dict(reg.frame_stats)
    out.update(status=verdict["state"], message=verdict["message"], intrinsics=verdict["intrinsics"],
               thresholds=verdict["thresholds"], frames=verdict["per_frame"],
               frames_registered=verdict["frames_registered"], scene_4d=reg.clip.to_dict())
    if reg.K_per_frame is not None:
        out["K_per_frame"] = [np.asarray(k).tolist() if ok else None for k, ok in zip(reg.K_per_frame, st.registered)]
    return out


def transforms_dict(reg, image_size, image_paths: list[str] | None = None) -> dict:
    """nerfstudio ``transforms.json``: OPENCV intrinsics, OpenGL-axis camera-to-world matrices of the registered
    frames only (a rejected frame has no camera to give); ``intrinsics_source`` and ``rejected_frames`` say what is
    left out and whether ``fl_x`` is an estimate or a field-of-view prior."""
    h, w = image_size
    st = reg.status
    K = np.asarray(st.K)
    t = len(reg.c2w)
    frames, rejected = [], []
    for i, c in enumerate(np.asarray(reg.c2w)):
        if not st.registered[i]:
            rejected.append({"frame": i, "reason": st.reasons[i]})
            continue
        f = {"file_path": image_paths[i] if image_paths else f"images/frame_{i:05d}.png",
             "transform_matrix": (c @ GL_FROM_CV).tolist(), "time": i / max(t - 1, 1)}
        if reg.K_per_frame is not None:
            kf = reg.K_per_frame[i]
            f.update(fl_x=float(kf[0, 0]), fl_y=float(kf[1, 1]), cx=float(kf[0, 2]), cy=float(kf[1, 2]))
        frames.append(f)
    return {"camera_model": "OPENCV", "w": int(w), "h": int(h), "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]),
            "cx": float(K[0, 2]), "cy": float(K[1, 2]), "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
            "intrinsics_source": st.intrinsics_source, "camera_status": st.message(), "rejected_frames": rejected,
            "frames": frames}


def write_cameras(out_dir: str | Path, reg, image_size, image_paths=None) -> str:
    """Writes ``cameras.json`` and, when at least one camera is registered, ``transforms.json`` (nerfstudio's data
    parser cannot read a file without frames: it fails deep inside with an IndexError). Returns the one line that
    says which, for the console and the summary."""
    out = Path(out_dir)
    atomic_save_json(out / "cameras.json", cameras_dict(reg, image_size))
    n, t = int(np.sum(reg.status.registered)), len(reg.status.registered)
    if n == 0:
        return (f"transforms.json: not written, no camera of the {t} frames is registered (nerfstudio needs at least "
                "one; cameras.json says why each was rejected)")
    atomic_save_json(out / "transforms.json", transforms_dict(reg, image_size, image_paths))
    return f"transforms.json: the {n} registered frame(s) of {t}" + ("" if n == t else " (the others are listed "
                                                                      "under rejected_frames)")
