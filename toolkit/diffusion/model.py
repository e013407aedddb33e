"""The teacher network and how its conditioning is packed into input channels.

The teacher is a plain diffusers `UNet2DModel` whose input is the noisy image concatenated with its
conditions (channel order fixed by `CONDITIONING_CHANNELS`):

    x_t (3)  noisy image being denoised, [-1, 1] scaled by the noise schedule
    context (3)  the clean image with the face box zeroed (image * mask)
    mask (1)  1 = known pixel, 0 = pixel to generate
    keypoint heatmaps (7)  one Gaussian per FDF keypoint (COCO order), zero for invisible points
    keypoints_present (1)  constant plane: 1 = keypoints given, 0 = dropped (classifier-free guidance)

The "present" plane lets the network tell "keypoint condition dropped" (the unconditional branch of CFG)
from "every keypoint invisible", which zero heatmaps alone cannot. The model predicts what the preset's
noise["prediction_type"] says ("v_prediction" or "epsilon"; recorded in scheduler/ and toolkit.json).
The heatmaps are computed here, in torch, from normalized keypoints, both at training and at sampling time,
so the two can never disagree.
"""

import torch
from diffusers import UNet2DModel

from toolkit.keypoints import NAMES, NUM_KEYPOINTS

CONDITIONING_VERSION = 1
CONDITIONING_CHANNELS = (
    ("noisy_image", 3),
    ("context", 3),
    ("mask", 1),
    ("keypoint_heatmaps", NUM_KEYPOINTS),
    ("keypoints_present", 1),
)
IN_CHANNELS = sum(n for _, n in CONDITIONING_CHANNELS)


def conditioning_spec(preset: dict) -> dict:
    """What `toolkit.json` records about the inputs, so any reader can rebuild them without this code."""
    return {
        "version": CONDITIONING_VERSION,
        "in_channels": IN_CHANNELS,
        "channels": [{"name": name, "count": n} for name, n in CONDITIONING_CHANNELS],
        "image_range": [-1.0, 1.0],
        "context": "image * mask (face box zeroed)",
        "mask": "1 = known pixel, 0 = to generate",
        "keypoints": list(NAMES),
        "keypoint_heatmaps": {
            "kind": "gaussian",
            "sigma_px": float(preset["keypoint_sigma"]),
            "coords": "normalized [0,1], pixel (i,j) centre at ((j+0.5)/S, (i+0.5)/S); invisible -> all zero",
        },
        "null_condition": "keypoint heatmaps zero and keypoints_present = 0 (classifier-free guidance)",
        "prediction_type": preset["noise"].get("prediction_type", "epsilon"),
    }


def build_unet(preset: dict) -> UNet2DModel:
    """A freshly initialised UNet for `preset` (torch's global RNG decides the initial weights)."""
    return UNet2DModel(
        sample_size=preset["resolution"],
        in_channels=IN_CHANNELS,
        out_channels=3,
        **preset["unet"],
    )


def keypoint_heatmaps(keypoints: torch.Tensor, visible: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B,7,size,size) Gaussian heatmaps, peak 1, from (B,7,2) normalized keypoints and (B,7) visibility."""
    keypoints = keypoints.float()
    centres = (torch.arange(size, device=keypoints.device, dtype=torch.float32) + 0.5) / size
    # Distances in pixels, so sigma means the same thing at every resolution's pixel grid.
    dx = (centres[None, None, :] - keypoints[..., 0:1]) * size  # (B,7,W)
    dy = (centres[None, None, :] - keypoints[..., 1:2]) * size  # (B,7,H)
    g = torch.exp(-(dy[..., :, None] ** 2 + dx[..., None, :] ** 2) / (2.0 * sigma**2))
    finite = torch.isfinite(keypoints).all(dim=-1)
    keep = (visible.bool() & finite).to(g.dtype)
    return torch.nan_to_num(g, nan=0.0) * keep[..., None, None]


def condition_channels(
    images: torch.Tensor,
    masks: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    sigma: float,
    keypoints_present: torch.Tensor | None = None,
) -> torch.Tensor:
    """The 12 condition channels (context, mask, heatmaps, present) for a batch; x_t is prepended later.

    `keypoints_present` (B,) bool/float: False drops the keypoint condition (zero heatmaps, present=0).
    """
    b, _, s, _ = images.shape
    masks = masks.to(images.dtype)
    context = images * masks
    maps = keypoint_heatmaps(keypoints, visible, s, sigma).to(images.dtype)
    if keypoints_present is None:
        present = torch.ones(b, device=images.device, dtype=images.dtype)
    else:
        present = keypoints_present.to(device=images.device, dtype=images.dtype)
    maps = maps * present[:, None, None, None]
    present_plane = present[:, None, None, None].expand(b, 1, s, s)
    return torch.cat([context, masks, maps, present_plane], dim=1)


def null_condition(cond: torch.Tensor) -> torch.Tensor:
    """`cond` with the keypoint condition dropped (the unconditional branch of classifier-free guidance)."""
    out = cond.clone()
    out[:, 4:] = 0.0  # heatmaps and the present plane; context (0:3) and mask (3) stay
    return out
