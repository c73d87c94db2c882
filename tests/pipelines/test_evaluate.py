"""The evaluation library behind `fourdnex eval-quality` (fourdnex_jax/pipelines/evaluate.py): the truth scores as
the truth, a clip made of other clips' frames does not, the foreground is found only at the right dome radius."""

from __future__ import annotations

import numpy as np
import pytest

from fourdnex_jax.data import synthetic
from fourdnex_jax.data.annotations import ClipConfig, to_clip6d
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.pipelines import evaluate

T, H, W, DOME = 9, 32, 48, 12.0


@pytest.fixture(scope="module")
def clips():
    out = []
    for i in range(T):  # T scenes: a video can take each frame from another one
        clip_id, a, caption = synthetic.generate_clip("heldout", i, T, H, W, dome_radius=DOME)
        raw = RawClip(clip_id=clip_id, rgb=a["images"], c2w=a["cam_c2w"], K=a["intrinsics"], depth=a["depths"],
                      dynamic_mask=a["dynamic_mask"], caption=caption, source="synthetic")
        out.append(to_clip6d(raw, ClipConfig(num_frames=T, height=H, width=W)))
    return out


def test_truth_scores_as_truth_and_other_frames_do_not(clips):
    fg = evaluate.foreground_masks(clips[:2], DOME)
    assert all(f is not None and 0.2 < f.mean() < 0.95 for f in fg)
    truth = [evaluate.score(c, c.xyz.astype(np.float32), c.rgb, f) for c, f in zip(clips[:2], fg)]
    s = evaluate.summarize(truth)
    assert s["pointmap_err_mean"] == 0 and s["rgb_psnr"] > 100  # identical (the MSE is floored at 1e-12)
    assert s["fg_reproj_px_median"] < 0.1  # float16 storage of the clip's pointmap only
    assert s["scenes_consistent"] == 2 and s["rot_err_median_deg"] < 0.1
    moved = np.concatenate([clips[0].xyz[:1], clips[1].xyz[1:]]).astype(np.float32)  # frames 1.. of another scene
    assert evaluate.score(clips[0], moved, clips[0].rgb, fg[0])["fg_reproj_px"] > 2.0
    others = np.stack([clips[t].xyz[t] for t in range(T)]).astype(np.float32)  # frame t of scene t
    rgb = np.stack([clips[t].rgb[t] for t in range(T)])
    row = evaluate.score(clips[0], others, rgb, fg[0])
    assert not row["cameras"]["consistent"], row["cameras"]["scene_4d"]
    targets = evaluate.check_targets(evaluate.summarize([row]), evaluate.VAE_TARGETS)
    assert not targets["scenes_consistent"]["met"]


def test_foreground_needs_the_dome_radius_the_clips_were_made_with(clips):
    assert evaluate.foreground_masks(clips[:1], synthetic.DOME_RADIUS) == [None]


class _IdentityVAE:
    """Reconstructs exactly: the VAE milestone must then score it as the truth (colours included)."""

    class _Posterior:
        def __init__(self, mean):
            self.mean = mean

    def encode(self, video):
        return self._Posterior(video)

    def decode(self, latent):
        return latent


def test_an_exact_vae_scores_as_the_truth(clips):
    out = evaluate.evaluate_vae(_IdentityVAE(), clips[:2], DOME, log=lambda _: None)
    rec, truth = out["summary"]["vae_reconstruction"], out["summary"]["ground_truth"]
    assert rec["scenes_consistent"] == truth["scenes_consistent"] == 2
    assert rec["rgb_psnr"] > 40 and rec["pointmap_err_mean"] < 1e-5
