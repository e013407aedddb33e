"""Teacher presets: model size, resolution, noise schedule and training defaults, as plain data.

A preset is everything `toolkit train --preset NAME` needs to build the UNet and its training loop; the
resolved preset is copied into the run's `toolkit.json`, so an artifact never depends on this file changing.
Command-line flags (--batch-size, --lr, ...) override the `train` section.

The networks predict v = sqrt(abar) * eps - sqrt(1 - abar) * x0 (Salimans & Ho), not eps: with eps-prediction a
small model's clean-image estimate at high noise is the eps error amplified by sqrt(1-abar)/sqrt(abar) (x4.5
at t=900), which left coloured speckle in tiny32 samples; v keeps that error bounded at every noise level.
"""

import copy

PRESETS = {
    # What users train on FDF256 with GPUs: the DDPM CelebA-HQ-like layout, attention at 16x16 and 8x8.
    "fdf256": {
        "resolution": 256,
        "unet": {
            "block_out_channels": [128, 128, 256, 256, 512, 512],
            "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D",
                                 "AttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D",
                               "UpBlock2D", "UpBlock2D"],
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "attention_head_dim": 64,
        },
        "noise": {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "v_prediction"},
        "keypoint_sigma": 4.0,  # Gaussian heatmap sigma in pixels at this resolution
        "train": {"batch_size": 16, "lr": 1e-4, "warmup_steps": 1000, "max_steps": 200_000,
                  "ema_decay": 0.9999, "cfg_dropout": 0.1, "flip": True, "num_workers": 4,
                  "sample_every": 5000, "checkpoint_every": 2000},
    },
    # A mid-size model for a workstation or a quick GPU run.
    "small64": {
        "resolution": 64,
        "unet": {
            "block_out_channels": [64, 128, 128, 256],
            "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "attention_head_dim": 32,
        },
        "noise": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        "keypoint_sigma": 1.5,
        "train": {"batch_size": 32, "lr": 2e-4, "warmup_steps": 500, "max_steps": 50_000,
                  "ema_decay": 0.999, "cfg_dropout": 0.1, "flip": True, "num_workers": 2,
                  "sample_every": 2000, "checkpoint_every": 1000},
    },
    # CPU preset for tests and demos: a few hundred steps in minutes on 2 cores. No attention (slow on CPU).
    "tiny32": {
        "resolution": 32,
        "unet": {
            "block_out_channels": [16, 32, 32],
            "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
            "layers_per_block": 1,
            "norm_num_groups": 8,
        },
        "noise": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"},
        "keypoint_sigma": 1.0,
        "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 20, "max_steps": 300,
                  "ema_decay": 0.99, "cfg_dropout": 0.1, "flip": True, "num_workers": 0,
                  "sample_every": 0, "checkpoint_every": 100},
    },
}


def get_preset(name: str) -> dict:
    """A deep copy of preset `name` (callers may edit it); unknown names list the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    preset = copy.deepcopy(PRESETS[name])
    preset["name"] = name
    return preset
